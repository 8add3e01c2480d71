"""Grants of the token endpoint: who gets which tokens."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.repository import roles as roles_repo
from idp.schemas.oauth import TokenResponse
from idp.services import auth
from idp.services.keys import KeySet
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
    database: Database,
    client_address: str,
) -> TokenResponse:
    """RFC 6749 section 4.3: check the password, then issue an access token with current roles.

    `database` gives the lockout counters their own unit of work; `client_address` keys them.
    """
    granted_scope = normalize_scope(scope)
    user = await auth.authenticate(
        database, session, settings, username, password, client_address=client_address
    )
    roles = await roles_repo.role_names_of(session, user.id)
    issued = issue_access_token(
        keyset,
        settings,
        subject=str(user.id),
        username=user.username,
        email=user.email,
        roles=roles,
        client_id=client_id,
        scope=granted_scope,
    )
    return TokenResponse(
        access_token=issued.token, expires_in=issued.expires_in, scope=granted_scope
    )
