"""The administration API over HTTP: users, roles, permissions, audit, and who may do what."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from idp.configuration.constants import PERMISSIONS
from idp.configuration.settings import Settings
from idp.controllers import admin_audit, admin_clients, admin_roles, admin_users
from idp.dependencies.permissions import PermissionRoute, route_permissions
from idp.schemas.roles import RoleCreate
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.permissions import SYSTEM
from tests.helpers import PASSWORD, admin_login, bearer, login, make_user, sql_statements

Headers = dict[str, str]

# Every admin route and the one permission it needs. A new admin route must be added here.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/admin/users", "users:read"),
    ("POST", "/admin/users", "users:write"),
    ("GET", "/admin/users/{user_id}", "users:read"),
    ("PATCH", "/admin/users/{user_id}", "users:write"),
    ("DELETE", "/admin/users/{user_id}", "users:write"),
    ("PUT", "/admin/users/{user_id}/password", "users:write"),
    ("POST", "/admin/users/{user_id}/unlock", "users:write"),
    ("GET", "/admin/users/{user_id}/roles", "users:read"),
    ("POST", "/admin/users/{user_id}/roles", "roles:write"),
    ("DELETE", "/admin/users/{user_id}/roles/{name}", "roles:write"),
    ("GET", "/admin/roles", "roles:read"),
    ("POST", "/admin/roles", "roles:write"),
    ("GET", "/admin/roles/{name}", "roles:read"),
    ("PATCH", "/admin/roles/{name}", "roles:write"),
    ("DELETE", "/admin/roles/{name}", "roles:write"),
    ("GET", "/admin/roles/{name}/permissions", "roles:read"),
    ("POST", "/admin/roles/{name}/permissions", "roles:write"),
    ("DELETE", "/admin/roles/{name}/permissions/{code}", "roles:write"),
    ("GET", "/admin/permissions", "roles:read"),
    ("GET", "/admin/audit", "audit:read"),
    ("GET", "/admin/clients", "clients:read"),
    ("POST", "/admin/clients", "clients:write"),
    ("GET", "/admin/clients/{client_id}", "clients:read"),
    ("PATCH", "/admin/clients/{client_id}", "clients:write"),
    ("DELETE", "/admin/clients/{client_id}", "clients:write"),
    ("POST", "/admin/clients/{client_id}/secrets", "clients:write"),
    ("PUT", "/admin/clients/{client_id}/roles/{name}", "clients:write"),
    ("DELETE", "/admin/clients/{client_id}/roles/{name}", "clients:write"),
]


def _app(client: AsyncClient) -> FastAPI:
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    return app


def _concrete(path: str) -> str:
    """Fill path parameters with targets that do not exist: the guard must answer first."""
    return path.format(
        user_id=uuid.uuid4(), name="no-such-role", code="users:read", client_id="no-such-client"
    )


async def _call(client: AsyncClient, method: str, path: str, headers: Headers) -> Response:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return await client.request(method, _concrete(path), headers=headers, json=body)


async def _token_with(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    username: str,
    permissions: list[str],
) -> Headers:
    """Log in a fresh user whose only role grants exactly `permissions`."""
    role = f"{username}-role"
    await roles_service.create_role(
        session, RoleCreate(name=role, permissions=permissions), actor=SYSTEM
    )
    await make_user(session, settings, username, roles=[role])
    response = await admin_login(client, username)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


@pytest.fixture
async def root(client: AsyncClient, session: AsyncSession, settings: Settings) -> Headers:
    """The one administrator: holds the `admin` role."""
    await make_user(session, settings, "root", roles=["admin"])
    return bearer((await admin_login(client, "root")).json()["access_token"])


async def _user_id(client: AsyncClient, headers: Headers, username: str) -> str:
    page = (await client.get("/admin/users", params={"username": username}, headers=headers)).json()
    matches = [item["id"] for item in page["items"] if item["username"] == username]
    assert len(matches) == 1, page
    return str(matches[0])


# Which route needs which permission -------------------------------------------------------


def test_every_admin_route_declares_the_permission_in_the_table(client: AsyncClient) -> None:
    # Every /admin operation the app serves, as OpenAPI documents it for clients...
    spec = _app(client).openapi()
    documented = {
        (method.upper(), path, operation.get("x-required-permission"))
        for path, operations in spec["paths"].items()
        if path.startswith("/admin")
        for method, operation in operations.items()
    }
    assert documented == set(ROUTES)
    for method, path, code in ROUTES:
        assert f"`{code}`" in spec["paths"][path][method.lower()]["description"]
    # ...and as the routes' dependency trees enforce it.
    enforced = {
        (method, route.path, code)
        for router in (
            admin_users.router,
            admin_roles.router,
            admin_audit.router,
            admin_clients.router,
        )
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
        for code in route_permissions(route)
    }
    assert enforced == set(ROUTES)


def test_an_admin_route_without_a_permission_cannot_be_built() -> None:
    router = APIRouter(prefix="/admin", route_class=PermissionRoute)
    with pytest.raises(RuntimeError, match="exactly one permission"):

        @router.get("/open")
        async def open_route() -> None:
            return None


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
async def test_a_caller_lacking_the_permission_gets_403(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    method: str,
    path: str,
    permission: str,
) -> None:
    others = [code for code in PERMISSIONS if code != permission]
    lacking = await _token_with(client, session, settings, "lacking", others)
    response = await _call(client, method, path, lacking)
    assert response.status_code == 403, response.text
    assert permission in response.json()["detail"]

    # The same route with only that permission passes the guard (404/422 on the fake target).
    only = await _token_with(client, session, settings, "only", [permission])
    response = await _call(client, method, path, only)
    assert response.status_code not in {401, 403}, response.text
    assert response.status_code < 500


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
async def test_no_valid_token_is_401_bearer(
    client: AsyncClient, method: str, path: str, permission: str
) -> None:
    for headers in ({}, bearer("not.a.token"), {"Authorization": "Basic cm9vdDpyb290"}):
        response = await _call(client, method, path, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "detail" in response.json()


async def test_a_disabled_admin_is_401(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    await make_user(session, settings, "second", roles=["admin"])
    second = bearer((await admin_login(client, "second")).json()["access_token"])
    second_id = await _user_id(client, root, "second")
    response = await client.patch(
        f"/admin/users/{second_id}", json={"is_active": False}, headers=root
    )
    assert response.status_code == 200, response.text
    assert (await client.get("/admin/users", headers=second)).status_code == 401


async def test_a_removed_role_or_permission_stops_working_on_the_next_request(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    reader = await _token_with(client, session, settings, "reader", ["users:read"])
    reader_id = await _user_id(client, root, "reader")
    assert (await client.get("/admin/users", headers=reader)).status_code == 200
    revoked = await client.delete(f"/admin/users/{reader_id}/roles/reader-role", headers=root)
    assert revoked.status_code == 204
    assert (await client.get("/admin/users", headers=reader)).status_code == 403
    assert (await client.get("/me", headers=reader)).json()["permissions"] == []

    # Taking a permission from a role works just as fast for every holder.
    granted = await client.post(
        f"/admin/users/{reader_id}/roles", json={"role": "reader-role"}, headers=root
    )
    assert granted.status_code == 201
    assert (await client.get("/admin/users", headers=reader)).status_code == 200
    response = await client.delete("/admin/roles/reader-role/permissions/users:read", headers=root)
    assert response.status_code == 204
    assert (await client.get("/admin/users", headers=reader)).status_code == 403


async def test_me_shows_current_roles_and_effective_permissions(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    headers = await _token_with(client, session, settings, "meg", ["users:read", "audit:read"])
    profile = (await client.get("/me", headers=headers)).json()
    assert profile["username"] == "meg"
    assert profile["roles"] == ["meg-role"]
    assert profile["permissions"] == ["audit:read", "users:read"]
    await client.post(
        "/admin/roles", json={"name": "extra", "permissions": ["roles:read"]}, headers=root
    )
    meg_id = await _user_id(client, root, "meg")
    await client.post(f"/admin/users/{meg_id}/roles", json={"role": "extra"}, headers=root)
    profile = (await client.get("/me", headers=headers)).json()
    assert profile["roles"] == ["extra", "meg-role"]
    assert profile["permissions"] == ["audit:read", "roles:read", "users:read"]


# A full scenario -----------------------------------------------------------------------------


async def test_full_admin_scenario(client: AsyncClient, root: Headers) -> None:
    catalogue = (await client.get("/admin/permissions", headers=root)).json()
    assert {item["code"] for item in catalogue} == set(PERMISSIONS)
    assert all(item["description"] for item in catalogue)

    # Roles: create, grant and revoke permissions, rename.
    response = await client.post(
        "/admin/roles",
        json={"name": "support", "description": "Help desk", "permissions": ["users:read"]},
        headers=root,
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/admin/roles/support"
    assert response.json()["permissions"] == ["users:read"]
    grant = {"permission": "users:write"}
    response = await client.post("/admin/roles/support/permissions", json=grant, headers=root)
    assert response.status_code == 201
    assert [p["code"] for p in response.json()] == ["users:read", "users:write"]
    response = await client.post("/admin/roles/support/permissions", json=grant, headers=root)
    assert response.status_code == 200  # already held: nothing changes
    response = await client.delete("/admin/roles/support/permissions/users:write", headers=root)
    assert response.status_code == 204
    response = await client.delete("/admin/roles/support/permissions/users:write", headers=root)
    assert response.status_code == 404
    listed = (await client.get("/admin/roles/support/permissions", headers=root)).json()
    assert [p["code"] for p in listed] == ["users:read"]
    response = await client.patch(
        "/admin/roles/support", json={"name": "helpdesk", "description": "Tier 1"}, headers=root
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "helpdesk"
    assert response.json()["description"] == "Tier 1"
    assert (await client.get("/admin/roles/support", headers=root)).status_code == 404
    assert (await client.get("/admin/roles/helpdesk", headers=root)).status_code == 200
    await client.post(
        "/admin/roles", json={"name": "auditor", "permissions": ["audit:read"]}, headers=root
    )
    names = [role["name"] for role in (await client.get("/admin/roles", headers=root)).json()]
    assert names == ["admin", "auditor", "helpdesk"]

    # Users: create with a password and a role, read, list, update.
    response = await client.post(
        "/admin/users",
        json={
            "username": "bob",
            "email": "bob@example.com",
            "password": PASSWORD,
            "roles": ["helpdesk"],
        },
        headers=root,
    )
    assert response.status_code == 201, response.text
    bob = response.json()
    assert response.headers["location"] == f"/admin/users/{bob['id']}"
    assert bob["roles"] == ["helpdesk"] and bob["is_active"] is True
    assert not {"password", "password_hash"} & set(bob)
    assert PASSWORD not in response.text
    assert (await client.get(f"/admin/users/{bob['id']}", headers=root)).json() == bob
    page = (await client.get("/admin/users", params={"username": "B"}, headers=root)).json()
    assert page["total"] == 1 and page["items"] == [bob]
    response = await client.patch(
        f"/admin/users/{bob['id']}", json={"email": "robert@example.com"}, headers=root
    )
    assert response.status_code == 200
    assert response.json()["email"] == "robert@example.com"

    # A user created without a password cannot log in until an admin sets one.
    response = await client.post(
        "/admin/users", json={"username": "carol", "email": "carol@example.com"}, headers=root
    )
    assert response.status_code == 201
    carol_id = response.json()["id"]
    assert (await login(client, "carol")).status_code == 400
    response = await client.put(
        f"/admin/users/{carol_id}/password", json={"password": "short"}, headers=root
    )
    assert response.status_code == 422 and "at least 8" in response.text
    response = await client.put(
        f"/admin/users/{carol_id}/password", json={"password": "carol's passphrase"}, headers=root
    )
    assert response.status_code == 204
    assert (await login(client, "carol", "carol's passphrase")).status_code == 200

    # Roles of a user: grant, list, revoke; bob's permissions follow at once.
    bob_token = bearer((await admin_login(client, "bob")).json()["access_token"])
    assert (await client.get("/admin/audit", headers=bob_token)).status_code == 403
    response = await client.post(
        f"/admin/users/{bob['id']}/roles", json={"role": "auditor"}, headers=root
    )
    assert response.status_code == 201
    assert response.json() == ["auditor", "helpdesk"]
    response = await client.post(
        f"/admin/users/{bob['id']}/roles", json={"role": "auditor"}, headers=root
    )
    assert response.status_code == 200
    roles = await client.get(f"/admin/users/{bob['id']}/roles", headers=root)
    assert roles.json() == ["auditor", "helpdesk"]
    assert (await client.get("/admin/audit", headers=bob_token)).status_code == 200
    assert (await client.get("/admin/users", headers=bob_token)).status_code == 200
    assert (
        await client.post("/admin/roles", json={"name": "x"}, headers=bob_token)
    ).status_code == 403
    response = await client.delete(f"/admin/users/{bob['id']}/roles/auditor", headers=root)
    assert response.status_code == 204
    assert (await client.get("/admin/audit", headers=bob_token)).status_code == 403

    # A role in use is deleted only with force=true, which revokes it from its holders.
    response = await client.delete("/admin/roles/helpdesk", headers=root)
    assert response.status_code == 409 and "force" in response.json()["detail"]
    response = await client.delete("/admin/roles/helpdesk", params={"force": "true"}, headers=root)
    assert response.status_code == 204
    assert (await client.get("/admin/users", headers=bob_token)).status_code == 403
    assert (await client.get("/me", headers=bob_token)).json()["roles"] == []
    response = await client.delete("/admin/roles/auditor", headers=root)
    assert response.status_code == 204

    # Disable, then delete.
    response = await client.patch(
        f"/admin/users/{bob['id']}", json={"is_active": False}, headers=root
    )
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert (await client.get("/me", headers=bob_token)).status_code == 401
    assert (await login(client, "bob")).status_code == 400
    assert (await client.delete(f"/admin/users/{bob['id']}", headers=root)).status_code == 204
    assert (await client.get(f"/admin/users/{bob['id']}", headers=root)).status_code == 404
    assert (await client.delete(f"/admin/users/{bob['id']}", headers=root)).status_code == 404

    # Every change above is in the audit log, newest first, attributed to root; before them,
    # only root's own creation by the test fixture (outside the API: actor "system").
    audit = await client.get("/admin/audit", params={"limit": 500}, headers=root)
    assert audit.status_code == 200
    *events, fixture = audit.json()["items"]
    assert (fixture["action"], fixture["actor_username"]) == ("user.create", "system")
    assert [e["action"] for e in reversed(events)] == [
        "role.create",
        "role.permission_grant",
        "role.permission_revoke",
        "role.update",
        "role.create",
        "user.create",
        "user.update",
        "user.create",
        "user.password_set",
        "user.role_grant",
        "user.role_revoke",
        "role.delete",
        "role.delete",
        "user.update",
        "user.delete",
    ]
    root_id = await _user_id(client, root, "root")
    assert {e["actor_id"] for e in events} == {root_id}
    assert {e["actor_username"] for e in events} == {"root"}
    assert {e["client_address"] for e in events} == {"127.0.0.1"}
    assert events[0]["target_type"] == "user" and events[0]["target_id"] == bob["id"]
    assert events[0]["details"] == {"username": "bob", "email": "robert@example.com"}
    rename = next(e for e in events if e["action"] == "role.update")
    assert rename["target_id"] == "helpdesk"
    assert rename["details"]["name"] == {"from": "support", "to": "helpdesk"}
    forced = next(
        e for e in events if e["action"] == "role.delete" and e["target_id"] == "helpdesk"
    )
    assert forced["details"] == {"revoked_from_users": 1}
    # Secrets never reach the log.
    assert PASSWORD not in audit.text and "carol's passphrase" not in audit.text
    assert "$2b$" not in audit.text


# 404, 409, 422 -------------------------------------------------------------------------------


async def test_unknown_ids_are_404_and_malformed_ids_422(
    client: AsyncClient, root: Headers
) -> None:
    missing = uuid.uuid4()
    for method, path in [
        ("GET", f"/admin/users/{missing}"),
        ("PATCH", f"/admin/users/{missing}"),
        ("DELETE", f"/admin/users/{missing}"),
        ("GET", f"/admin/users/{missing}/roles"),
        ("DELETE", f"/admin/users/{missing}/roles/admin"),
        ("GET", "/admin/roles/ghost"),
        ("PATCH", "/admin/roles/ghost"),
        ("DELETE", "/admin/roles/ghost"),
        ("GET", "/admin/roles/ghost/permissions"),
        ("DELETE", "/admin/roles/ghost/permissions/users:read"),
        ("DELETE", "/admin/roles/admin/permissions/no:such"),
    ]:
        body = {} if method == "PATCH" else None
        response = await client.request(method, path, json=body, headers=root)
        assert response.status_code == 404, (method, path, response.text)
        assert "detail" in response.json()
    for path, body in [
        (f"/admin/users/{missing}/password", {"password": PASSWORD}),
    ]:
        assert (await client.put(path, json=body, headers=root)).status_code == 404
    for path, body in [
        (f"/admin/users/{missing}/roles", {"role": "admin"}),
        ("/admin/roles/ghost/permissions", {"permission": "users:read"}),
        ("/admin/roles/admin/permissions", {"permission": "no:such"}),
        ("/admin/users", {"username": "x", "email": "x@example.com", "roles": ["ghost"]}),
        ("/admin/roles", {"name": "x", "permissions": ["no:such"]}),
    ]:
        response = await client.post(path, json=body, headers=root)
        assert response.status_code == 404, (path, response.text)
    for path in ["/admin/users/not-a-uuid", "/admin/users/123/roles", "/admin/roles/bad%00name"]:
        response = await client.get(path, headers=root)
        assert response.status_code == 422, (path, response.text)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/users", {"username": "has space", "email": "a@example.com"}),
        ("POST", "/admin/users", {"username": "", "email": "a@example.com"}),
        ("POST", "/admin/users", {"username": "a" * 151, "email": "a@example.com"}),
        ("POST", "/admin/users", {"username": "nul\u0000", "email": "a@example.com"}),
        ("POST", "/admin/users", {"username": "ok", "email": "not-an-email"}),
        ("POST", "/admin/users", {"username": "ok", "email": "a\u0000@example.com"}),
        ("POST", "/admin/users", {"username": "ok", "email": "a@example.com", "admin": True}),
        ("POST", "/admin/users", {"username": "ok", "email": "a@example.com", "password": "x"}),
        (
            "POST",
            "/admin/users",
            {"username": "ok", "email": "a@example.com", "password": "é" * 37},
        ),
        ("POST", "/admin/users", {"username": "ok", "email": "a@example.com", "roles": "admin"}),
        ("POST", "/admin/users", {"username": 10**30, "email": "a@example.com"}),
        ("POST", "/admin/users", []),
        ("POST", "/admin/roles", {"name": "bad name"}),
        ("POST", "/admin/roles", {"name": "ok", "description": "nul\u0000"}),
        ("POST", "/admin/roles", {"name": "ok", "description": "x" * 501}),
        ("POST", "/admin/roles", {"name": "ok", "permissions": ["nul\u0000"]}),
        ("PATCH", "/admin/roles/admin", {"name": "bad/name"}),
        ("POST", "/admin/roles/admin/permissions", {"permission": "nul\u0000"}),
        ("POST", "/admin/roles/admin/permissions", {}),
        ("GET", "/admin/users?limit=0", None),
        ("GET", "/admin/users?limit=501", None),
        ("GET", "/admin/users?offset=-1", None),
        ("GET", f"/admin/users?offset={10**30}", None),
        ("GET", "/admin/users?username=%00", None),
        ("GET", "/admin/users?email=a%00", None),
        ("GET", "/admin/users?role=%00", None),
        ("GET", "/admin/users?active=maybe", None),
        ("GET", "/admin/audit?limit=100000", None),
        ("GET", "/admin/audit?actor_id=nope", None),
        ("GET", "/admin/audit?target_id=%00", None),
        ("DELETE", "/admin/roles/admin/permissions/nul%00", None),
    ],
)
async def test_invalid_input_is_422_and_never_echoes_it(
    client: AsyncClient, root: Headers, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body, headers=root)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], (list, str))
    assert "éééé" not in response.text


async def test_malformed_json_is_422(client: AsyncClient, root: Headers) -> None:
    for content in (b"{", b"\xff\xfe", b'{"username": "a"' + b" " * 10):
        response = await client.post(
            "/admin/users",
            content=content,
            headers={**root, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text


async def test_duplicates_are_409_from_the_unique_constraints(
    client: AsyncClient, root: Headers
) -> None:
    alice = {"username": "alice", "email": "alice@example.com"}
    assert (await client.post("/admin/users", json=alice, headers=root)).status_code == 201
    for duplicate in (
        {"username": "ALICE", "email": "other@example.com"},
        {"username": "alice2", "email": "Alice@Example.COM"},
    ):
        response = await client.post("/admin/users", json=duplicate, headers=root)
        assert response.status_code == 409, response.text
        assert response.json() == {"detail": "a user with this username or email already exists"}
    dave = (
        await client.post(
            "/admin/users", json={"username": "dave", "email": "dave@example.com"}, headers=root
        )
    ).json()
    response = await client.patch(
        f"/admin/users/{dave['id']}", json={"email": "ALICE@example.com"}, headers=root
    )
    assert response.status_code == 409
    current = (await client.get(f"/admin/users/{dave['id']}", headers=root)).json()
    assert current["email"] == "dave@example.com"  # nothing half-applied

    assert (
        await client.post("/admin/roles", json={"name": "ops"}, headers=root)
    ).status_code == 201
    assert (
        await client.post("/admin/roles", json={"name": "ops"}, headers=root)
    ).status_code == 409
    assert (
        await client.post("/admin/roles", json={"name": "dev"}, headers=root)
    ).status_code == 201
    response = await client.patch("/admin/roles/dev", json={"name": "ops"}, headers=root)
    assert response.status_code == 409
    assert (await client.get("/admin/roles/dev", headers=root)).status_code == 200
    # A failed change leaves no audit event behind.
    audit = (await client.get("/admin/audit", params={"limit": 500}, headers=root)).json()
    assert [e["action"] for e in audit["items"]].count("user.create") == 3  # root, alice, dave
    assert [e["action"] for e in audit["items"]].count("role.update") == 0


# The admin role ------------------------------------------------------------------------------


async def test_the_admin_role_cannot_be_renamed_deleted_or_reduced(
    client: AsyncClient, root: Headers
) -> None:
    response = await client.patch("/admin/roles/admin", json={"name": "boss"}, headers=root)
    assert response.status_code == 409
    response = await client.patch(
        "/admin/roles/admin", json={"description": "Runs the place"}, headers=root
    )
    assert response.status_code == 200 and response.json()["description"] == "Runs the place"
    for params in ({}, {"force": "true"}):
        response = await client.delete("/admin/roles/admin", params=params, headers=root)
        assert response.status_code == 409
    response = await client.delete("/admin/roles/admin/permissions/users:read", headers=root)
    assert response.status_code == 409
    admin = (await client.get("/admin/roles/admin", headers=root)).json()
    assert admin["permissions"] == sorted(PERMISSIONS)


async def test_the_last_active_admin_cannot_be_removed(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    root_id = await _user_id(client, root, "root")
    # A disabled admin does not count as a remaining admin.
    await make_user(session, settings, "dormant", roles=["admin"], active=False)
    attempts = [
        ("DELETE", f"/admin/users/{root_id}/roles/admin", None),
        ("PATCH", f"/admin/users/{root_id}", {"is_active": False}),
        ("DELETE", f"/admin/users/{root_id}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=root)
        assert response.status_code == 409, (method, path, response.text)
        assert "admin" in response.json()["detail"]
    assert (await client.get("/me", headers=root)).json()["roles"] == ["admin"]

    # With a second active admin, root may step down; then the second one is the last.
    await make_user(session, settings, "second", roles=["admin"])
    second_id = await _user_id(client, root, "second")
    response = await client.delete(f"/admin/users/{root_id}/roles/admin", headers=root)
    assert response.status_code == 204
    second = bearer((await admin_login(client, "second")).json()["access_token"])
    response = await client.patch(
        f"/admin/users/{second_id}", json={"is_active": False}, headers=second
    )
    assert response.status_code == 409
    # Re-enabling the dormant admin makes another admin available again.
    dormant_id = await _user_id(client, second, "dormant")
    response = await client.patch(
        f"/admin/users/{dormant_id}", json={"is_active": True}, headers=second
    )
    assert response.status_code == 200
    assert (await client.delete(f"/admin/users/{second_id}", headers=second)).status_code == 204


# No escalation -------------------------------------------------------------------------------


async def test_nobody_hands_out_more_than_they_hold(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk = await _token_with(client, session, settings, "clerk", ["users:read", "users:write"])
    root_id = await _user_id(client, root, "root")
    # A clerk manages plain users, not stronger accounts.
    plain = await client.post(
        "/admin/users", json={"username": "plain", "email": "plain@example.com"}, headers=clerk
    )
    assert plain.status_code == 201
    response = await client.put(
        f"/admin/users/{plain.json()['id']}/password", json={"password": PASSWORD}, headers=clerk
    )
    assert response.status_code == 204
    for method, path, body in [
        ("PUT", f"/admin/users/{root_id}/password", {"password": "taken over!"}),
        ("PATCH", f"/admin/users/{root_id}", {"email": "clerk@example.com"}),
        ("DELETE", f"/admin/users/{root_id}", None),
    ]:
        response = await client.request(method, path, json=body, headers=clerk)
        assert response.status_code == 403, (method, path, response.text)
    # Creating a user with roles is granting them: it needs roles:write.
    response = await client.post(
        "/admin/users",
        json={"username": "sock", "email": "sock@example.com", "roles": ["clerk-role"]},
        headers=clerk,
    )
    assert response.status_code == 403
    assert "roles:write" in response.json()["detail"]

    granter = await _token_with(client, session, settings, "granter", ["roles:write", "users:read"])
    granter_id = await _user_id(client, root, "granter")
    plain_id = plain.json()["id"]
    for path, body in [
        (f"/admin/users/{granter_id}/roles", {"role": "admin"}),
        (f"/admin/users/{plain_id}/roles", {"role": "clerk-role"}),  # users:write it lacks
        ("/admin/roles/granter-role/permissions", {"permission": "audit:read"}),
        ("/admin/roles", {"name": "sneaky", "permissions": ["audit:read"]}),
    ]:
        response = await client.post(path, json=body, headers=granter)
        assert response.status_code == 403, (path, response.text)
    await client.post(
        "/admin/roles", json={"name": "readers", "permissions": ["users:read"]}, headers=root
    )
    response = await client.post(
        f"/admin/users/{plain_id}/roles", json={"role": "readers"}, headers=granter
    )
    assert response.status_code == 403  # a role it does not hold (tests/test_rbac.py)
    response = await client.post(
        f"/admin/users/{plain_id}/roles", json={"role": "granter-role"}, headers=granter
    )
    assert response.status_code == 201
    assert (await client.get("/me", headers=root)).json()["roles"] == ["admin"]


# Listing and the audit log -------------------------------------------------------------------


async def test_list_users_paginates_and_filters(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    await roles_service.create_role(session, RoleCreate(name="staff"), actor=SYSTEM)
    for i in range(7):
        await make_user(
            session, settings, f"user{i}", roles=["staff"] if i % 2 else [], active=i != 6
        )

    async def page(**params: Any) -> dict[str, Any]:
        response = await client.get("/admin/users", params=params, headers=root)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = await page(username="user", limit=3)
    assert first["total"] == 7 and first["limit"] == 3 and first["offset"] == 0
    assert [u["username"] for u in first["items"]] == ["user0", "user1", "user2"]
    last = await page(username="user", limit=3, offset=6)
    assert [u["username"] for u in last["items"]] == ["user6"]
    assert (await page(username="user", offset=100))["items"] == []
    staff = await page(role="staff")
    assert [u["username"] for u in staff["items"]] == ["user1", "user3", "user5"]
    assert all(u["roles"] == ["staff"] for u in staff["items"])
    assert (await page(role="nobody-has-this"))["total"] == 0
    inactive = await page(active="false")
    assert [u["username"] for u in inactive["items"]] == ["user6"]
    assert (await page(active="true", username="user"))["total"] == 6
    assert [u["username"] for u in (await page(email="USER4@"))["items"]] == ["user4"]
    # LIKE wildcards in a prefix are literal characters.
    assert (await page(username="user_"))["total"] == 0
    assert (await page(email="%"))["total"] == 0


async def test_audit_log_paginates_newest_first_and_filters(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    created = []
    for i in range(5):
        response = await client.post(
            "/admin/users",
            json={"username": f"audited{i}", "email": f"audited{i}@example.com"},
            headers=root,
        )
        created.append(response.json()["id"])
    await client.patch(f"/admin/users/{created[0]}", json={"is_active": False}, headers=root)

    response = await client.get("/admin/audit", params={"limit": 2}, headers=root)
    body = response.json()
    assert body["total"] == 7 and body["limit"] == 2 and len(body["items"]) == 2  # with root's
    assert [e["action"] for e in body["items"]] == ["user.update", "user.create"]
    assert body["items"][1]["target_id"] == created[4]
    assert body["items"][0]["details"]["is_active"] == {"from": True, "to": False}
    ids = [e["id"] for e in body["items"]]
    assert ids == sorted(ids, reverse=True)
    at = [e["at"] for e in body["items"]]
    assert at == sorted(at, reverse=True)
    rest = (await client.get("/admin/audit", params={"limit": 4, "offset": 2}, headers=root)).json()
    assert [e["target_id"] for e in rest["items"]] == created[3::-1]

    by_target = await client.get("/admin/audit", params={"target_id": created[0]}, headers=root)
    assert [e["action"] for e in by_target.json()["items"]] == ["user.update", "user.create"]
    by_action = await client.get("/admin/audit", params={"action": "user.update"}, headers=root)
    assert by_action.json()["total"] == 1
    root_id = await _user_id(client, root, "root")
    by_actor = await client.get("/admin/audit", params={"actor_id": root_id}, headers=root)
    assert by_actor.json()["total"] == 6
    other = await client.get("/admin/audit", params={"actor_id": str(uuid.uuid4())}, headers=root)
    assert other.json()["total"] == 0


async def test_changes_outside_the_api_are_audited_as_system(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    """The CLI calls the same services without an actor: the log still says something."""
    user = await make_user(session, settings, "cli-made")
    await users_service.set_active(session, user, False, actor=SYSTEM, now=datetime.now(UTC))
    events = (await client.get("/admin/audit", headers=root)).json()["items"]
    mine = [e for e in events if e["target_id"] == str(user.id)]
    assert [(e["action"], e["actor_username"], e["actor_id"]) for e in mine] == [
        ("user.update", "system", None),
        ("user.create", "system", None),
    ]


# Statement count -----------------------------------------------------------------------------


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the test runs."""
    with sql_statements(engine) as sent:
        yield sent


