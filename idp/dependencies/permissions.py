"""Route guards: each admin route declares the permission it needs, checked on every request.

The caller comes from `CallerDep` (token verified with our keys, user loaded, disabled users
refused); their current permissions are then read from the database in one statement.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from idp.configuration.constants import PERMISSIONS
from idp.dependencies.authentication import CallerDep, require_admin_audience
from idp.dependencies.database import SessionDep
from idp.schemas.errors import ErrorBody, ValidationErrorBody
from idp.services import permissions as permissions_service
from idp.services.permissions import Actor


class RequirePermission:
    """A dependency that yields the caller as an `Actor` when they hold `code`, else 403."""

    def __init__(self, code: str) -> None:
        if code not in PERMISSIONS:  # a typo here would lock everybody out of the route
            raise ValueError(f"unknown permission {code!r}")
        self.code = code

    async def __call__(self, request: Request, caller: CallerDep, session: SessionDep) -> Actor:
        # uvicorn's proxy_headers has already put a trusted proxy's X-Forwarded-For here.
        address = request.client.host[:64] if request.client else None
        return await permissions_service.authorize(session, caller.user, self.code, address=address)

    def __repr__(self) -> str:
        return f"RequirePermission({self.code!r})"


def require_permission(code: str) -> Any:
    """`Annotated[Actor, require_permission("users:write")]` guards a route with `code`."""
    return Depends(RequirePermission(code))


UsersRead = Annotated[Actor, require_permission("users:read")]
UsersWrite = Annotated[Actor, require_permission("users:write")]
RolesRead = Annotated[Actor, require_permission("roles:read")]
RolesWrite = Annotated[Actor, require_permission("roles:write")]
AuditRead = Annotated[Actor, require_permission("audit:read")]
ClientsRead = Annotated[Actor, require_permission("clients:read")]
ClientsWrite = Annotated[Actor, require_permission("clients:write")]
TokensIntrospect = Annotated[Actor, require_permission("tokens:introspect")]


def _declared(dependant: Dependant) -> set[str]:
    found: set[str] = set()
    for sub in dependant.dependencies:
        if isinstance(sub.call, RequirePermission):
            found.add(sub.call.code)
        found |= _declared(sub)
    return found


def route_permissions(route: APIRoute) -> set[str]:
    """The permissions a route declares, found in its dependency tree."""
    return _declared(route.dependant)


class PermissionRoute(APIRoute):
    """An admin route: it must declare exactly one permission (OpenAPI shows which), and it
    accepts only tokens issued for the admin audience (IDP_ADMIN_AUDIENCE).

    Building such a route without a permission fails at import time, so an admin endpoint
    cannot be left open by forgetting its guard; the audience check is added here for the
    same reason, ahead of the permission check.
    """

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        kwargs["dependencies"] = [
            Depends(require_admin_audience),
            *(kwargs.get("dependencies") or []),
        ]
        super().__init__(path, endpoint, **kwargs)
        codes = route_permissions(self)
        if len(codes) != 1:
            raise RuntimeError(f"route {path} must declare exactly one permission, has {codes}")
        (code,) = codes
        self.openapi_extra = {**(self.openapi_extra or {}), "x-required-permission": code}
        note = f"Requires the `{code}` permission."
        if note not in self.description:  # some FastAPI versions rebuild routes when including
            self.description = f"{self.description}\n\n{note}".strip()
        if "{" in path:  # a path naming a user or role may name none
            self.responses.setdefault(404, {"description": "No such user, role or permission"})
        self.responses = with_error_bodies(self.responses)


def with_error_bodies(
    responses: dict[int | str, dict[str, Any]],
) -> dict[int | str, dict[str, Any]]:
    """Give every documented error status the body the app actually sends for it."""
    return {
        status: {"model": ValidationErrorBody if status == 422 else ErrorBody, **response}
        if isinstance(status, int) and status >= 400 and "model" not in response
        else response
        for status, response in responses.items()
    }


# Errors every admin route may answer; routes add their own 404 and 409, and FastAPI adds 422
# where there is input to refuse (main.py points it at ValidationErrorBody).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database is unreachable or not migrated"},
}
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No valid bearer token, a token not issued for the admin audience, "
        "or the caller is disabled"
    },
    403: {"description": "The caller lacks the permission"},
    **ERROR_RESPONSES,
}
