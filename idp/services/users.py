"""Decisions about users: creation, updates, passwords, deletion, listing, the bootstrap admin.

The CLI and the admin API both call these, so there is one implementation of each rule.
Every change is audited in the same transaction; `actor` says who made it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.constants import ADMIN_ROLE
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    NotFoundError,
    PermissionDeniedError,
    ValidationFailedError,
)
from idp.configuration.settings import Settings
from idp.models import User
from idp.repository import roles as roles_repo
from idp.repository import users as users_repo
from idp.repository.base import update_or_conflict
from idp.schemas.users import Profile, UserCreate, UserOut, UserUpdate
from idp.services import audit, authentication, passwords, refresh_tokens
from idp.services.permissions import (
    SYSTEM,
    Actor,
    ensure_holds,
    ensure_holds_roles,
    ensure_may_manage,
)
from idp.services.roles import guard_last_admin


def to_out(user: User) -> UserOut:
    """The public view of a user whose roles were loaded with it."""
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        is_active=user.is_active,
        roles=[role.name for role in user.roles],
        created_at=user.created_at,
        updated_at=user.updated_at,
        locked_until=user.locked_until,
    )


def check_new_password(
    password: str,
    settings: Settings,
    *,
    user: User | None = None,
    username: str | None = None,
    email: str | None = None,
) -> None:
    """Every rule a new password must pass: the one place creation, reset and change call.

    The username and email come from `user`, or from the arguments for a user not yet created;
    they are refused as the password unless `IDP_PASSWORD_REFUSE_USER_INFO` is off.
    """
    if user is not None:
        username, email = user.username, user.email
    if not settings.password_refuse_user_info:
        username = email = None
    passwords.check_policy(
        password, min_length=settings.password_min_length, username=username, email=email
    )


async def create_user(
    session: AsyncSession, settings: Settings, data: UserCreate, *, actor: Actor
) -> User:
    """Create a user, optionally with a password and roles; 409 on a duplicate name or email.

    Creating a user with roles is granting them: it needs `roles:write` and holding every
    one of the roles, like a grant through `/admin/users/{id}/roles`.
    """
    roles = await roles_repo.get_many_by_name(session, data.roles)
    found = {role.name.lower() for role in roles}
    missing = sorted(name for name in set(data.roles) if name.lower() not in found)
    if missing:
        raise NotFoundError(f"unknown role: {', '.join(missing)}")
    if roles:
        ensure_holds(actor, ["roles:write"], "creating a user with roles")
        ensure_holds_roles(actor, [role.name for role in roles], "creating a user with roles")
    password_hash = None
    if data.password is not None:
        check_new_password(data.password, settings, username=data.username, email=str(data.email))
        password_hash = await passwords.hash_password(data.password, settings.bcrypt_rounds)
    user = User(
        username=data.username,
        email=str(data.email),
        password_hash=password_hash,
        is_active=data.is_active,
    )
    await users_repo.add(session, user)
    for role in roles:
        await roles_repo.link(session, user.id, role.id)
    await audit.record(
        session,
        actor,
        "user.create",
        target_type="user",
        target_id=str(user.id),
        details={
            "username": user.username,
            "email": user.email,
            "is_active": user.is_active,
            "roles": sorted(role.name for role in roles),
            "has_password": password_hash is not None,
        },
    )
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await users_repo.get_with_roles(session, user_id)
    if user is None:
        raise NotFoundError("user not found")
    return user


async def get_by_username(session: AsyncSession, username: str) -> User:
    user = await users_repo.get_by_username(session, username)
    if user is None:
        raise NotFoundError(f"user {username!r} not found")
    return user


async def set_password(
    session: AsyncSession,
    settings: Settings,
    user: User,
    password: str,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    """Set (or reset) `user`'s password under the password policy: all their sessions end.

    Through the API nobody resets their own password this way: a stolen token must not
    replace the password without the current one (`POST /me/password` asks for it).
    """
    if actor.user_id is not None and actor.user_id == user.id:
        raise PermissionDeniedError("change your own password with POST /me/password")
    await ensure_may_manage(session, actor, user)
    await _store_password(session, settings, user, password)
    await refresh_tokens.end_login_sessions(session, user.id, now=now)
    await audit.record(
        session,
        actor,
        "user.password_set",
        target_type="user",
        target_id=str(user.id),
        details={"username": user.username},
    )


async def change_password(
    session: AsyncSession,
    database: Database,
    settings: Settings,
    user: User,
    *,
    current_password: str,
    new_password: str,
    keep_sid: uuid.UUID | None,
    client_address: str,
    now: datetime,
) -> None:
    """The user changes their own password: the current one is required (403 when wrong,
    counted in the login lockout); the user's other login sessions end, `keep_sid` (the
    caller's own) continues. Refusals and the change are audited."""
    await authentication.confirm_password(
        database, settings, user, current_password, client_address=client_address, now=now
    )
    await _store_password(session, settings, user, new_password)
    await refresh_tokens.end_login_sessions(session, user.id, keep=keep_sid, now=now)
    await audit.record(
        session,
        Actor(user_id=user.id, username=user.username, address=client_address),
        "user.password_change",
        target_type="user",
        target_id=str(user.id),
        details={"username": user.username},
    )


