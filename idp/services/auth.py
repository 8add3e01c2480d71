"""Authentication: passwords (the same answer, in similar time, whatever went wrong) and the
user a verified bearer token speaks for."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import InvalidGrantError, InvalidTokenError
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import users as users_repo
from idp.services import passwords, refresh_tokens

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _dummy_hash(rounds: int) -> str:
    """A hash to check against when there is no real one, so timing does not tell."""
    return passwords.hash_password_sync("idp-dummy-password-for-timing", rounds)


async def dummy_check(settings: Settings, password: str) -> None:
    dummy = await asyncio.to_thread(_dummy_hash, settings.bcrypt_rounds)
    await passwords.verify_password(password, dummy)


async def authenticate(
    session: AsyncSession, settings: Settings, username: str, password: str
) -> User:
    """The active user with this username and password, else `InvalidGrantError`.

    Unknown user, user without a password, disabled user and wrong password all cost one
    bcrypt check and end in the same error. A hash made with a lower cost than configured
    is replaced on success.
    """
    user = await users_repo.get_by_username(session, username)
    if user is None or user.password_hash is None:
        await dummy_check(settings, password)
        raise InvalidGrantError()
    if not await passwords.verify_password(password, user.password_hash):
        raise InvalidGrantError()
    if not user.is_active:
        raise InvalidGrantError()
    if passwords.needs_rehash(user.password_hash, settings.bcrypt_rounds):
        user.password_hash = await passwords.hash_password(password, settings.bcrypt_rounds)
        logger.info(
            "password hash upgraded to cost %d",
            settings.bcrypt_rounds,
            extra={"user_id": str(user.id)},
        )
    return user


async def bearer_user(session: AsyncSession, claims: Mapping[str, Any]) -> User:
    """The user a verified access token speaks for, as the database has them now.

    Refused (`InvalidTokenError`, 401) when the user is gone or disabled, or when the token's
    session (`sid`) has ended: logout, a password change or reuse detection take effect at
    once on the identity service itself, while other services trust the token until `exp`.
    """
    try:
        user_id = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"]) if "sid" in claims else None
    except (KeyError, ValueError, TypeError, AttributeError):
        raise InvalidTokenError() from None
    user = await users_repo.get(session, user_id)
    if user is None or not user.is_active:
        raise InvalidTokenError("the token's user is not active")
    if session_id is not None and await refresh_tokens.family_is_revoked(session, session_id):
        raise InvalidTokenError("the token's session has ended")
    return user
