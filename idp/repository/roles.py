"""Queries on roles, user-role links and the permission catalogue."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from idp.models import Permission, Role, RolePermission, User, UserRole
from idp.repository.base import insert_or_conflict


async def get_by_name(
    session: AsyncSession, name: str, *, with_permissions: bool = False, for_update: bool = False
) -> Role | None:
    """The role named `name`, compared case-insensitively like the unique index on
    lower(name); `for_update` locks its row until the transaction ends (PostgreSQL; SQLite
    runs one writer at a time anyway)."""
    query = select(Role).where(func.lower(Role.name) == name.lower())
    if with_permissions:
        # Refresh a collection already loaded earlier in this unit of work.
        query = query.options(selectinload(Role.permissions)).execution_options(
            populate_existing=True
        )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_many_by_name(
    session: AsyncSession, names: Sequence[str], *, with_permissions: bool = False
) -> Sequence[Role]:
    if not names:
        return []
    query = select(Role).where(func.lower(Role.name).in_({name.lower() for name in names}))
    if with_permissions:
        query = query.options(selectinload(Role.permissions))
    return (await session.execute(query)).scalars().all()


async def delete_role(session: AsyncSession, role_id: int) -> bool:
    """Delete the role; its user and permission links go with it (ON DELETE CASCADE)."""
    result = await session.execute(delete(Role).where(Role.id == role_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add(session: AsyncSession, role: Role) -> Role:
    await insert_or_conflict(session, role, f"role {role.name!r} already exists")
    return role


async def list_all(session: AsyncSession) -> Sequence[Role]:
    result = await session.execute(
        select(Role).options(selectinload(Role.permissions)).order_by(Role.name)
    )
    return result.scalars().all()


async def role_names_of(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    result = await session.execute(
        select(Role.name).join(UserRole).where(UserRole.user_id == user_id).order_by(Role.name)
    )
    return list(result.scalars().all())


async def role_names_of_members(session: AsyncSession, role_id: int) -> set[str]:
    """Every role name held by any user who holds role `role_id` (that role included)."""
    members = select(UserRole.user_id).where(UserRole.role_id == role_id)
    result = await session.execute(
        select(Role.name).join(UserRole).where(UserRole.user_id.in_(members)).distinct()
    )
    return set(result.scalars().all())


async def permissions_of(session: AsyncSession, user_id: uuid.UUID) -> tuple[list[str], set[str]]:
    """The user's role names and the permission codes they grant, in one statement."""
    result = await session.execute(
        select(Role.name, Permission.code)
        .select_from(UserRole)
        .join(Role, Role.id == UserRole.role_id)
        .outerjoin(RolePermission, RolePermission.role_id == Role.id)
        .outerjoin(Permission, Permission.id == RolePermission.permission_id)
        .where(UserRole.user_id == user_id)
    )
    roles: set[str] = set()
    permissions: set[str] = set()
    for role_name, code in result.all():
        roles.add(role_name)
        if code is not None:
            permissions.add(code)
    return sorted(roles), permissions


async def has_link(session: AsyncSession, user_id: uuid.UUID, role_id: int) -> bool:
    link = await session.get(UserRole, (user_id, role_id))
    return link is not None


async def link(session: AsyncSession, user_id: uuid.UUID, role_id: int) -> bool:
    """Give the role to the user; False when the user already had it."""
    if await has_link(session, user_id, role_id):
        return False
    await insert_or_conflict(
        session, UserRole(user_id=user_id, role_id=role_id), "the user already has this role"
    )
    return True


async def unlink(session: AsyncSession, user_id: uuid.UUID, role_id: int) -> bool:
    result = await session.execute(
        delete(UserRole).where(UserRole.user_id == user_id, UserRole.role_id == role_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def count_members(session: AsyncSession, role_id: int, *, active_only: bool = False) -> int:
    query = select(func.count()).select_from(UserRole).where(UserRole.role_id == role_id)
    if active_only:
        query = query.join(User, User.id == UserRole.user_id).where(User.is_active.is_(True))
    return (await session.scalar(query)) or 0


async def permissions_by_code(session: AsyncSession, codes: Sequence[str]) -> Sequence[Permission]:
    if not codes:
        return []
    result = await session.execute(select(Permission).where(Permission.code.in_(codes)))
    return result.scalars().all()


async def list_permissions(session: AsyncSession) -> Sequence[Permission]:
    return (await session.execute(select(Permission).order_by(Permission.code))).scalars().all()


async def grant_permission(session: AsyncSession, role_id: int, permission_id: int) -> bool:
    if await session.get(RolePermission, (role_id, permission_id)) is not None:
        return False
    await insert_or_conflict(
        session,
        RolePermission(role_id=role_id, permission_id=permission_id),
        "the role already has this permission",
    )
    return True


async def revoke_permission(session: AsyncSession, role_id: int, permission_id: int) -> bool:
    result = await session.execute(
        delete(RolePermission).where(
            RolePermission.role_id == role_id, RolePermission.permission_id == permission_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
