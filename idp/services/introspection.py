"""Introspection (RFC 7662) and revocation (RFC 7009) of our access and refresh tokens.

Our access tokens are compact JWS (two dots) and refresh tokens are URL-safe random strings
(no dots), so the token's shape says what it is; `token_type_hint` is accepted and not needed,
as both RFCs allow.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import InvalidTokenError
from idp.configuration.settings import Settings
from idp.schemas.oauth import IntrospectionResponse
from idp.services import auth, refresh_tokens
from idp.services.keyring import KeySet
from idp.services.tokens import verify_own_access_token

INACTIVE: Final = IntrospectionResponse(active=False)


def _is_jws(token: str) -> bool:
    return token.count(".") == 2


def _verified(
    settings: Settings, keyset: KeySet, token: str, now: datetime
) -> dict[str, Any] | None:
    try:
        return verify_own_access_token(keyset, settings, token, now=now.timestamp())
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
        user = await auth.bearer_user(session, claims)
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
