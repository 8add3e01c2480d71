"""Administration of roles and their permissions, and the permission catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from idp.dependencies.database import SessionDep
from idp.dependencies.permissions import ADMIN_RESPONSES, PermissionRoute, RolesRead, RolesWrite
from idp.schemas.roles import (
    PERMISSION_CODE_PATTERN,
    PermissionGrant,
    PermissionOut,
    RoleCreate,
    RoleOut,
    RoleUpdate,
)
from idp.schemas.users import ROLE_NAME_PATTERN
from idp.services import roles as roles_service

router = APIRouter(
    prefix="/admin",
    tags=["admin: roles"],
    route_class=PermissionRoute,
    responses=ADMIN_RESPONSES,
)

RoleNameParam = Annotated[str, Path(max_length=100, pattern=ROLE_NAME_PATTERN)]
CodeParam = Annotated[str, Path(max_length=100, pattern=PERMISSION_CODE_PATTERN)]


@router.get("/roles", response_model=list[RoleOut])
async def list_roles(_actor: RolesRead, session: SessionDep) -> list[RoleOut]:
    """Every role with its permissions, by name."""
    return [roles_service.to_out(role) for role in await roles_service.list_roles(session)]


@router.post(
    "/roles",
    response_model=RoleOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The name is taken"}},
)
async def create_role(
    data: RoleCreate, actor: RolesWrite, session: SessionDep, response: Response
) -> RoleOut:
    """Create a role, optionally holding permissions from the catalogue."""
    role = await roles_service.create_role(session, data, actor=actor)
    response.headers["Location"] = f"/admin/roles/{role.name}"
    return roles_service.to_out(role)


@router.get("/roles/{name}", response_model=RoleOut)
async def get_role(name: RoleNameParam, _actor: RolesRead, session: SessionDep) -> RoleOut:
    """One role with its permissions."""
    return roles_service.to_out(await roles_service.get_role(session, name))


@router.patch(
    "/roles/{name}",
    response_model=RoleOut,
    responses={409: {"description": "The new name is taken, or the role is `admin`"}},
)
async def update_role(
    name: RoleNameParam, data: RoleUpdate, actor: RolesWrite, session: SessionDep
) -> RoleOut:
    """Rename a role or change its description."""
    role = await roles_service.get_role(session, name)
    role = await roles_service.update_role(session, role, data, actor=actor)
    return roles_service.to_out(await roles_service.get_role(session, role.name))


@router.delete(
    "/roles/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Users hold the role (and force is false), or it is `admin`"}},
)
async def delete_role(
    name: RoleNameParam,
    actor: RolesWrite,
    session: SessionDep,
    force: Annotated[bool, Query(description="Also revoke it from every user holding it")] = False,
) -> Response:
    """Delete a role; refused while users hold it unless `force=true`."""
    await roles_service.delete_role(session, name, force=force, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/roles/{name}/permissions", response_model=list[PermissionOut])
async def list_role_permissions(
    name: RoleNameParam, _actor: RolesRead, session: SessionDep
) -> list[PermissionOut]:
    """The catalogue permissions the role holds."""
    role = await roles_service.get_role(session, name)
    return [PermissionOut.model_validate(permission) for permission in role.permissions]


@router.post(
    "/roles/{name}/permissions",
    response_model=list[PermissionOut],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The role already held the permission"}},
)
async def grant_permission(
    name: RoleNameParam,
    data: PermissionGrant,
    actor: RolesWrite,
    session: SessionDep,
    response: Response,
) -> list[PermissionOut]:
    """Give a catalogue permission to the role: 201 when granted, 200 when already held."""
    role = await roles_service.get_role(session, name)
    if await roles_service.grant_permission(session, role, data.permission, actor=actor):
        response.headers["Location"] = f"/admin/roles/{name}/permissions/{data.permission}"
    else:
        response.status_code = status.HTTP_200_OK
    role = await roles_service.get_role(session, name)
    return [PermissionOut.model_validate(permission) for permission in role.permissions]


@router.delete(
    "/roles/{name}/permissions/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "The role is `admin`, which holds every permission"}},
)
async def revoke_permission(
    name: RoleNameParam, code: CodeParam, actor: RolesWrite, session: SessionDep
) -> Response:
    """Take a permission from the role; it stops counting on its holders' next request."""
    role = await roles_service.get_role(session, name)
    await roles_service.revoke_permission(session, role, code, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/permissions", response_model=list[PermissionOut])
async def list_permissions(_actor: RolesRead, session: SessionDep) -> list[PermissionOut]:
    """The identity service's own permission catalogue."""
    return [
        PermissionOut.model_validate(permission)
        for permission in await roles_service.list_permissions(session)
    ]
