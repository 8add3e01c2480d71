"""The caller, from the bearer token: verified with our own keys, then loaded from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from idp.configuration.exceptions import AuthenticationError, InvalidTokenError
from idp.dependencies.database import SessionDep, SettingsDep
from idp.models import User
from idp.repository import users as users_repo
from idp.services.keys import KeyRing, KeySet
from idp.services.tokens import verify_access_token

# Declares the password flow in OpenAPI, so Swagger UI's Authorize button logs in at /token.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


def get_keyset(request: Request) -> KeySet:
    keyring: KeyRing = request.app.state.keyring
    return keyring.current


KeySetDep = Annotated[KeySet, Depends(get_keyset)]


async def get_token_claims(
    token: Annotated[str | None, Depends(oauth2_scheme)],
    keyset: KeySetDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    if not token:
        raise AuthenticationError()
    return verify_access_token(
        keyset,
        token,
        issuer=settings.issuer,
        audiences=settings.audience,
        leeway=settings.clock_leeway,
    )


TokenClaims = Annotated[dict[str, Any], Depends(get_token_claims)]


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    claims: dict[str, Any]


async def get_caller(claims: TokenClaims, session: SessionDep) -> Caller:
    """The token's user as the database has it now: a disabled or deleted user is refused."""
    try:
        user_id = uuid.UUID(claims["sub"])
    except (ValueError, TypeError):
        raise InvalidTokenError() from None
    user = await users_repo.get(session, user_id)
    if user is None or not user.is_active:
        raise InvalidTokenError("the token's user is not active")
    return Caller(user=user, claims=claims)


CallerDep = Annotated[Caller, Depends(get_caller)]
