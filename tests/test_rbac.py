"""Who may grant what (issue 13, items 2, 3 and 14): the attacks a low-privilege administrator
tried, each refused, and what the same actor may still do.

The rule (idp.services.permissions): an actor hands out, changes or takes away only what it
holds itself; a role counts as held only by holding it, whatever idp permissions it carries.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import ConflictError, PermissionDeniedError
from idp.configuration.settings import Settings
from idp.schemas.roles import RoleCreate
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.permissions import SYSTEM, Actor, ensure_may_manage
from tests.conftest import make_settings
from tests.helpers import PASSWORD, admin_login, bearer, login, make_user

Headers = dict[str, str]


async def _headers(client: AsyncClient, username: str) -> Headers:
    response = await admin_login(client, username)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


async def _actor(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    username: str,
    permissions: list[str],
    *,
    extra_roles: tuple[str, ...] = (),
) -> tuple[Headers, str]:
    """A user whose own role grants exactly `permissions`, plus `extra_roles`; headers and id."""
    await roles_service.create_role(
        session, RoleCreate(name=f"{username}-role", permissions=permissions), actor=SYSTEM
    )
    user = await make_user(session, settings, username, roles=[f"{username}-role", *extra_roles])
    return await _headers(client, username), str(user.id)


@pytest.fixture
async def root(client: AsyncClient, session: AsyncSession, settings: Settings) -> Headers:
    await make_user(session, settings, "root", roles=["admin"])
    return await _headers(client, "root")


@pytest.fixture
async def downstream_roles(session: AsyncSession) -> None:
    """`sales`: no idp permission, powers in another service; `ops`: reads the audit log."""
    await roles_service.create_role(session, RoleCreate(name="sales"), actor=SYSTEM)
    await roles_service.create_role(
        session, RoleCreate(name="ops", permissions=["audit:read"]), actor=SYSTEM
    )
    await roles_service.create_role(session, RoleCreate(name="team"), actor=SYSTEM)


ROLE_ADMIN = ["roles:read", "roles:write", "users:read"]


# Item 2: role escalation by roles:write -------------------------------------------------------


@pytest.mark.usefixtures("downstream_roles")
async def test_roles_write_cannot_grant_itself_a_role_it_does_not_hold(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    actor, actor_id = await _actor(client, session, settings, "mallory", ROLE_ADMIN)
    for role in ("sales", "SALES", "ops", "admin"):
        response = await client.post(
            f"/admin/users/{actor_id}/roles", json={"role": role}, headers=actor
        )
        assert response.status_code == 403, (role, response.text)
    assert (await client.get("/me", headers=actor)).json()["roles"] == ["mallory-role"]


@pytest.mark.usefixtures("downstream_roles")
async def test_roles_write_cannot_empty_a_role_then_take_it(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    actor, actor_id = await _actor(client, session, settings, "mallory", ROLE_ADMIN)
    response = await client.delete("/admin/roles/ops/permissions/audit:read", headers=actor)
    assert response.status_code == 403, response.text
    response = await client.post(
        f"/admin/users/{actor_id}/roles", json={"role": "ops"}, headers=actor
    )
    assert response.status_code == 403
    ops = (await client.get("/admin/roles/ops", headers=root)).json()
    assert ops["permissions"] == ["audit:read"]


@pytest.mark.usefixtures("downstream_roles")
async def test_roles_write_cannot_change_permissions_of_a_role_it_does_not_hold(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    await roles_service.create_role(
        session, RoleCreate(name="readers", permissions=["users:read"]), actor=SYSTEM
    )
    actor, _ = await _actor(client, session, settings, "mallory", ROLE_ADMIN)
    for method, path, body in [
        ("DELETE", "/admin/roles/readers/permissions/users:read", None),
        ("POST", "/admin/roles/sales/permissions", {"permission": "users:read"}),
        # Holding the role is not enough for a permission it lacks itself.
        ("POST", "/admin/roles/mallory-role/permissions", {"permission": "audit:read"}),
    ]:
        response = await client.request(method, path, json=body, headers=actor)
        assert response.status_code == 403, (method, path, response.text)
    assert (await client.get("/admin/roles/readers", headers=root)).json()["permissions"] == [
        "users:read"
    ]
    assert (await client.get("/admin/roles/sales", headers=root)).json()["permissions"] == []
    # Its own role, and a permission it holds: allowed (and taking it away again).
    response = await client.delete(
        "/admin/roles/mallory-role/permissions/users:read", headers=actor
    )
    assert response.status_code == 204


@pytest.mark.usefixtures("downstream_roles")
async def test_force_delete_needs_managing_every_holder(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    actor, _ = await _actor(client, session, settings, "mallory", ROLE_ADMIN, extra_roles=("team",))
    await make_user(session, settings, "boss", roles=["team", "sales"])
    response = await client.delete("/admin/roles/team", params={"force": "true"}, headers=actor)
    assert response.status_code == 403, response.text
    # A role it does not hold is not its to delete, even with nobody holding it.
    await roles_service.create_role(session, RoleCreate(name="unused"), actor=SYSTEM)
    assert (await client.delete("/admin/roles/unused", headers=actor)).status_code == 403
    assert (await client.get("/admin/roles/team", headers=root)).status_code == 200
    assert (await client.get("/admin/roles/unused", headers=root)).status_code == 200
    # Once every holder is one it may manage, the forced deletion goes through.
    boss = (await client.get("/admin/users", params={"username": "boss"}, headers=root)).json()
    boss_id = boss["items"][0]["id"]
    assert (
        await client.delete(f"/admin/users/{boss_id}/roles/sales", headers=root)
    ).status_code == 204
    response = await client.delete("/admin/roles/team", params={"force": "true"}, headers=actor)
    assert response.status_code == 204, response.text


@pytest.mark.usefixtures("downstream_roles")
async def test_renames_and_descriptions_are_checked(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    actor, _ = await _actor(client, session, settings, "mallory", ROLE_ADMIN, extra_roles=("team",))
    for name, body in [
        ("sales", {"name": "sales-old"}),
        ("sales", {"description": "mine now"}),
        # Renaming its own role hands every holder a name nobody holds: admins only.
        ("team", {"name": "sales2"}),
    ]:
        response = await client.patch(f"/admin/roles/{name}", json=body, headers=actor)
        assert response.status_code == 403, (name, body, response.text)
    response = await client.patch("/admin/roles/team", json={"description": "ours"}, headers=actor)
    assert response.status_code == 200
    response = await client.patch("/admin/roles/sales", json={"name": "sales-eu"}, headers=root)
    assert response.status_code == 200


@pytest.mark.usefixtures("downstream_roles")
async def test_what_a_role_holder_may_still_hand_out(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    actor, _ = await _actor(client, session, settings, "lead", ROLE_ADMIN, extra_roles=("team",))
    newbie = await make_user(session, settings, "newbie")
    path = f"/admin/users/{newbie.id}/roles"
    assert (await client.post(path, json={"role": "Team"}, headers=actor)).status_code == 201
    assert (await client.post(path, json={"role": "sales"}, headers=actor)).status_code == 403
    assert (await client.delete(f"{path}/team", headers=actor)).status_code == 204
    # A user holding a role the actor lacks is out of reach, even for a role the actor holds.
    assert (await client.post(path, json={"role": "sales"}, headers=root)).status_code == 201
    assert (await client.post(path, json={"role": "team"}, headers=actor)).status_code == 403
    # Creating a user with roles is granting them.
    hr, _ = await _actor(
        client, session, settings, "hrlead", ["users:write", "roles:write"], extra_roles=("team",)
    )
    for role, status in (("sales", 403), ("team", 201)):
        response = await client.post(
            "/admin/users",
            json={"username": f"new-{role}", "email": f"{role}@example.com", "roles": [role]},
            headers=hr,
        )
        assert response.status_code == status, response.text


# Item 3: account takeover by users:write ------------------------------------------------------

CLERK = ["users:read", "users:write"]


@pytest.mark.usefixtures("downstream_roles")
async def test_a_clerk_cannot_take_over_a_user_whose_roles_it_lacks(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk, _ = await _actor(client, session, settings, "clerk", CLERK)
    seller = await make_user(session, settings, "seller", roles=["sales"])
    for method, path, body in [
        ("PUT", f"/admin/users/{seller.id}/password", {"password": "taken over, sorry"}),
        ("PATCH", f"/admin/users/{seller.id}", {"email": "clerk@example.com"}),
        ("PATCH", f"/admin/users/{seller.id}", {"is_active": False}),
        ("POST", f"/admin/users/{seller.id}/unlock", None),
        ("DELETE", f"/admin/users/{seller.id}", None),
    ]:
        response = await client.request(method, path, json=body, headers=clerk)
        assert response.status_code == 403, (method, path, response.text)
    assert (await login(client, "seller")).status_code == 200  # the password is unchanged
    assert (await login(client, "seller", "taken over, sorry")).status_code == 400


async def test_a_clerk_cannot_unlock_an_admin(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk, _ = await _actor(client, session, settings, "clerk", CLERK)
    root_id = (await client.get("/me", headers=root)).json()["id"]
    response = await client.post(f"/admin/users/{root_id}/unlock", headers=clerk)
    assert response.status_code == 403, response.text
    assert (await client.post(f"/admin/users/{root_id}/unlock", headers=root)).status_code == 200


async def test_a_clerk_still_manages_users_it_holds_every_role_of(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    clerk, _ = await _actor(client, session, settings, "clerk", CLERK)
    plain = await make_user(session, settings, "plain")
    colleague = await make_user(session, settings, "colleague", roles=["clerk-role"])
    for user in (plain, colleague):
        response = await client.put(
            f"/admin/users/{user.id}/password",
            json={"password": "a fresh passphrase"},
            headers=clerk,
        )
        assert response.status_code == 204, response.text
        assert (
            await client.post(f"/admin/users/{user.id}/unlock", headers=clerk)
        ).status_code == 200


# Item 14 (part): self-reset and case-insensitive role names ------------------------------------


async def test_nobody_resets_their_own_password_through_the_admin_api(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk, clerk_id = await _actor(client, session, settings, "clerk", CLERK)
    root_id = (await client.get("/me", headers=root)).json()["id"]
    for headers, user_id in ((clerk, clerk_id), (root, root_id)):
        response = await client.put(
            f"/admin/users/{user_id}/password", json={"password": "no current one"}, headers=headers
        )
        assert response.status_code == 403, response.text
        assert "/me/password" in response.json()["detail"]
    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "with the current one"},
        headers=clerk,
    )
    assert response.status_code == 204, response.text


async def test_role_names_are_unique_and_found_whatever_their_case(
    client: AsyncClient, session: AsyncSession, root: Headers
) -> None:
    for name in ("Admin", "ADMIN"):
        response = await client.post("/admin/roles", json={"name": name}, headers=root)
        assert response.status_code == 409, response.text
    assert (
        await client.post("/admin/roles", json={"name": "Sales"}, headers=root)
    ).status_code == 201
    assert (
        await client.post("/admin/roles", json={"name": "sales"}, headers=root)
    ).status_code == 409
    assert (
        await client.post("/admin/roles", json={"name": "ops"}, headers=root)
    ).status_code == 201
    response = await client.patch("/admin/roles/ops", json={"name": "SALES"}, headers=root)
    assert response.status_code == 409, response.text
    # Lookups find the one role whatever the case, and answer with its stored name.
    assert (await client.get("/admin/roles/ADMIN", headers=root)).json()["name"] == "admin"
    response = await client.delete("/admin/roles/aDmIn", headers=root)
    assert response.status_code == 409  # still the admin role, which cannot be deleted
    with pytest.raises(ConflictError):
        await roles_service.create_role(session, RoleCreate(name="OPS"), actor=SYSTEM)


# Races: a grant cannot slip in between the check and the change ------------------------------


async def test_a_grant_to_a_user_waits_for_a_check_on_them_in_flight(
    e2e_database: str, keys_dir: Path
) -> None:
    settings = make_settings(e2e_database, keys_dir)
    database = Database(settings)
    try:
        async with database.session() as session:
            await roles_service.create_role(session, RoleCreate(name="sales"), actor=SYSTEM)
            await roles_service.create_role(
                session, RoleCreate(name="clerks", permissions=CLERK), actor=SYSTEM
            )
            clerk = await make_user(session, settings, "clerk", roles=["clerks"])
            target = await make_user(session, settings, "target")
        actor = Actor(
            user_id=clerk.id,
            username="clerk",
            permissions=frozenset(CLERK),
            roles=frozenset({"clerks"}),
        )

        async def grant_sales() -> None:
            async with database.session() as other:
                user = await users_service.get_user(other, target.id)
                await roles_service.grant_role(other, user, "sales", actor=SYSTEM)

        async with database.session() as session:
            user = await users_service.get_user(session, target.id)
            await ensure_may_manage(session, actor, user)  # a plain user: allowed
            grant = asyncio.create_task(grant_sales())
            await asyncio.sleep(0.5)
            assert not grant.done()  # waits for the clerk's change to commit
        await asyncio.wait_for(grant, 10)

        # The other order: a grant under way is seen by the check once it commits.
        async with database.session() as session:
            await roles_service.revoke_role(
                session, await users_service.get_user(session, target.id), "sales", actor=SYSTEM
            )
        async with database.session() as granting:
            await roles_service.grant_role(
                granting, await users_service.get_user(granting, target.id), "sales", actor=SYSTEM
            )

            async def check() -> None:
                async with database.session() as session:
                    user = await users_service.get_user(session, target.id)
                    await ensure_may_manage(session, actor, user)

            checking = asyncio.create_task(check())
            await asyncio.sleep(0.5)
            assert not checking.done()
        with pytest.raises(PermissionDeniedError):
            await asyncio.wait_for(checking, 10)
    finally:
        await database.dispose()
