"""The OAuth 2.0 endpoints' decisions: the grants of `/token` (RFC 6749), revocation
(RFC 7009) and introspection (RFC 7662) of our access and refresh tokens.

Our access tokens are compact JWS (two dots) and refresh tokens are URL-safe random strings
(no dots), so the token's shape says what it is; `token_type_hint` is accepted and not needed,
as both RFCs allow.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration import metrics
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    InvalidGrantError,
    InvalidScopeError,
    InvalidTokenError,
    UnauthorizedClientError,
)
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import roles as roles_repo
from idp.repository import users as users_repo
from idp.repository.refresh_tokens import TokenHolder
from idp.schemas.oauth import IntrospectionResponse, TokenResponse
from idp.services import authentication, refresh_tokens
from idp.services import oidc as oidc_service
from idp.services.clients import (
    CLIENT_SUBJECT_PREFIX,
    RegisteredClient,
    audiences_still_allowed,
    select_audience,
    select_scope,
)
from idp.services.keyring import KeySet
from idp.services.tokens import issue_access_token, normalize_scope, verify_own_access_token

INACTIVE: Final = IntrospectionResponse(active=False)

# Finds the client a request named only through its refresh token: a public one, else
# `invalid_client` (ClientAuthenticator.public_client).
ClientLookup = Callable[[str], Awaitable[RegisteredClient]]


def ensure_grant_allowed(client: RegisteredClient, grant_type: str) -> None:
    """`unauthorized_client` unless the client is registered for `grant_type`."""
    if grant_type not in client.grant_types:
        raise UnauthorizedClientError(f"this client may not use the {grant_type} grant")


async def password_grant(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    client: RegisteredClient,
    *,
    username: str,
    password: str,
    scope: str | None,
    now: datetime,
    database: Database,
    client_address: str,
    resources: list[str] | None = None,
) -> TokenResponse:
    """RFC 6749 section 4.3, for clients that opted in: check the password, start a
    refresh-token family (the login session), and issue an access token with the user's
    current roles.

    `database` gives the lockout counters their own unit of work; `client_address` keys them.
    `resources` (RFC 8707) choose the tokens' audience within the client's; the session
    keeps it, and its scope, which must be within the client's.
    """
    ensure_grant_allowed(client, "password")
    granted_scope = select_scope(client, scope)
    audience = select_audience(settings, client, resources)
    user = await authentication.authenticate(
        database, session, settings, username, password, client_address=client_address, now=now
    )
    issued = await refresh_tokens.start_family(
        session,
        settings,
        user_id=user.id,
        client_id=client.id,
        scope=granted_scope,
        audience=audience,
        now=now,
        ttl=client.refresh_ttl(settings),
    )
    return await _token_response(
        session,
        settings,
        keyset,
        user,
        client=client,
        grant="password",
        scope=granted_scope,
        audience=audience,
        sid=str(issued.family.id),
        refresh_token=issued.token,
        now=now,
    )


def client_credentials_grant(
    settings: Settings,
    keyset: KeySet,
    client: RegisteredClient,
    *,
    scope: str | None,
    now: datetime,
    resources: list[str] | None = None,
) -> TokenResponse:
    """RFC 6749 section 4.4: a token for the authenticated confidential client itself, `sub`
    `client:<id>` (RFC 9068 section 2.2), carrying the client's roles; no refresh token.
    Everything it needs is in the client's snapshot: no database round trip."""
    if not client.confidential:
        raise UnauthorizedClientError("client_credentials needs a confidential client")
    ensure_grant_allowed(client, "client_credentials")
    granted_scope = select_scope(client, scope)
    audience = select_audience(settings, client, resources)
    access = issue_access_token(
        keyset,
        settings,
        subject=client.subject,
        username=None,
        email=None,
        roles=client.roles,
        client_id=client.id,
        scope=granted_scope,
        sid=None,
        audience=audience,
        ttl=client.access_ttl(settings),
        now=now,
    )
    metrics.count_issued("client_credentials", client.id)
    return TokenResponse(
        access_token=access.token, expires_in=access.expires_in, scope=granted_scope
    )


async def refresh_grant(
    database: Database,
    settings: Settings,
    keyset: KeySet,
    client: RegisteredClient | None,
    *,
    refresh_token: str,
    scope: str | None,
    now: datetime,
    resources: list[str] | None = None,
    lookup: ClientLookup,
) -> TokenResponse:
    """RFC 6749 section 6 with rotation: the token is consumed and replaced; the new access
    token carries the roles the user holds now.

    A refresh token is bound to its client: an authenticated `client` must be the one it was
    issued to; a request naming no client is for the token's own client, which must then be
    public (`lookup`). The family keeps its scope: a narrower `scope` narrows only this access
    token, a wider one is `invalid_scope`. The family keeps its audience too: `resources` may
    only narrow it (else `invalid_target`), and a family whose audience the client may no
    longer have ends (`invalid_grant`).

    The rotation is a unit of work of its own; a reused token's family is revoked in another
    one after it rolled back, so the revocation stands although the grant fails.
    """
    if client is not None:
        ensure_grant_allowed(client, "refresh_token")
    try:
        async with database.session() as session:
            return await _rotate(
                session, settings, keyset, client, refresh_token, scope, now, resources, lookup
            )
    except refresh_tokens.ReusedRefreshTokenError as reused:
        await refresh_tokens.end_reused_family(database, reused, now)
        raise InvalidGrantError() from None


