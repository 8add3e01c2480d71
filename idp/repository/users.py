"""Queries on users. Lookups by name or email go through the lower() unique indexes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from idp.models import LoginFailure, Role, User, UserRole
from idp.repository.base import insert_or_conflict


async def get(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_with_roles(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    result = await session.execute(
        select(User)
        .where(User.id == user_id)
        .options(selectinload(User.roles))
        # Refresh roles loaded earlier in this unit of work, before a grant or revocation.
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def lock(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Lock the user's row until the transaction ends (PostgreSQL; SQLite has one writer)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def get_with_role_names(
    session: AsyncSession, user_id: uuid.UUID
) -> tuple[User, list[str]] | None:
    """The user and the names of their roles, in one statement (the refresh grant on SQLite)."""
    rows = (
        await session.execute(
            select(User, Role.name)
            .outerjoin(UserRole, UserRole.user_id == User.id)
            .outerjoin(Role, Role.id == UserRole.role_id)
            .where(User.id == user_id)
            .order_by(Role.name)
        )
    ).all()
    if not rows:
        return None
    return rows[0][0], [name for _user, name in rows if name is not None]


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    if "\x00" in username:  # PostgreSQL text cannot hold NUL: no such user, and no query error
        return None
    result = await session.execute(
        select(User).where(func.lower(User.username) == username.lower())
    )
    return result.scalar_one_or_none()


async def add(session: AsyncSession, user: User) -> User:
    """Insert `user`; a clash on the unique username or email indexes is a `ConflictError`."""
    await insert_or_conflict(session, user, "a user with this username or email already exists")
    return user


def _filtered(
    *,
    username_prefix: str | None = None,
    email_prefix: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    search: str | None = None,
    locked_at: datetime | None = None,
) -> Select[User]:
    query = select(User)
    if search:
        needle = search.lower()
        query = query.where(
            or_(
                func.lower(User.username).contains(needle, autoescape=True),
                func.lower(User.email).contains(needle, autoescape=True),
            )
        )
    if locked_at is not None:  # locked account-wide or for some client address at that time
        query = query.where(
            or_(
                User.locked_until > locked_at,
                User.id.in_(
                    select(LoginFailure.user_id).where(LoginFailure.locked_until > locked_at)
                ),
            )
        )
    if username_prefix:
        query = query.where(
            func.lower(User.username).startswith(username_prefix.lower(), autoescape=True)
        )
    if email_prefix:
        query = query.where(
            func.lower(User.email).startswith(email_prefix.lower(), autoescape=True)
        )
    if active is not None:
        query = query.where(User.is_active.is_(active))
    if role:
        query = query.where(
            User.id.in_(
                select(UserRole.user_id).join(Role).where(func.lower(Role.name) == role.lower())
            )
        )
    return query


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    username_prefix: str | None = None,
    email_prefix: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    search: str | None = None,
    locked_at: datetime | None = None,
) -> tuple[Sequence[User], int]:
    """One page of users with their roles (two statements whatever the page size) and the total."""
    query = _filtered(
        username_prefix=username_prefix,
        email_prefix=email_prefix,
        role=role,
        active=active,
        search=search,
        locked_at=locked_at,
    )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    page = await session.execute(
        query.options(selectinload(User.roles))
        .order_by(func.lower(User.username))
        .limit(limit)
        .offset(offset)
    )
    return page.scalars().all(), total or 0


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> bool:
    result = await session.execute(delete(User).where(User.id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