async def _store_password(
    session: AsyncSession, settings: Settings, user: User, password: str
) -> None:
    check_new_password(password, settings, user=user)
    user.password_hash = await passwords.hash_password(password, settings.bcrypt_rounds)
    await session.flush()


async def set_active(
    session: AsyncSession, user: User, active: bool, *, actor: Actor, now: datetime
) -> None:
    """Enable or disable `user`: disabling ends their login sessions; never the last active
    admin (409)."""
    await update_user(session, user, UserUpdate(is_active=active), actor=actor, now=now)


async def update_user(
    session: AsyncSession, user: User, data: UserUpdate, *, actor: Actor, now: datetime
) -> User:
    """Change email and/or active state; 409 on a taken email or on disabling the last admin."""
    changes: dict[str, object] = {}
    if data.email is not None and str(data.email) != user.email:
        changes["email"] = str(data.email)
    if data.is_active is not None and data.is_active != user.is_active:
        changes["is_active"] = data.is_active
    if not changes:
        return user
    await ensure_may_manage(session, actor, user)
    if changes.get("is_active") is False:
        await guard_last_admin(session, user)
    before = {"email": user.email, "is_active": user.is_active}
    await update_or_conflict(session, user, changes, "a user with this email already exists")
    if changes.get("is_active") is False:
        await refresh_tokens.end_login_sessions(session, user.id, now=now)  # signed out
    await audit.record(
        session,
        actor,
        "user.update",
        target_type="user",
        target_id=str(user.id),
        details={
            "username": user.username,
            **{key: {"from": before[key], "to": value} for key, value in changes.items()},
        },
    )
    return user


async def delete_user(session: AsyncSession, user: User, *, actor: Actor) -> None:
    """Delete `user` and their role links; deleting the last active admin is refused (409)."""
    await ensure_may_manage(session, actor, user)
    await guard_last_admin(session, user)
    user_id, details = user.id, {"username": user.username, "email": user.email}
    await users_repo.delete_user(session, user_id)
    await audit.record(
        session, actor, "user.delete", target_type="user", target_id=str(user_id), details=details
    )


async def list_users(
    session: AsyncSession,
    *,
    limit: int = 50,
    offset: int = 0,
    username_prefix: str | None = None,
    email_prefix: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    search: str | None = None,
    locked_at: datetime | None = None,
) -> tuple[Sequence[User], int]:
    """A page of users by username; `search` matches inside the username or email, and
    `locked_at` keeps those locked out (account-wide or for an address) at that moment."""
    if not 1 <= limit <= 500 or offset < 0:
        raise ValidationFailedError("limit must be 1..500 and offset at least 0")
    return await users_repo.list_page(
        session,
        limit=limit,
        offset=offset,
        username_prefix=username_prefix,
        email_prefix=email_prefix,
        role=role,
        active=active,
        search=search,
        locked_at=locked_at,
    )


async def admin_exists(session: AsyncSession) -> bool:
    role = await roles_repo.get_by_name(session, ADMIN_ROLE)
    return (
        role is not None and await roles_repo.count_members(session, role.id, active_only=True) > 0
    )


async def ensure_admin(
    session: AsyncSession,
    settings: Settings,
    *,
    username: str,
    email: str,
    password: str | None,
) -> str | None:
    """Create an admin account when no active user holds `admin` (Keycloak's bootstrap admin).

    Returns the password when one was generated here, so the caller can show it once; None
    when an admin already existed or the password was given.
    """
    if await admin_exists(session):
        return None
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(18)
    await create_user(
        session,
        settings,
        UserCreate(username=username, email=email, password=password, roles=[ADMIN_ROLE]),
        actor=SYSTEM,  # the operator's environment, before any admin exists
    )
    return generated


async def profile(session: AsyncSession, user: User) -> Profile:
    """The user with current roles and the permissions they grant (one statement)."""
    role_names, permission_codes = await roles_repo.permissions_of(session, user.id)
    return Profile(
        id=user.id,
        username=user.username,
        email=user.email,
        roles=role_names,
        permissions=sorted(permission_codes),
    )
