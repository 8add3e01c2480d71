"""What every repository module shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ConflictError


async def insert_or_conflict(session: AsyncSession, row: object, message: str) -> None:
    """Insert `row` inside a savepoint: a unique violation becomes a `ConflictError` (409) and
    the session stays usable, also when the clash comes from a concurrent transaction.

    The row is added inside the savepoint because `begin_nested` first flushes what is pending.
    """
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        raise ConflictError(message) from exc


async def update_or_conflict(
    session: AsyncSession, row: object, changes: Mapping[str, object], message: str
) -> None:
    """Apply `changes` to `row` and flush them inside a savepoint, like `insert_or_conflict`.

    The attributes are set inside the savepoint, so the flush that may violate a unique
    index runs there and a clash leaves the outer transaction usable.
    """
    try:
        async with session.begin_nested():
            for name, value in changes.items():
                setattr(row, name, value)
    except IntegrityError as exc:
        raise ConflictError(message) from exc


def insert_for(session: AsyncSession) -> Any:
    """INSERT with ON CONFLICT in the session's dialect (PostgreSQL or SQLite)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
