"""Who may do what on the identity service itself.

Decisions use the database's current state: the caller's roles and their permissions are read
on every request (one statement), so revoking a role or a permission takes effect at once.
Beyond the permission a route declares, nobody hands out more than they hold: granting a role
or a permission, or managing a user, needs every permission involved (no escalation).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import PermissionDeniedError
from idp.models import User
from idp.repository import roles as roles_repo


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit log records it and the escalation rules check it.

    `permissions` is None for the operator's own tools (the `idp` command, the bootstrap),
    which act with the database's full authority.
    """

    user_id: uuid.UUID | None
    username: str
    address: str | None = None
    permissions: frozenset[str] | None = None


# Changes made outside the API: the `idp` command and the bootstrap admin.
SYSTEM: Final = Actor(user_id=None, username="system")


async def authorize(
    session: AsyncSession, user: User, permission: str, *, address: str | None = None
) -> Actor:
    """`user` as an actor when their current roles grant `permission`, else 403."""
    _roles, permissions = await roles_repo.permissions_of(session, user.id)
    if permission not in permissions:
        raise PermissionDeniedError(f"this needs the {permission!r} permission")
    return Actor(
        user_id=user.id,
        username=user.username,
        address=address,
        permissions=frozenset(permissions),
    )


def ensure_holds(actor: Actor, needed: Iterable[str], what: str) -> None:
    """403 unless `actor` holds every permission in `needed`."""
    if actor.permissions is None:
        return
    missing = sorted(set(needed) - actor.permissions)
    if missing:
        raise PermissionDeniedError(f"{what} needs permissions you lack: {', '.join(missing)}")


async def ensure_may_manage(session: AsyncSession, actor: Actor, user: User) -> None:
    """403 when `user` holds a permission `actor` lacks: no taking over a stronger account."""
    if actor.permissions is None or actor.user_id == user.id:
        return
    _roles, permissions = await roles_repo.permissions_of(session, user.id)
    ensure_holds(actor, permissions, f"managing user {user.username!r}")
