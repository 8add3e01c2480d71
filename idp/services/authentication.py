"""Authentication: passwords (the same answer, in similar time, whatever went wrong) and the
user a verified bearer token speaks for."""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.constants import BCRYPT_MAX_BYTES
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidTokenError,
    PermissionDeniedError,
)
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import users as users_repo
from idp.services import audit, lockout, passwords, refresh_tokens
from idp.services.permissions import Actor

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _dummy_hash(rounds: int) -> str:
    """A hash to check against when there is no real one, so timing does not tell."""
    return passwords.hash_password_sync("idp-dummy-password-for-timing", rounds)


async def dummy_check(settings: Settings, password: str) -> None:
    dummy = await asyncio.to_thread(_dummy_hash, settings.bcrypt_rounds)
    await passwords.verify_password(password, dummy)


async def authenticate(
    database: Database,
    session: AsyncSession,
    settings: Settings,
    username: str,
    password: str,
    *,
    client_address: str,
    now: datetime,
) -> User:
    """The active user with this username and password, else `InvalidGrantError`.

    The attempt is counted (and may be refused by a lock) before any bcrypt work. Unknown
    user, user without a password, locked, disabled and wrong password all cost one bcrypt
    check and end in the same error. A hash made with a lower cost than configured is
    replaced on success. A password no account can have (over bcrypt's 72 bytes, or with
    NUL) is `InvalidRequestError` before any lookup: no bcrypt check would run for it, so
    the counter writes alone would tell an existing or locked account from an unknown one.
    """
    if not passwords.is_checkable(password):
        raise InvalidRequestError(
            f"the password is longer than {BCRYPT_MAX_BYTES} bytes in UTF-8 or contains NUL"
        )
    user = await _authenticated(
        database, session, settings, username, password, client_address, now
    )
    if user.password_hash and passwords.needs_rehash(user.password_hash, settings.bcrypt_rounds):
        user.password_hash = await passwords.hash_password(password, settings.bcrypt_rounds)
        logger.info(
            "password hash upgraded to cost %d",
            settings.bcrypt_rounds,
            extra={"user_id": str(user.id)},
        )
    return user


async def _authenticated(
    database: Database,
    session: AsyncSession,
    settings: Settings,
    username: str,
    password: str,
    client_address: str,
    now: datetime,
) -> User:
    # One attempt at a time per account in this process: parallel logins of one account (a
    # burst of correct ones included) queue here instead of all reserving attempts at once and
    # running past the lockout threshold. Across replicas the database counters decide.
    async with _account_lock(username):
        attempt = await lockout.reserve_attempt(database, settings, username, client_address, now)
        if attempt.allowed and attempt.password_hash is not None:
            async with lockout.settled(database, settings, attempt, client_address, now):
                return await _checked_user(
                    session, attempt, attempt.password_hash, password, client_address
                )
    # Nothing to check (unknown user, locked, no password): the dummy check runs after the
    # account lock is released, so a flood of refused attempts never queues the owner's login.
    await dummy_check(settings, password)
    await lockout.record_failure(database, attempt, client_address)
    if attempt.locked:
        reason = "locked"
    else:
        reason = "unknown user" if attempt.user_id is None else "no password set"
    _refused(reason, attempt, client_address)
    raise InvalidGrantError()


_ACCOUNT_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _account_lock(username: str) -> asyncio.Lock:
    key = username.lower()
    lock = _ACCOUNT_LOCKS.get(key)
    if lock is None:
        lock = _ACCOUNT_LOCKS[key] = asyncio.Lock()
    return lock


async def _checked_user(
    session: AsyncSession,
    attempt: lockout.Attempt,
    password_hash: str,
    password: str,
    client_address: str,
) -> User:
    """The attempt's user when the password matches `password_hash` (the attempt's) and the
    account is usable, else `InvalidGrantError` after that one bcrypt check."""
    user: User | None = None
    if not await passwords.verify_password(password, password_hash):
        reason = "wrong password"
    elif not attempt.is_active:
        reason = "account disabled"
    else:
        user = await _unchanged_user(session, attempt)
        reason = "account changed during login"
    if user is None:
        _refused(reason, attempt, client_address)
        raise InvalidGrantError()  # the locks this attempt started stand
    return user


async def confirm_password(
    database: Database,
    settings: Settings,
    user: User,
    password: str,
    *,
    client_address: str,
    now: datetime,
) -> None:
    """A signed-in user proves they know their password (to change it), else
    `PermissionDeniedError`.

    A stolen access token must not allow unlimited guessing: the check counts in the login
    lockout (per account and address), a locked counter refuses it unchecked, and every
    refusal is audited in a unit of work of its own (the request's rolls back with the 403).
    """
    attempt = await lockout.reserve_attempt(database, settings, user.username, client_address, now)
    reason: str | None = None
    try:
        if not attempt.allowed or attempt.user_id != user.id:
            reason = "locked"
            raise PermissionDeniedError("too many wrong passwords; try again later")
        async with lockout.settled(database, settings, attempt, client_address, now):
            if attempt.password_hash is None:
                await dummy_check(settings, password)
            if attempt.password_hash is None or not await passwords.verify_password(
                password, attempt.password_hash
            ):
                reason = "wrong password"
                raise PermissionDeniedError("the current password is wrong")
    except PermissionDeniedError:
        async with database.session() as session:
            await audit.record(
                session,
                Actor(user_id=user.id, username=user.username, address=client_address),
                "user.password_change_failed",
                target_type="user",
                target_id=str(user.id),
                details={"username": user.username, "reason": reason},
            )
        raise


async def bearer_user(session: AsyncSession, claims: Mapping[str, Any]) -> User:
    """The user a verified access token speaks for, as the database has them now.

    Refused (`InvalidTokenError`, 401) when the user is gone or disabled, or when the token's
    session (`sid`) has ended: logout, a password change or reuse detection take effect at
    once on the identity service itself, while other services trust the token until `exp`.
    """
    try:
        user_id = uuid.UUID(claims["sub"])
        sid = uuid.UUID(claims["sid"]) if "sid" in claims else None
    except (KeyError, ValueError, TypeError, AttributeError):
        raise InvalidTokenError() from None
    user = await users_repo.get(session, user_id)
    if user is None or not user.is_active:
        raise InvalidTokenError("the token's user is not active")
    if sid is not None and await refresh_tokens.family_is_revoked(session, sid):
        raise InvalidTokenError("the token's session has ended")
    return user


async def _unchanged_user(session: AsyncSession, attempt: lockout.Attempt) -> User | None:
    """The checked user in the request's database session; None when it was deleted,
    disabled or given a new password between the count and the check."""
    if attempt.user_id is None:
        return None
    user = await users_repo.get(session, attempt.user_id)
    if user is None or not user.is_active or user.password_hash != attempt.password_hash:
        return None
    return user


def _refused(reason: str, attempt: lockout.Attempt, client_address: str) -> None:
    """One line per refused login: the reason stays in the log, the client sees one answer."""
    logger.info(
        "login refused: %s",
        reason,
        extra={
            "reason": reason,
            "user_id": str(attempt.user_id) if attempt.user_id else None,
            "client_address": client_address,
        },
    )
