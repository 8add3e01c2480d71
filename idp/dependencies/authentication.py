"""The caller, from the bearer token: verified with our own keys, then loaded from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from idp.configuration.exceptions import AuthenticationError, InvalidTokenError
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import SessionDep, SettingsDep
from idp.models import User
from idp.services import authentication
from idp.services.keyring import KeyRing, KeySet
from idp.services.tokens import has_audience, verify_own_access_token

# Declares the password flow in OpenAPI, so Swagger UI's Authorize button logs in at /token.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


async def get_keyset(request: Request) -> KeySet:
    keyring: KeyRing = request.app.state.keyring
    return keyring.current


KeySetDep = Annotated[KeySet, Depends(get_keyset)]


async def get_token_claims(
    token: Annotated[str | None, Depends(oauth2_scheme)],
    keyset: KeySetDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> dict[str, Any]:
    if not token:
        raise AuthenticationError()
    return verify_own_access_token(keyset, settings, token, now=clock.now())


TokenClaims = Annotated[dict[str, Any], Depends(get_token_claims)]


async def require_admin_audience(claims: TokenClaims, settings: SettingsDep) -> None:
    """401 unless the token was issued for idp's own admin API (`aud` holds the admin
    audience): a token a service received for itself cannot be replayed at /admin."""
    if not has_audience(claims, settings.admin_token_audience):
        raise InvalidTokenError(
            "this token is not for the admin API: request it from /token with "
            f"resource={settings.admin_token_audience}"
        )


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    claims: dict[str, Any]

    @property
    def sid(self) -> uuid.UUID | None:
        """The token's refresh-token family (`sid`, already checked to be a UUID), if any."""
        sid = self.claims.get("sid")
        return uuid.UUID(sid) if isinstance(sid, str) else None


async def get_caller(claims: TokenClaims, session: SessionDep) -> Caller:
    """The token's user as the database has it now: a disabled or deleted user, or a token
    whose session has ended, is refused."""
    return Caller(user=await authentication.bearer_user(session, claims), claims=claims)


CallerDep = Annotated[Caller, Depends(get_caller)]
