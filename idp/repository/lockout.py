"""Login-failure counters: one atomic statement per counter and attempt, never read-then-write.

Two counters use the same rule: the account-wide one on `users` and the one per account and
client address in `login_failures`. Each statement both decides and records, under the row
lock the database takes for the UPDATE, so parallel attempts (from any replica) are numbered
one after another and cannot all pass the threshold together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from idp.models import LoginFailure, User
from idp.models.base import UTCDateTime
from idp.repository.base import insert_for


@dataclass(frozen=True, slots=True)
class Rule:
    """How a counter treats an attempt made at `now`."""

    threshold: int
    now: datetime
    # A counter whose last counted failure is this old starts over, its lock growth forgotten.
    forget_before: datetime
    # End given to a lock this attempt starts; the caller narrows it with the exact wait.
    lock_until: datetime
    # False: the counter stops at the threshold without locking; the caller decides the lock.
    locks: bool = True


@dataclass(frozen=True, slots=True)
class Count:
    """A counter after one attempt."""

    # The attempt's number in the current round: at most the threshold when it may check the
    # password (equal: it starts a lock), threshold + 1 when the counter was already locked.
    attempt: int
    lockouts: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class AccountCount:
    user_id: uuid.UUID
    password_hash: str | None
    is_active: bool
    count: Count


def _moment(value: datetime) -> ColumnElement[datetime]:
    return literal(value, UTCDateTime())


def _next_state(
    rule: Rule,
    count: InstrumentedAttribute[int],
    last: InstrumentedAttribute[datetime | None],
    lockouts: InstrumentedAttribute[int],
    until: InstrumentedAttribute[datetime | None],
) -> dict[InstrumentedAttribute[Any], ColumnElement[Any]]:
    """SET clauses that count one attempt, as CASE expressions over the row's current values.

    Locked: nothing changes but `count` reads threshold + 1 (the caller rolls back).
    Expired lock or forgotten failures: a new round starts at 1. Reaching the threshold: lock
    (provisionally until `rule.lock_until`) and count one more lockout; with `rule.locks`
    false the count stays at the threshold instead, each further attempt reaching it again.
    Lockouts are forgotten with the failures, so the wait grows only while failures keep coming.
    """
    now = _moment(rule.now)
    locked = and_(until.is_not(None), until > now)
    stale = or_(last.is_(None), last <= _moment(rule.forget_before))
    fresh = or_(stale, and_(until.is_not(None), until <= now))
    counted = case((fresh, 1), else_=count + 1)
    reaches = counted >= rule.threshold
    locks = reaches if rule.locks else false()
    earlier_lockouts = case((stale, 0), else_=lockouts)
    return {
        count: case((locked, rule.threshold + 1), (reaches, rule.threshold), else_=counted),
        last: case((locked, last), else_=now),
        lockouts: case((locked, lockouts), (locks, earlier_lockouts + 1), else_=earlier_lockouts),
        until: case((locked, until), (locks, _moment(rule.lock_until)), else_=None),
    }


async def count_account_attempt(
    session: AsyncSession, username: str, rule: Rule
) -> AccountCount | None:
    """Count an attempt on the account named `username`; None when there is no such user."""
    values: dict[Any, Any] = _next_state(
        rule,
        User.failed_login_count,
        User.last_failed_login_at,
        User.lockout_count,
        User.locked_until,
    )
    values[User.updated_at] = User.updated_at  # a login attempt is not an edit of the user
    statement = (
        update(User)
        .where(func.lower(User.username) == username.lower())
        .values(values)
        .returning(
            User.id,
            User.password_hash,
            User.is_active,
            User.failed_login_count,
            User.lockout_count,
            User.locked_until,
        )
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    return AccountCount(row[0], row[1], row[2], Count(row[3], row[4], row[5]))


async def count_address_attempt(
    session: AsyncSession, user_id: uuid.UUID, client_address: str, rule: Rule
) -> Count:
    """Count an attempt on the account from one client address (an upsert, atomic too)."""
    insert = insert_for(session)
    first_locks = rule.threshold <= 1
    values = insert(LoginFailure).values(
        user_id=user_id,
        client_address=client_address,
        failed_count=1,
        last_failed_at=rule.now,
        lockout_count=1 if first_locks else 0,
        locked_until=rule.lock_until if first_locks else None,
    )
    next_state = _next_state(
        rule,
        LoginFailure.failed_count,
        LoginFailure.last_failed_at,
        LoginFailure.lockout_count,
        LoginFailure.locked_until,
    )
    statement = values.on_conflict_do_update(
        index_elements=[LoginFailure.user_id, LoginFailure.client_address],
        set_={column.key: value for column, value in next_state.items()},
    ).returning(LoginFailure.failed_count, LoginFailure.lockout_count, LoginFailure.locked_until)
    row = (await session.execute(statement)).one()
    return Count(row[0], row[1], row[2])


async def lock_account(
    session: AsyncSession, user_id: uuid.UUID, until: datetime, lockouts: int
) -> None:
    """Lock the whole account, its `lockouts`-th consecutive lock (same transaction as the
    attempt's count, so the row is still locked)."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            {
                User.locked_until: until,
                User.lockout_count: lockouts,
                User.updated_at: User.updated_at,
            }
        )
        .execution_options(synchronize_session=False)
    )


