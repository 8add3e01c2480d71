"""The OAuth 2.0 endpoints' decisions: the grants of `/token` (RFC 6749), revocation
(RFC 7009) and introspection (RFC 7662) of our access and refresh tokens.

Our access tokens are compact JWS (two dots) and refresh tokens are URL-safe random strings
(no dots), so the token's shape says what it is; `token_type_hint` is accepted and not needed,
as both RFCs allow.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import InvalidGrantError, InvalidScopeError, InvalidTokenError
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import roles as roles_repo
from idp.schemas.oauth import IntrospectionResponse, TokenResponse
from idp.services import authentication, refresh_tokens
from idp.services.keyring import KeySet
from idp.services.tokens import (
    issue_access_token,
    normalize_scope,
    select_audience,
    verify_own_access_token,
)

INACTIVE: Final = IntrospectionResponse(active=False)


async def password_grant(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    *,
    username: str,
    password: str,
    client_id: str,
    scope: str | None,
    now: datetime,
    database: Database,
    client_address: str,
    resources: list[str] | None = None,
) -> TokenResponse:
    """RFC 6749 section 4.3: check the password, start a refresh-token family (the login
    session), and issue an access token with the user's current roles.

    `database` gives the lockout counters their own unit of work; `client_address` keys them.
    `resources` (RFC 8707) choose the tokens' audience; the session keeps it.
    """
    granted_scope = normalize_scope(scope)
    audience = select_audience(settings, resources)
    user = await authentication.authenticate(
        database, session, settings, username, password, client_address=client_address, now=now
    )
    issued = await refresh_tokens.start_family(
        session,
        settings,
        user_id=user.id,
        client_id=client_id,
        scope=granted_scope,
        audience=audience,
        now=now,
    )
    return await _token_response(
        session,
        settings,
        keyset,
        user,
        client_id=client_id,
        scope=granted_scope,
        audience=audience,
        sid=str(issued.family.id),
        refresh_token=issued.token,
        now=now,
    )


async def refresh_grant(
    database: Database,
    settings: Settings,
    keyset: KeySet,
    *,
    refresh_token: str,
    client_id: str | None,
    scope: str | None,
    now: datetime,
    resources: list[str] | None = None,
) -> TokenResponse:
    """RFC 6749 section 6 with rotation: the token is consumed and replaced; the new access
    token carries the roles the user holds now. The family keeps its scope; a narrower
    `scope` narrows only this access token, a wider one is `invalid_scope`. The family keeps
    its audience too: `resources` may only narrow it (else `invalid_target`), and a family
    whose audience is no longer configured ends (`invalid_grant`).

    The rotation is a unit of work of its own; a reused token's family is revoked in another
    one after it rolled back, so the revocation stands although the grant fails.
    """
    try:
        async with database.session() as session:
            return await _rotate(
                session, settings, keyset, refresh_token, client_id, scope, now, resources
            )
    except refresh_tokens.ReusedRefreshTokenError as reused:
        await refresh_tokens.end_reused_family(database, reused, now)
        raise InvalidGrantError() from None


async def _rotate(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    refresh_token: str,
    client_id: str | None,
    scope: str | None,
    now: datetime,
    resources: list[str] | None,
) -> TokenResponse:
    requested = normalize_scope(scope)
    # Without a scope or resource to check, nothing below refuses a rotation that succeeded
    # (the rotation itself refuses inactive users and unconfigured audiences), so it may commit
    # by itself.
    issued = await refresh_tokens.rotate(
        session,
        settings,
        refresh_token,
        client_id=client_id,
        now=now,
        final=requested is None and not resources,
    )
    family = issued.family
    if requested is not None and not set(requested.split()) <= set((family.scope or "").split()):
        raise InvalidScopeError()  # rolls back: the presented token stays usable
    granted = family.audience or list(settings.audience)
    if any(value not in settings.own_audiences for value in granted):
        raise InvalidGrantError()
    audience = select_audience(settings, resources, within=granted)
    user = issued.user  # read with its roles in the rotation's statement
    if not user.is_active:
        raise InvalidGrantError()
    granted_scope = requested or family.scope
    access = issue_access_token(
        keyset,
        settings,
        subject=str(user.id),
        username=user.username,
        email=user.email,
        roles=issued.roles,
        client_id=family.client_id,
        scope=granted_scope,
        sid=str(family.id),
        audience=audience,
        now=now,
    )
    return TokenResponse(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=issued.token,
        scope=granted_scope,
    )


async def _token_response(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    user: User,
    *,
    client_id: str,
    scope: str | None,
    sid: str,
    refresh_token: str,
    now: datetime,
    audience: list[str],
    roles: list[str] | None = None,
) -> TokenResponse:
    """The access token with the user's current roles (looked up unless already known)."""
    if roles is None:
        roles = await roles_repo.role_names_of(session, user.id)
    access = issue_access_token(
        keyset,
        settings,
        subject=str(user.id),
        username=user.username,
        email=user.email,
        roles=roles,
        client_id=client_id,
        scope=scope,
        sid=sid,
        audience=audience,
        now=now,
    )
    return TokenResponse(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        scope=scope,
    )


# Revocation and introspection ------------------------------------------------------------


def _is_jws(token: str) -> bool:
    return token.count(".") == 2


def _verified(
    settings: Settings, keyset: KeySet, token: str, now: datetime
) -> dict[str, Any] | None:
    try:
        return verify_own_access_token(keyset, settings, token, now=now)
    except InvalidTokenError:
        return None


async def introspect(
    session: AsyncSession, settings: Settings, keyset: KeySet, token: str, *, now: datetime
) -> IntrospectionResponse:
    """Active only if the token verifies (or is a live refresh token), its user is active and
    its session has not ended; anything else is `{"active": false}` with no reason given."""
    if _is_jws(token):
        return await _introspect_access_token(session, settings, keyset, token, now)
    found = await refresh_tokens.describe(session, token, now=now)
    if found is None:
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
    session: AsyncSession, settings: Settings, keyset: KeySet, token: str, now: datetime
) -> IntrospectionResponse:
    claims = _verified(settings, keyset, token, now)
    if claims is None:
        return INACTIVE
    try:
        user = await authentication.bearer_user(session, claims)
    except InvalidTokenError:
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
        sub=str(user.id),
        username=user.username,
        client_id=text("client_id"),
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
    session: AsyncSession, settings: Settings, keyset: KeySet, token: str, *, now: datetime
) -> None:
    """End the session the token belongs to; unknown or invalid tokens are ignored (RFC 7009).

    A refresh token ends its family. An access token of ours ends the family named by its
    `sid` (RFC 7009 section 2.1 allows this): the identity service and introspection treat
    it as inactive at once; services that verify it locally accept it until its short `exp`.
    """
    if not _is_jws(token):
        await refresh_tokens.revoke(session, token, now=now)
        return
    claims = _verified(settings, keyset, token, now)
    if claims is None or not isinstance(claims.get("sid"), str):
        return
    try:
        family_id = uuid.UUID(claims["sid"])
    except ValueError:
        return
    await refresh_tokens.revoke_family(session, family_id, now=now)