async def _rotate(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    client: RegisteredClient | None,
    refresh_token: str,
    scope: str | None,
    now: datetime,
    resources: list[str] | None,
    lookup: ClientLookup,
) -> TokenResponse:
    requested = normalize_scope(scope)
    # An authenticated client asking for no narrower scope or audience: the rotation's own
    # statement checks all the rest (the client's audiences, an active user), so nothing below
    # refuses a rotation that succeeded and it may commit by itself.
    issued = await refresh_tokens.rotate(
        session,
        settings,
        refresh_token,
        client_id=client.id if client is not None else None,
        allowed_audiences=client.requestable_audiences(settings) if client is not None else None,
        now=now,
        final=client is not None and requested is None and not resources,
    )
    family = issued.family
    if client is None:  # rolls back if refused: the token stays usable by its client
        client = await lookup(family.client_id)
        ensure_grant_allowed(client, "refresh_token")
    # The session's scope, less what the client may no longer have.
    granted = [token for token in (family.scope or "").split() if token in client.scopes]
    if requested is not None and not set(requested.split()) <= set(granted):
        raise InvalidScopeError()  # rolls back: the presented token stays usable
    session_audience = family.audience or list(settings.audience)
    if not audiences_still_allowed(settings, client, session_audience):
        raise InvalidGrantError()
    audience = select_audience(settings, client, resources, within=session_audience)
    user = issued.user  # read with its roles in the rotation's statement
    if not user.is_active:
        raise InvalidGrantError()
    return await _token_response(
        session,
        settings,
        keyset,
        user,
        roles=issued.roles,
        client=client,
        grant="refresh_token",
        scope=requested or (" ".join(granted) or None),
        audience=audience,
        sid=str(family.id),
        refresh_token=issued.token,
        now=now,
        oidc=None
        if family.auth_time is None
        else OidcContext(
            auth_time=family.auth_time,
            sid=str(family.browser_session_id) if family.browser_session_id else None,
        ),
    )


async def _token_response(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    user: User | TokenHolder,
    *,
    client: RegisteredClient,
    grant: str,
    scope: str | None,
    sid: str,
    refresh_token: str | None,
    now: datetime,
    audience: list[str],
    roles: list[str] | None = None,
    oidc: OidcContext | None = None,
) -> TokenResponse:
    """The access token with the user's current roles (looked up unless already known), and
    an ID token when the session is an OpenID Connect one (`oidc`) with the openid scope."""
    if roles is None:
        roles = await roles_repo.role_names_of(session, user.id)
    access = issue_access_token(
        keyset,
        settings,
        subject=str(user.id),
        username=user.username,
        email=user.email,
        roles=roles,
        client_id=client.id,
        scope=scope,
        sid=sid,
        audience=audience,
        ttl=client.access_ttl(settings),
        now=now,
    )
    metrics.count_issued(grant, client.id)
    id_token = None
    if oidc is not None and "openid" in (scope or "").split():
        id_token = oidc_service.issue_id_token(
            keyset,
            settings,
            user,
            client=client,
            scope=scope,
            auth_time=oidc.auth_time,
            sid=oidc.sid,
            nonce=oidc.nonce,
            access_token=access.token,
            now=now,
        )
    return TokenResponse(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        scope=scope,
        id_token=id_token,
    )


@dataclass(frozen=True, slots=True)
class OidcContext:
    """What an ID token needs beyond the access token: the browser session's."""

    auth_time: datetime
    sid: str | None
    nonce: str | None = None


async def code_grant(
    database: Database,
    settings: Settings,
    keyset: KeySet,
    client: RegisteredClient,
    *,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    now: datetime,
) -> TokenResponse:
    """RFC 6749 section 4.1.3 with PKCE: redeem the code, start a refresh-token family tied to
    the browser session, and issue the tokens (an ID token with the openid scope). A code
    presented again is `invalid_grant`, and the session its first use started ends."""
    ensure_grant_allowed(client, "authorization_code")
    try:
        async with database.session() as session:
            grant = await oidc_service.redeem_code(
                session,
                client,
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
                now=now,
            )
            found = await users_repo.get_with_role_names(session, grant.user_id)
            if found is None or not found[0].is_active:
                raise InvalidGrantError()
            user, roles = found
            issued = await refresh_tokens.start_family(
                session,
                settings,
                user_id=user.id,
                client_id=client.id,
                scope=grant.scope,
                audience=grant.audience,
                now=now,
                ttl=client.refresh_ttl(settings),
                browser_session_id=grant.browser_session_id,
                auth_time=grant.auth_time,
            )
            await oidc_service.link_family(session, grant, issued.family.id)
            return await _token_response(
                session,
                settings,
                keyset,
                user,
                roles=roles,
                client=client,
                grant="authorization_code",
                scope=grant.scope,
                audience=grant.audience,
                sid=str(issued.family.id),
                refresh_token=issued.token if "refresh_token" in client.grant_types else None,
                now=now,
                oidc=OidcContext(
                    auth_time=grant.auth_time,
                    sid=str(grant.browser_session_id),
                    nonce=grant.nonce,
                ),
            )
    except oidc_service.ReusedCodeError as reused:
        if reused.family_id is not None:
            async with database.session() as session:
                await refresh_tokens.revoke_family(session, reused.family_id, now=now)
        raise InvalidGrantError() from None


