"""The admin API under concurrency, on real PostgreSQL transactions and a live server."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from idp.configuration.database import Database
from idp.configuration.exceptions import ConflictError
from idp.services import users as users_service
from idp.services.permissions import SYSTEM
from tests.conftest import make_settings
from tests.helpers import PASSWORD, bearer, make_user
from tests.live import LiveServer, live_server


def _log_in(server: LiveServer, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "password",
            "username": username,
            "password": password,
            "resource": f"{server.url}/admin",  # the issuer is the server's own URL here
        },
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def _bootstrap_admin(server: LiveServer) -> dict[str, str]:
    """An operator creates the first admin with the CLI, who then logs in."""
    created = server.idp(
        "users", "create", "root", "--email", "root@example.com", "--role", "admin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    return _log_in(server, "root")


def _assert_no_server_errors(server: LiveServer) -> None:
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log


@pytest.mark.slow
def test_parallel_creations_of_one_username_give_one_201_and_the_rest_409(
    e2e_database: str, tmp_path: Path
) -> None:
    with live_server(e2e_database, tmp_path) as server:
        headers = _bootstrap_admin(server)

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, timeout=60
            ) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/admin/users",
                            json={
                                # Case differs, the unique index on lower(username) decides.
                                "username": "racer" if i % 2 else "RACER",
                                "email": f"racer{i}@example.com",
                                "password": PASSWORD,
                            },
                        )
                        for i in range(30)
                    )
                )

        responses = asyncio.run(burst())
        assert Counter(r.status_code for r in responses) == {201: 1, 409: 29}, [
            (r.status_code, r.text) for r in responses if r.status_code not in {201, 409}
        ]
        conflict = {"detail": "a user with this username or email already exists"}
        assert all(r.json() == conflict for r in responses if r.status_code == 409)
        page = httpx.get(
            f"{server.url}/admin/users", params={"username": "racer"}, headers=headers
        ).json()
        assert page["total"] == 1
        audit = httpx.get(
            f"{server.url}/admin/audit", params={"action": "user.create"}, headers=headers
        ).json()
        assert audit["total"] == 2  # root (by the CLI) and the one winner
        _assert_no_server_errors(server)


@pytest.mark.slow
def test_admins_disabling_themselves_at_once_leave_exactly_one(
    e2e_database: str, tmp_path: Path
) -> None:
    with live_server(e2e_database, tmp_path) as server:
        root = _bootstrap_admin(server)
        admins = [f"admin{i}" for i in range(8)]
        ids = {}
        for name in admins:
            response = httpx.post(
                f"{server.url}/admin/users",
                json={
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": PASSWORD,
                    "roles": ["admin"],
                },
                headers=root,
            )
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        # Root steps down first, so the eight are the only admins.
        root_id = httpx.get(f"{server.url}/me", headers=root).json()["id"]
        assert (
            httpx.delete(f"{server.url}/admin/users/{root_id}/roles/admin", headers=root)
        ).status_code == 204
        tokens = {name: _log_in(server, name) for name in admins}

        async def everyone_steps_down() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.patch(
                            f"/admin/users/{ids[name]}",
                            json={"is_active": False},
                            headers=tokens[name],
                        )
                        for name in admins
                    )
                )

        responses = asyncio.run(everyone_steps_down())
        assert Counter(r.status_code for r in responses) == {200: 7, 409: 1}
        (survivor,) = (
            name for name, r in zip(admins, responses, strict=True) if r.status_code == 409
        )
        page = httpx.get(
            f"{server.url}/admin/users",
            params={"role": "admin", "active": "true"},
            headers=tokens[survivor],
        ).json()
        assert [user["username"] for user in page["items"]] == [survivor]
        # The CLI goes through the same services, so the same rule holds there.
        refused = server.idp("users", "disable", survivor)
        assert refused.returncode == 1
        assert (
            refused.stderr.strip() == "error: this would leave no active user with the admin role"
        )
        _assert_no_server_errors(server)


async def test_last_admin_guard_waits_for_a_concurrent_change(
    e2e_database: str, tmp_path: Path
) -> None:
    """Two transactions disable the two admins: the second waits for the first's lock on the
    admin role, then counts what the first committed, and refuses."""
    settings = make_settings(e2e_database, tmp_path / "keys")
    database = Database(settings)
    try:
        async with database.session() as session:
            for name in ("ann", "ben"):
                await make_user(session, settings, name, roles=["admin"])
        async with database.sessionmaker() as first, database.sessionmaker() as second:
            ann = await users_service.get_by_username(first, "ann")
            await users_service.set_active(
                first, ann, False, actor=SYSTEM, now=datetime.now(UTC)
            )  # not committed yet
            ben = await users_service.get_by_username(second, "ben")
            waiting = asyncio.create_task(
                users_service.set_active(second, ben, False, actor=SYSTEM, now=datetime.now(UTC))
            )
            await asyncio.sleep(0.5)
            assert not waiting.done(), "the second change did not wait for the first"
            await first.commit()
            with pytest.raises(ConflictError, match="no active user with the admin role"):
                await waiting
            await second.rollback()
        async with database.session() as session:
            page, _total = await users_service.list_users(session, role="admin", active=True)
            assert [user.username for user in page] == ["ben"]
    finally:
        await database.dispose()
