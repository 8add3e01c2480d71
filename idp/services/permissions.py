"""Who may do what on the identity service itself.

Decisions use the database's current state: the caller's roles and their permissions are read
on every request (one statement), so revoking a role or a permission takes effect at once.

Beyond the permission a route declares, one rule (docs/security.md, "Who may grant what"):
an actor hands out, changes or takes away only what it holds itself. A role is held by name,
whatever idp permissions it carries (other services give role names their own powers), so

- granting or revoking a role, changing its description or deleting it needs holding it;
- granting or revoking an idp permission on a role needs holding the permission and the role;
- managing a user (password, email, active state, unlock, deletion, role changes) needs holding
  every role that user holds;
- force-deleting a role needs holding it and managing every user who holds it;
- renaming a role gives every holder a name nobody holds yet: unrestricted actors only.

Unrestricted actors are the operator's own tools (`SYSTEM`) and holders of the `admin` role,
which by construction holds the whole permission catalogue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.constants import ADMIN_ROLE
from idp.configuration.exceptions import PermissionDeniedError
from idp.models import User
from idp.repository import roles as roles_repo
from idp.repository import users as users_repo


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit log records it and the escalation rules check it.

    `permissions` and `roles` are None for the operator's own tools (the `idp` command, the
    bootstrap), which act with the database's full authority.
    """

    user_id: uuid.UUID | None
    username: str
    address: str | None = None
    permissions: frozenset[str] | None = None
    roles: frozenset[str] | None = None

    @property
    def unrestricted(self) -> bool:
        """The operator's tools and `admin` holders: exempt from the holding rule."""
        return self.permissions is None or self.roles is None or ADMIN_ROLE in self.roles


# Changes made outside the API: the `idp` command and the bootstrap admin.
SYSTEM: Final = Actor(user_id=None, username="system")


async def authorize(
    session: AsyncSession, user: User, permission: str, *, address: str | None = None
) -> Actor:
    """`user` as an actor when their current roles grant `permission`, else 403."""
    roles, permissions = await roles_repo.permissions_of(session, user.id)
    if permission not in permissions:
        raise PermissionDeniedError(f"this needs the {permission!r} permission")
    return Actor(
        user_id=user.id,
        username=user.username,
        address=address,
        permissions=frozenset(permissions),
        roles=frozenset(roles),
    )


def ensure_holds(actor: Actor, needed: Iterable[str], what: str) -> None:
    """403 unless `actor` holds every permission in `needed`."""
    if actor.unrestricted or actor.permissions is None:
        return
    missing = sorted(set(needed) - actor.permissions)
    if missing:
        raise PermissionDeniedError(f"{what} needs permissions you lack: {', '.join(missing)}")


def ensure_holds_roles(actor: Actor, role_names: Iterable[str], what: str) -> None:
    """403 unless `actor` holds every role in `role_names` (by their stored names)."""
    if actor.unrestricted or actor.roles is None:
        return
    missing = sorted(set(role_names) - actor.roles)
    if missing:
        raise PermissionDeniedError(f"{what} needs roles you do not hold: {', '.join(missing)}")


def ensure_unrestricted(actor: Actor, what: str) -> None:
    """403 unless `actor` is the operator's tools or an `admin` holder."""
    if not actor.unrestricted:
        raise PermissionDeniedError(f"{what} needs the {ADMIN_ROLE!r} role")


async def ensure_may_manage(session: AsyncSession, actor: Actor, user: User) -> None:
    """403 unless `actor` holds every role `user` holds: no taking over an account whose
    roles matter here or in another service.

    The user's row is locked first (PostgreSQL): a concurrent grant to them waits on its
    foreign-key check until this change commits, and a grant already under way is seen once
    it commits, so no role slips in between the check and the change.
    """
    if actor.unrestricted:
        return
    await users_repo.lock(session, user.id)
    roles = await roles_repo.role_names_of(session, user.id)
    ensure_holds_roles(actor, roles, f"managing user {user.username!r}")


async def ensure_may_manage_members(session: AsyncSession, actor: Actor, role_id: int) -> None:
    """403 unless `actor` may manage every user holding the role (before a forced deletion)."""
    if actor.unrestricted:
        return
    held = await roles_repo.role_names_of_members(session, role_id)
    ensure_holds_roles(actor, held, "revoking this role from its holders")