async def count_failing_addresses(
    session: AsyncSession, user_id: uuid.UUID, *, forget_before: datetime
) -> int:
    """How many client addresses have failures against the account not yet forgotten."""
    result = await session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.user_id == user_id, LoginFailure.last_failed_at > forget_before)
    )
    return result or 0


async def end_address_lock_at(
    session: AsyncSession, user_id: uuid.UUID, client_address: str, until: datetime
) -> None:
    await session.execute(
        update(LoginFailure)
        .where(LoginFailure.user_id == user_id, LoginFailure.client_address == client_address)
        .values(locked_until=until)
        .execution_options(synchronize_session=False)
    )


async def clear_account(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Forget the account-wide failures and lock (no write when there is nothing to forget)."""
    await session.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(
                User.failed_login_count != 0,
                User.lockout_count != 0,
                User.last_failed_login_at.is_not(None),
                User.locked_until.is_not(None),
            ),
        )
        .values(
            {
                User.failed_login_count: 0,
                User.last_failed_login_at: None,
                User.lockout_count: 0,
                User.locked_until: None,
                User.updated_at: User.updated_at,
            }
        )
        .execution_options(synchronize_session="fetch")
    )


async def clear_address(session: AsyncSession, user_id: uuid.UUID, client_address: str) -> None:
    await session.execute(
        delete(LoginFailure).where(
            LoginFailure.user_id == user_id, LoginFailure.client_address == client_address
        )
    )


async def delete_stale_addresses(
    session: AsyncSession, user_id: uuid.UUID, *, forget_before: datetime, now: datetime
) -> None:
    """Drop the user's per-address counters that are forgotten anyway and hold no lock."""
    await session.execute(
        delete(LoginFailure).where(
            LoginFailure.user_id == user_id,
            or_(
                LoginFailure.last_failed_at.is_(None), LoginFailure.last_failed_at <= forget_before
            ),
            or_(LoginFailure.locked_until.is_(None), LoginFailure.locked_until <= now),
        )
    )


async def count_address_locks(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    """How many client addresses are locked out of the user's account now."""
    result = await session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.user_id == user_id, LoginFailure.locked_until > now)
    )
    return result or 0


async def clear_all_addresses(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.user_id == user_id))


async def count_address_locks_of(
    session: AsyncSession, user_ids: Sequence[uuid.UUID], now: datetime
) -> dict[uuid.UUID, int]:
    """For each of `user_ids` with any, how many client addresses are locked out now."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(LoginFailure.user_id, func.count())
        .where(LoginFailure.user_id.in_(user_ids), LoginFailure.locked_until > now)
        .group_by(LoginFailure.user_id)
    )
    return {row[0]: row[1] for row in rows}
