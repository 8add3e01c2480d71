"""Grants of the token endpoint: who gets which tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import InvalidGrantError, InvalidScopeError
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import roles as roles_repo
from idp.repository import users as users_repo
from idp.schemas.oauth import TokenResponse
from idp.services import auth, refresh_tokens
from idp.services.keyring import KeySet
from idp.services.tokens import issue_access_token, normalize_scope


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
) -> TokenResponse:
    """RFC 6749 section 4.3: check the password, start a refresh-token family (the login
    session), and issue an access token with the user's current roles.

    `database` gives the lockout counters their own unit of work; `client_address` keys them.
    """
    granted_scope = normalize_scope(scope)
    user = await auth.authenticate(
        database, session, settings, username, password, client_address=client_address, now=now
    )
    issued = await refresh_tokens.start_family(
        session, settings, user_id=user.id, client_id=client_id, scope=granted_scope, now=now
    )
    return await _token_response(
        session,
        settings,
        keyset,
        user,
        client_id=client_id,
        scope=granted_scope,
        session_id=str(issued.family.id),
        refresh_token=issued.token,
        now=now,
    )


async def refresh_grant(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    *,
    refresh_token: str,
    client_id: str | None,
    scope: str | None,
    now: datetime,
) -> TokenResponse:
    """RFC 6749 section 6 with rotation: the token is consumed and replaced; the new access
    token carries the roles the user holds now. The family keeps its scope; a narrower
    `scope` narrows only this access token, a wider one is `invalid_scope`."""
    requested = normalize_scope(scope)
    issued = await refresh_tokens.rotate(
        session, settings, refresh_token, client_id=client_id, now=now
    )
    family = issued.family
    if requested is not None and not set(requested.split()) <= set((family.scope or "").split()):
        raise InvalidScopeError()  # rolls back: the presented token stays usable
    found = await users_repo.get_with_role_names(session, family.user_id)
    if found is None or not found[0].is_active:
        raise InvalidGrantError()
    user, roles = found
    return await _token_response(
        session,
        settings,
        keyset,
        user,
        roles=roles,
        client_id=family.client_id,
        scope=requested or family.scope,
        session_id=str(family.id),
        refresh_token=issued.token,
        now=now,
    )


async def _token_response(
    session: AsyncSession,
    settings: Settings,
    keyset: KeySet,
    user: User,
    *,
    client_id: str,
    scope: str | None,
    session_id: str,
    refresh_token: str,
    now: datetime,
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
        session_id=session_id,
        now=int(now.timestamp()),
    )
    return TokenResponse(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        scope=scope,
    )
