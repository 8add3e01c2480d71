"""Decisions about roles: creation, grants to users, the permission catalogue."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.constants import ADMIN_ROLE
from idp.configuration.exceptions import ConflictError, NotFoundError
from idp.models import Role, User
from idp.repository import roles as roles_repo
from idp.schemas.roles import RoleCreate, RoleOut


def to_out(role: Role) -> RoleOut:
    return RoleOut(
        name=role.name,
        description=role.description,
        permissions=[permission.code for permission in role.permissions],
        created_at=role.created_at,
    )


async def get_role(session: AsyncSession, name: str) -> Role:
    role = await roles_repo.get_by_name(session, name, with_permissions=True)
    if role is None:
        raise NotFoundError(f"role {name!r} not found")
    return role


async def create_role(session: AsyncSession, data: RoleCreate) -> Role:
    permissions = await roles_repo.permissions_by_code(session, data.permissions)
    missing = sorted(set(data.permissions) - {p.code for p in permissions})
    if missing:
        raise NotFoundError(f"unknown permission: {', '.join(missing)}")
    role = await roles_repo.add(session, Role(name=data.name, description=data.description))
    for permission in permissions:
        await roles_repo.grant_permission(session, role.id, permission.id)
    return await get_role(session, role.name)


async def list_roles(session: AsyncSession) -> Sequence[Role]:
    return await roles_repo.list_all(session)


async def grant_role(session: AsyncSession, user: User, role_name: str) -> bool:
    """Give `role_name` to `user`; False when the user already held it."""
    role = await get_role(session, role_name)
    return await roles_repo.link(session, user.id, role.id)


async def revoke_role(session: AsyncSession, user: User, role_name: str) -> bool:
    """Take `role_name` from `user`, refusing to remove the last active admin (409)."""
    role = await get_role(session, role_name)
    if not await roles_repo.has_link(session, user.id, role.id):
        raise NotFoundError(f"user {user.username!r} does not have role {role_name!r}")
    if role.name == ADMIN_ROLE and user.is_active:
        await ensure_other_admin(session, role)
    return await roles_repo.unlink(session, user.id, role.id)


async def ensure_other_admin(session: AsyncSession, admin_role: Role | None = None) -> None:
    """Raise 409 unless more than one active user holds `admin`."""
    role = admin_role or await get_role(session, ADMIN_ROLE)
    if await roles_repo.count_members(session, role.id, active_only=True) <= 1:
        raise ConflictError("this would leave no active user with the admin role")