async def test_listing_users_costs_the_same_statements_whatever_the_page_size(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    root: Headers,
    statements: list[str],
) -> None:
    await roles_service.create_role(session, RoleCreate(name="team-a"), actor=SYSTEM)
    await roles_service.create_role(session, RoleCreate(name="team-b"), actor=SYSTEM)
    for i in range(40):
        await make_user(
            session, settings, f"member{i:02}", roles=["team-a", "team-b"], password=None
        )
    await session.flush()

    async def count_for(limit: int) -> int:
        statements.clear()
        response = await client.get(
            "/admin/users", params={"limit": limit, "username": "member"}, headers=root
        )
        assert response.status_code == 200
        assert len(response.json()["items"]) == limit
        assert all(item["roles"] == ["team-a", "team-b"] for item in response.json()["items"])
        return len(statements)

    small, large = await count_for(1), await count_for(40)
    assert small == large, json.dumps(statements, indent=1)
    assert large <= 10


async def test_admin_unlock_lifts_a_lockout_and_is_audited(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    user = await make_user(session, settings, "locked-out")
    for _ in range(settings.lockout_threshold):
        assert (await login(client, "locked-out", "wrong password!")).status_code == 400
    assert (await login(client, "locked-out")).status_code == 400  # locked: the right one fails
    response = await client.post(f"/admin/users/{user.id}/unlock", headers=root)
    assert response.status_code == 200
    assert response.json()["locked_until"] is None
    assert (await login(client, "locked-out")).status_code == 200
    events = (await client.get("/admin/audit", headers=root)).json()["items"]
    unlocked = next(e for e in events if e["action"] == "user.unlocked")
    assert unlocked["target_id"] == str(user.id)
    assert unlocked["actor_username"] == "root"
    assert any(e["action"] == "user.locked" and e["target_id"] == str(user.id) for e in events)
