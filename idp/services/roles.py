"""Decisions about roles: creation, renaming, deletion, grants to users, the permission catalogue.

The CLI and the admin API both call these. Every change is audited in the same transaction.
The `admin` role anchors the catalogue: it holds every permission, it cannot be renamed or
deleted, and it cannot lose its last active member. Who may change what follows the one rule
of `idp.services.permissions`: an actor hands out, changes or takes away only what it holds.
Role names are unique and looked up case-insensitively (`Admin` is `admin`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.constants import ADMIN_ROLE
from idp.configuration.exceptions import ConflictError, NotFoundError
from idp.models import Permission, Role, User
from idp.repository import roles as roles_repo
from idp.repository.base import update_or_conflict
from idp.schemas.roles import RoleCreate, RoleOut, RoleUpdate
from idp.services import audit
from idp.services.permissions import (
    Actor,
    ensure_holds,
    ensure_holds_roles,
    ensure_may_manage,
    ensure_may_manage_members,
    ensure_unrestricted,
)


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


async def get_permission(session: AsyncSession, code: str) -> Permission:
    found = await roles_repo.permissions_by_code(session, [code])
    if not found:
        raise NotFoundError(f"unknown permission: {code}")
    return found[0]


async def create_role(session: AsyncSession, data: RoleCreate, *, actor: Actor) -> Role:
    """Create a role holding some catalogue permissions; 409 when the name is taken."""
    permissions = await roles_repo.permissions_by_code(session, data.permissions)
    missing = sorted(set(data.permissions) - {p.code for p in permissions})
    if missing:
        raise NotFoundError(f"unknown permission: {', '.join(missing)}")
    ensure_holds(actor, data.permissions, "granting these permissions")
    role = await roles_repo.add(session, Role(name=data.name, description=data.description))
    for permission in permissions:
        await roles_repo.grant_permission(session, role.id, permission.id)
    await audit.record(
        session,
        actor,
        "role.create",
        target_type="role",
        target_id=role.name,
        details={
            "description": role.description,
            "permissions": sorted(p.code for p in permissions),
        },
    )
    return await get_role(session, role.name)


async def list_roles(session: AsyncSession) -> Sequence[Role]:
    return await roles_repo.list_all(session)


async def list_permissions(session: AsyncSession) -> Sequence[Permission]:
    return await roles_repo.list_permissions(session)


async def update_role(session: AsyncSession, role: Role, data: RoleUpdate, *, actor: Actor) -> Role:
    """Rename or describe a role; 409 when the new name is taken or the role is `admin`.

    Describing needs holding the role; renaming gives every holder a name nobody holds yet,
    so only unrestricted actors rename.
    """
    ensure_holds_roles(actor, [role.name], f"changing role {role.name!r}")
    changes: dict[str, object] = {}
    if data.name is not None and data.name != role.name:
        if role.name == ADMIN_ROLE:
            raise ConflictError("the admin role cannot be renamed")
        ensure_unrestricted(actor, "renaming a role")
        changes["name"] = data.name
    if data.description is not None and data.description != role.description:
        changes["description"] = data.description
    if not changes:
        return role
    before = {"name": role.name, "description": role.description}
    await update_or_conflict(session, role, changes, f"role {data.name!r} already exists")
    await audit.record(
        session,
        actor,
        "role.update",
        target_type="role",
        target_id=role.name,
        details={key: {"from": before[key], "to": value} for key, value in changes.items()},
    )
    return role


async def delete_role(
    session: AsyncSession, name: str, *, force: bool = False, actor: Actor
) -> None:
    """Delete a role; 409 while users hold it unless `force`, and always for `admin`.

    Deleting needs holding the role; forcing also needs managing every user who holds it.
    The role's row is locked first: a concurrent grant of this role waits on its foreign key
    check, so no user can gain the role between the count and the deletion.
    """
    role = await roles_repo.get_by_name(session, name, for_update=True)
    if role is None:
        raise NotFoundError(f"role {name!r} not found")
    if role.name == ADMIN_ROLE:
        raise ConflictError("the admin role cannot be deleted")
    ensure_holds_roles(actor, [role.name], f"deleting role {role.name!r}")
    members = await roles_repo.count_members(session, role.id)
    if members and not force:
        raise ConflictError(
            f"role {name!r} is held by {members} user(s); delete with force=true to revoke it"
        )
    if members:
        await ensure_may_manage_members(session, actor, role.id)
    await roles_repo.delete_role(session, role.id)
    await audit.record(
        session,
        actor,
        "role.delete",
        target_type="role",
        target_id=role.name,
        details={"revoked_from_users": members},
    )


async def grant_role(session: AsyncSession, user: User, role_name: str, *, actor: Actor) -> bool:
    """Give `role_name` to `user`; False when the user already held it. The actor must hold
    the role (and so every permission it carries) and every role `user` holds."""
    role = await get_role(session, role_name)
    ensure_holds_roles(actor, [role.name], f"granting role {role.name!r}")
    await ensure_may_manage(session, actor, user)
    changed = await roles_repo.link(session, user.id, role.id)
    if changed:
        await audit.record(
            session,
            actor,
            "user.role_grant",
            target_type="user",
            target_id=str(user.id),
            details={"username": user.username, "role": role.name},
        )
    return changed


async def revoke_role(session: AsyncSession, user: User, role_name: str, *, actor: Actor) -> bool:
    """Take `role_name` from `user`, refusing to remove the last active admin (409). The actor
    must hold the role and every role `user` holds."""
    role = await get_role(session, role_name)
    ensure_holds_roles(actor, [role.name], f"revoking role {role.name!r}")
    await ensure_may_manage(session, actor, user)
    if not await roles_repo.has_link(session, user.id, role.id):
        raise NotFoundError(f"user {user.username!r} does not have role {role_name!r}")
    if role.name == ADMIN_ROLE:
        await guard_last_admin(session, user)
    changed = await roles_repo.unlink(session, user.id, role.id)
    if changed:
        await audit.record(
            session,
            actor,
            "user.role_revoke",
            target_type="user",
            target_id=str(user.id),
            details={"username": user.username, "role": role.name},
        )
    return changed


async def guard_last_admin(session: AsyncSession, user: User) -> None:
    """409 when `user` is the only active member of `admin` (before revoking, disabling or
    deleting them).

    The admin role's row is locked before counting, so two such changes to two different
    admins run one after the other on PostgreSQL and the second sees the first's result.
    """
    if not user.is_active:
        return
    role = await roles_repo.get_by_name(session, ADMIN_ROLE, for_update=True)
    if role is None or not await roles_repo.has_link(session, user.id, role.id):
        return
    if await roles_repo.count_members(session, role.id, active_only=True) <= 1:
        raise ConflictError("this would leave no active user with the admin role")


async def grant_permission(session: AsyncSession, role: Role, code: str, *, actor: Actor) -> bool:
    """Give catalogue permission `code` to `role`; False when the role already held it.
    The actor must hold both the permission and the role."""
    permission = await get_permission(session, code)
    ensure_holds(actor, [code], f"granting {code!r}")
    ensure_holds_roles(actor, [role.name], f"changing role {role.name!r}")
    changed = await roles_repo.grant_permission(session, role.id, permission.id)
    if changed:
        await audit.record(
            session,
            actor,
            "role.permission_grant",
            target_type="role",
            target_id=role.name,
            details={"permission": code},
        )
    return changed


async def revoke_permission(session: AsyncSession, role: Role, code: str, *, actor: Actor) -> None:
    """Take `code` from `role`; 404 when it does not hold it, 409 for `admin` (holds them all).
    The actor must hold both the permission and the role."""
    permission = await get_permission(session, code)
    ensure_holds(actor, [code], f"revoking {code!r}")
    ensure_holds_roles(actor, [role.name], f"changing role {role.name!r}")
    if role.name == ADMIN_ROLE:
        raise ConflictError("the admin role always holds the whole permission catalogue")
    if not await roles_repo.revoke_permission(session, role.id, permission.id):
        raise NotFoundError(f"role {role.name!r} does not hold {code!r}")
    await audit.record(
        session,
        actor,
        "role.permission_revoke",
        target_type="role",
        target_id=role.name,
        details={"permission": code},
    )
