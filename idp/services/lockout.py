"""Brute-force lockout, in the manner of Keycloak's brute-force detector (docs/behaviour.md,
"Login defence").

Failures are counted in the database, so every replica shares them, by two counters:

- per account and client address: `IDP_LOCKOUT_THRESHOLD` failures lock that address out of
  that account; a flood from one address stops quickly without locking the owner out elsewhere;
- per account: `IDP_LOCKOUT_ACCOUNT_THRESHOLD` failures from all addresses together, coming
  from at least `IDP_LOCKOUT_ACCOUNT_MIN_ADDRESSES` distinct addresses (with failures not yet
  forgotten), lock the account for everyone, which stops guessing spread over many
  addresses; one address alone only ever locks itself out. Short of enough addresses the
  counter stays at its threshold and each further failure tries the lock again.

The n-th consecutive lock of a counter lasts `wait + (n - 1) * increment` seconds, at most
`max wait`. Each lock starts a new round of attempts; a success, an admin unlock, or
`IDP_LOCKOUT_FAILURE_RESET` seconds without a counted failure forget the failures and the growth.

An attempt is counted before its password is checked (its own short transaction, committed at
once so no row lock is held during bcrypt, and kept when the request fails); a success then
clears the counters. So parallel guesses get at most a threshold's worth of bcrypt checks.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration import metrics
from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import lockout as lockout_repo
from idp.services import audit as audit_service
from idp.services.permissions import Actor, ensure_may_manage

logger = logging.getLogger(__name__)


def lock_wait(settings: Settings, lockouts: int) -> int:
    """Seconds the `lockouts`-th consecutive lock lasts: wait, + increment each time, capped."""
    grown = settings.lockout_wait + (max(lockouts, 1) - 1) * settings.lockout_wait_increment
    return min(grown, settings.lockout_max_wait)


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock an attempt started; it stands if the attempt's password is wrong."""

    scope: Literal["account", "address"]
    until: datetime
    lockouts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the counters allow one login attempt, decided before any password check."""

    user_id: uuid.UUID | None = None
    password_hash: str | None = None
    is_active: bool = False
    allowed: bool = False
    locks: tuple[Lock, ...] = ()

    @property
    def locked(self) -> bool:
        return self.user_id is not None and not self.allowed


def _rule(
    settings: Settings, threshold: int, now: datetime, *, locks: bool = True
) -> lockout_repo.Rule:
    return lockout_repo.Rule(
        threshold=threshold,
        now=now,
        forget_before=_forget_before(settings, now),
        lock_until=now + timedelta(seconds=settings.lockout_max_wait),
        locks=locks,
    )


def _forget_before(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(seconds=settings.lockout_failure_reset)


class _LockedError(Exception):
    """Raised inside the counting unit of work to roll it back: a counter is locked."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__("refused by a lock")
        self.attempt = attempt


@asynccontextmanager
async def attempt(
    database: Database, settings: Settings, username: str, client_address: str, now: datetime
) -> AsyncIterator[Attempt]:
    """One login attempt, counted before its password is checked in the block.

    Each step commits in a unit of work of its own, so it holds no row lock during bcrypt and
    stands whatever the request does: the count before the block; when the block returns
    (the password was right), the counters cleared; when it raises, the locks the attempt
    started audited.
    """
    reserved = await reserve_attempt(database, settings, username, client_address, now)
    async with settled(database, settings, reserved, client_address, now):
        yield reserved


@asynccontextmanager
async def settled(
    database: Database, settings: Settings, attempt: Attempt, client_address: str, now: datetime
) -> AsyncIterator[None]:
    """Settle a reserved attempt by how the block ends: it returns (the password was right):
    the counters cleared; it raises: the locks the attempt started audited."""
    try:
        yield
    except Exception:
        await record_failure(database, attempt, client_address)
        raise
    if attempt.user_id is not None:
        await record_success(database, settings, attempt.user_id, client_address, now)


async def reserve_attempt(
    database: Database, settings: Settings, username: str, client_address: str, now: datetime
) -> Attempt:
    """Count a login attempt on both counters before its password is checked.

    Allowed: the attempt is committed as a failure (a success clears it later). Refused
    because a counter is locked: nothing is written (the unit of work rolls back), so
    hammering a locked account neither extends its lock nor, from a locked-out address,
    counts against the account.
    """
    try:
        async with database.session() as session:
            return await _count(session, settings, username, client_address, now)
    except _LockedError as locked:
        return locked.attempt


