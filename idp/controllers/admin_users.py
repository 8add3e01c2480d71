"""Administration of users: `/admin/users` and their roles and passwords."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from idp.configuration.constants import MAX_PAGE_OFFSET
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import SessionDep, SettingsDep
from idp.dependencies.permissions import (
    ADMIN_RESPONSES,
    PermissionRoute,
    RolesWrite,
    UsersRead,
    UsersWrite,
)
from idp.schemas.roles import RoleGrant
from idp.schemas.users import (
    NO_CONTROL_PATTERN,
    ROLE_NAME_PATTERN,
    PasswordSet,
    UserCreate,
    UserOut,
    UserPage,
    UserUpdate,
)
from idp.services import lockout as lockout_service
from idp.services import roles as roles_service
from idp.services import users as users_service

router = APIRouter(
    prefix="/admin/users",
    tags=["admin: users"],
    route_class=PermissionRoute,
    responses=ADMIN_RESPONSES,
)

UserId = Annotated[uuid.UUID, Path(description="The user's id (a UUID)")]
RoleNameParam = Annotated[str, Path(max_length=100, pattern=ROLE_NAME_PATTERN)]


@router.get("", response_model=UserPage)
async def list_users(
    _actor: UsersRead,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
    username: Annotated[
        str | None, Query(max_length=150, pattern=NO_CONTROL_PATTERN, description="prefix")
    ] = None,
    email: Annotated[
        str | None, Query(max_length=320, pattern=NO_CONTROL_PATTERN, description="prefix")
    ] = None,
    role: Annotated[str | None, Query(max_length=100, pattern=ROLE_NAME_PATTERN)] = None,
    active: bool | None = None,
) -> UserPage:
    """Users with their roles, ordered by username, filtered by prefixes, role and state."""
    page, total = await users_service.list_users(
        session,
        limit=limit,
        offset=offset,
        username_prefix=username,
        email_prefix=email,
        role=role,
        active=active,
    )
    return UserPage(
        items=[users_service.to_out(user) for user in page],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The username or email is taken"}},
)
async def create_user(
    data: UserCreate,
    actor: UsersWrite,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> UserOut:
    """Create a user, with an initial password or none (then they cannot log in until one is
    set). Roles given here need `roles:write` too."""
    user = await users_service.create_user(session, settings, data, actor=actor)
    response.headers["Location"] = f"/admin/users/{user.id}"
    return users_service.to_out(await users_service.get_user(session, user.id))


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: UserId, _actor: UsersRead, session: SessionDep) -> UserOut:
    """One user with their roles."""
    return users_service.to_out(await users_service.get_user(session, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses={409: {"description": "Email taken, or this would disable the last admin"}},
)
async def update_user(
    user_id: UserId, data: UserUpdate, actor: UsersWrite, session: SessionDep, clock: ClockDep
) -> UserOut:
    """Change a user's email or active state (a disabled user's tokens stop working here)."""
    user = await users_service.get_user(session, user_id)
    await users_service.update_user(session, user, data, actor=actor, now=clock.now())
    return users_service.to_out(await users_service.get_user(session, user_id))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "This would delete the last active admin"}},
)
async def delete_user(user_id: UserId, actor: UsersWrite, session: SessionDep) -> Response:
    """Delete a user and their role grants."""
    user = await users_service.get_user(session, user_id)
    await users_service.delete_user(session, user, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{user_id}/password", status_code=status.HTTP_204_NO_CONTENT)
async def set_password(
    user_id: UserId,
    data: PasswordSet,
    actor: UsersWrite,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Response:
    """Reset a user's password; the password policy applies (422 with the reason)."""
    user = await users_service.get_user(session, user_id)
    await users_service.set_password(
        session, settings, user, data.password, actor=actor, now=clock.now()
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{user_id}/unlock", response_model=UserOut)
async def unlock_user(
    user_id: UserId, actor: UsersWrite, session: SessionDep, clock: ClockDep
) -> UserOut:
    """Lift the user's brute-force locks (account-wide and per address) and forget failures."""
    user = await users_service.get_user(session, user_id)
    await lockout_service.unlock_user(session, user, now=clock.now(), actor=actor)
    return users_service.to_out(await users_service.get_user(session, user_id))


@router.get("/{user_id}/roles", response_model=list[str])
async def list_user_roles(user_id: UserId, _actor: UsersRead, session: SessionDep) -> list[str]:
    """The names of the roles the user holds."""
    user = await users_service.get_user(session, user_id)
    return [role.name for role in user.roles]


@router.post(
    "/{user_id}/roles",
    response_model=list[str],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The user already held the role"}},
)
async def grant_role(
    user_id: UserId, data: RoleGrant, actor: RolesWrite, session: SessionDep, response: Response
) -> list[str]:
    """Give a role to the user: 201 when granted, 200 when they already held it."""
    user = await users_service.get_user(session, user_id)
    if await roles_service.grant_role(session, user, data.role, actor=actor):
        response.headers["Location"] = f"/admin/users/{user_id}/roles/{data.role}"
    else:
        response.status_code = status.HTTP_200_OK
    return [role.name for role in (await users_service.get_user(session, user_id)).roles]


@router.delete(
    "/{user_id}/roles/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "This would leave no active admin"}},
)
async def revoke_role(
    user_id: UserId, name: RoleNameParam, actor: RolesWrite, session: SessionDep
) -> Response:
    """Take a role from the user; it stops counting on their very next request."""
    user = await users_service.get_user(session, user_id)
    await roles_service.revoke_role(session, user, name, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