# Revocation and introspection ------------------------------------------------------------


def _is_jws(token: str) -> bool:
    return token.count(".") == 2


def _verified(
    settings: Settings, keyset: KeySet, token: str, now: datetime
) -> dict[str, Any] | None:
    """The claims of an access token of ours, whichever audience it is for; else None."""
    try:
        return verify_own_access_token(keyset, settings, token, now=now, any_audience=True)
    except InvalidTokenError:
        return None


# The registered, enabled client of an id, else None (ClientAuthenticator.client).
EnabledClient = Callable[[str], Awaitable[RegisteredClient | None]]


async def introspect(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    token: str,
    *,
    now: datetime,
    enabled_client: EnabledClient,
) -> IntrospectionResponse:
    """Active only if the token verifies (or is a live refresh token), its user (or, for a
    client's own token, its client) is active and its session has not ended; anything else
    is `{"active": false}` with no reason given."""
    if _is_jws(token):
        return await _introspect_access_token(session, settings, keyset, token, now, enabled_client)
    found = await refresh_tokens.describe(session, token, now=now)
    if found is None or await enabled_client(found.client_id) is None:
        return INACTIVE
    return IntrospectionResponse(
        active=True,
        token_type="refresh_token",  # noqa: S106 - the RFC 7662 token type, not a secret
        client_id=found.client_id,
        username=found.username,
        sub=str(found.user_id),
        scope=found.scope,
        exp=int(found.expires_at.timestamp()),
        iat=int(found.issued_at.timestamp()),
        iss=settings.issuer,
    )


async def _introspect_access_token(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    token: str,
    now: datetime,
    enabled_client: EnabledClient,
) -> IntrospectionResponse:
    claims = _verified(settings, keyset, token, now)
    if claims is None:
        return INACTIVE
    subject = claims.get("sub")
    username = None
    if isinstance(subject, str) and subject.startswith(CLIENT_SUBJECT_PREFIX):
        if claims.get("client_id") != subject.removeprefix(CLIENT_SUBJECT_PREFIX):
            return INACTIVE
    else:
        try:
            user = await authentication.bearer_user(session, claims)
        except InvalidTokenError:
            return INACTIVE
        username = user.username
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or await enabled_client(client_id) is None:
        return INACTIVE

    def text(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) else None

    def number(name: str) -> int | None:
        value = claims.get(name)
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    return IntrospectionResponse(
        active=True,
        token_type="access_token",  # noqa: S106 - the RFC 7662 token type, not a secret
        sub=text("sub"),
        username=username,
        client_id=client_id,
        scope=text("scope"),
        aud=_audience(claims.get("aud")),
        iss=text("iss"),
        exp=number("exp"),
        iat=number("iat"),
        nbf=number("nbf"),
        jti=text("jti"),
    )


def _audience(aud: object) -> str | list[str] | None:
    if isinstance(aud, str):
        return aud
    if isinstance(aud, list):
        return [item for item in aud if isinstance(item, str)]
    return None


async def revoke(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    token: str,
    *,
    client: RegisteredClient,
    now: datetime,
) -> None:
    """End the session the token belongs to; unknown or invalid tokens are ignored (RFC 7009).
    A token issued to another client is `unauthorized_client` (RFC 7009 section 2.1).

    A refresh token ends its family. An access token of ours ends the family named by its
    `sid` (RFC 7009 section 2.1 allows this): the identity service and introspection treat
    it as inactive at once; services that verify it locally accept it until its short `exp`.
    A client's own token has no session: it lives until its `exp` (disable the client to
    make introspection refuse it).
    """
    if not _is_jws(token):
        await refresh_tokens.revoke(session, token, client_id=client.id, now=now)
        return
    claims = _verified(settings, keyset, token, now)
    if claims is None:
        return
    if claims.get("client_id") != client.id:
        raise UnauthorizedClientError("the token was issued to another client")
    if not isinstance(claims.get("sid"), str):
        return
    try:
        family_id = uuid.UUID(claims["sid"])
    except ValueError:
        return
    await refresh_tokens.revoke_family(session, family_id, now=now)