async def _count(
    session: AsyncSession, settings: Settings, username: str, client_address: str, now: datetime
) -> Attempt:
    # The account counter stops at its threshold; the lock also needs several addresses.
    account = await lockout_repo.count_account_attempt(
        session, username, _rule(settings, settings.lockout_account_threshold, now, locks=False)
    )
    if account is None:
        return Attempt()
    refused = Attempt(
        user_id=account.user_id,
        password_hash=account.password_hash,
        is_active=account.is_active,
    )
    if account.count.attempt > settings.lockout_account_threshold:
        raise _LockedError(refused)
    address = await lockout_repo.count_address_attempt(
        session,
        account.user_id,
        client_address,
        _rule(settings, settings.lockout_threshold, now),
    )
    if address.attempt > settings.lockout_threshold:
        raise _LockedError(refused)  # also undoes the account count: no check happens
    locks: list[Lock] = []
    if account.count.attempt == settings.lockout_account_threshold and (
        await lockout_repo.count_failing_addresses(
            session, account.user_id, forget_before=_forget_before(settings, now)
        )
        >= settings.lockout_account_min_addresses
    ):
        lockouts = account.count.lockouts + 1
        until = now + timedelta(seconds=lock_wait(settings, lockouts))
        await lockout_repo.lock_account(session, account.user_id, until, lockouts)
        locks.append(Lock("account", until, lockouts))
    if address.attempt == settings.lockout_threshold:
        until = now + timedelta(seconds=lock_wait(settings, address.lockouts))
        await lockout_repo.end_address_lock_at(session, account.user_id, client_address, until)
        locks.append(Lock("address", until, address.lockouts))
    return dataclasses.replace(refused, allowed=True, locks=tuple(locks))


async def record_failure(database: Database, attempt: Attempt, client_address: str) -> None:
    """Audit the locks a refused attempt started, in a unit of work of its own (the
    request's rolls back with the error)."""
    if not attempt.locks or attempt.user_id is None:
        return
    async with database.session() as session:
        for lock in attempt.locks:
            metrics.LOCKOUTS.inc()
            await audit(
                session,
                "user.locked",
                attempt.user_id,
                actor=Actor(user_id=None, username="lockout", address=client_address),
                scope=lock.scope,
                client_address=client_address,
                locked_until=lock.until.isoformat(timespec="seconds"),
                lockouts=lock.lockouts,
            )


async def record_success(
    database: Database,
    settings: Settings,
    user_id: uuid.UUID,
    client_address: str,
    now: datetime,
) -> None:
    """A correct password: forget the account's failures and this address's (which also lifts
    the provisional lock a threshold-reaching attempt set), and prune forgotten counters.

    Committed at once in a unit of work of its own, like the count, so the next attempt on
    this account already sees the counters cleared.
    """
    async with database.session() as session:
        await lockout_repo.clear_account(session, user_id)
        await lockout_repo.clear_address(session, user_id, client_address)
        await lockout_repo.delete_stale_addresses(
            session,
            user_id,
            forget_before=now - timedelta(seconds=settings.lockout_failure_reset),
            now=now,
        )


async def locked_addresses(
    session: AsyncSession, users: Sequence[User], now: datetime
) -> dict[uuid.UUID, int]:
    """How many client addresses are locked out of each of `users` now (absent: none)."""
    return await lockout_repo.count_address_locks_of(session, [user.id for user in users], now)


async def unlock_user(session: AsyncSession, user: User, *, now: datetime, actor: Actor) -> bool:
    """Lift every lock on the user, account-wide and per address, and forget the failures.

    True when a lock was in force. The admin API and `idp users unlock` call this.
    """
    await ensure_may_manage(session, actor, user)  # unlocking helps whoever guesses
    locked_addresses = await lockout_repo.count_address_locks(session, user.id, now)
    account_locked = user.locked_until is not None and user.locked_until > now
    await lockout_repo.clear_account(session, user.id)
    await lockout_repo.clear_all_addresses(session, user.id)
    await audit(
        session,
        "user.unlocked",
        user.id,
        actor=actor,
        account_locked=account_locked,
        locked_addresses=locked_addresses,
    )
    return account_locked or locked_addresses > 0


async def audit(
    session: AsyncSession,
    action: str,
    user_id: uuid.UUID,
    *,
    actor: Actor,
    **details: object,
) -> None:
    """Record one lockout audit event in `session`'s unit of work (the audit table), plus a
    structured log line for log-based alerting."""
    await audit_service.record(
        session, actor, action, target_type="user", target_id=str(user_id), details=dict(details)
    )
    fields = " ".join(f"{key}={value}" for key, value in details.items())
    logger.info(
        "audit %s user_id=%s %s",
        action,
        user_id,
        fields,
        extra={"audit_action": action, "user_id": str(user_id), **details},
    )
