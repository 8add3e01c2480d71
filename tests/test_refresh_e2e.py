"""Refresh tokens against real `idp serve` processes: concurrent refreshes on two replicas,
an OAuth2 client library, the CLI ending sessions, and purging."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from sqlalchemy.engine import make_url

from tests.helpers import PASSWORD, bearer, login, refresh
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.slow  # starts `idp serve` processes


def create_alice(server: LiveServer) -> None:
    created = server.idp("users", "create", "alice", "--email", "a@example.com", stdin=PASSWORD)
    assert created.returncode == 0, created.stderr


async def fetchval(url: str, sql: str) -> Any:
    target = make_url(url)
    conn = await asyncpg.connect(
        host=target.host, port=target.port, user=target.username, database=target.database
    )
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_twenty_concurrent_refreshes_on_two_replicas(
    e2e_database: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    with (
        live_server(e2e_database, tmp_path, keys_dir=keys) as first,
        live_server(e2e_database, tmp_path, keys_dir=keys) as second,
    ):
        create_alice(first)
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=30) as one,
            httpx.AsyncClient(base_url=second.url, timeout=30) as two,
        ):
            for _ in range(3):  # a few rounds, so the race is really run
                body = (await login(one)).json()
                answers = await asyncio.gather(
                    *(refresh((one, two)[i % 2], body["refresh_token"]) for i in range(20))
                )
                statuses = [answer.status_code for answer in answers]
                assert statuses.count(200) <= 1, statuses
                assert {status for status in statuses if status != 200} == {400}, statuses
                for answer in answers:
                    if answer.status_code == 400:
                        assert answer.json()["error"] == "invalid_grant"
                winners = [answer.json() for answer in answers if answer.status_code == 200]
                # The losers saw a consumed token: reuse, so the family is revoked and the
                # winner's new tokens are dead too (strict RFC 9700 reuse detection).
                for winner in winners:
                    assert (await refresh(two, winner["refresh_token"])).status_code == 400
                    me = await one.get("/me", headers=bearer(winner["access_token"]))
                    assert me.status_code == 401
    for server in (first, second):
        assert "Traceback" not in server.log()


async def test_authlib_client_logs_in_refreshes_and_logs_out(
    e2e_database: str, tmp_path: Path
) -> None:
    # An access token shorter than Authlib's 60 s leeway: every API call refreshes first.
    with live_server(e2e_database, tmp_path, env={"IDP_ACCESS_TOKEN_TTL": "5"}) as server:
        create_alice(server)
        server.register_client(
            "orders-web",
            client_type="public",
            grant_types=["password", "refresh_token"],
            scopes=["orders:read"],
        )
        async with httpx.AsyncClient(base_url=server.url) as plain:
            metadata = (await plain.get("/.well-known/oauth-authorization-server")).json()
        updates: list[dict[str, Any]] = []

        async def update_token(token: dict[str, Any], **_: Any) -> None:
            updates.append(token)

        async with AsyncOAuth2Client(
            client_id="orders-web",
            token_endpoint_auth_method="none",
            token_endpoint=metadata["token_endpoint"],
            scope="orders:read",
            update_token=update_token,
        ) as oauth:
            first = await oauth.fetch_token(
                metadata["token_endpoint"], username="alice", password=PASSWORD
            )
            assert first["token_type"] == "Bearer"
            assert first["scope"] == "orders:read"
            assert first["refresh_token"]

            second = await oauth.refresh_token(metadata["token_endpoint"])
            assert second["refresh_token"] != first["refresh_token"]
            assert second["access_token"] != first["access_token"]

            before = len(updates)
            me = await oauth.get(f"{server.url}/me")  # refreshed automatically, then called
            assert me.status_code == 200
            assert me.json()["username"] == "alice"
            assert len(updates) == before + 1
            assert updates[-1]["refresh_token"] not in {
                first["refresh_token"],
                second["refresh_token"],
            }

            revoked = await oauth.revoke_token(
                metadata["revocation_endpoint"],
                token=oauth.token["refresh_token"],
                token_type_hint="refresh_token",
            )
            assert revoked.status_code == 200
            with pytest.raises(OAuthError) as refused:
                await oauth.refresh_token(metadata["token_endpoint"])
            assert refused.value.error == "invalid_grant"


async def test_cli_disable_ends_sessions_and_purge_deletes_them(
    e2e_database: str, tmp_path: Path
) -> None:
    with live_server(e2e_database, tmp_path, env={"IDP_REFRESH_PURGE_INTERVAL": "0"}) as server:
        create_alice(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            sessions = [(await login(client)).json() for _ in range(3)]
            assert server.idp("users", "disable", "alice").returncode == 0
            for body in sessions:
                assert (await refresh(client, body["refresh_token"])).status_code == 400

            kept = server.idp("tokens", "purge")  # the default retention keeps them for a day
            assert kept.returncode == 0, kept.stderr
            assert "purged 0 ended session(s)" in kept.stdout
            assert server.idp("users", "enable", "alice").returncode == 0
            live = (await login(client)).json()

            purged = server.idp("tokens", "purge", "--retention", "0")
            assert purged.returncode == 0, purged.stderr
            assert "purged 3 ended session(s) and 3 refresh token(s)" in purged.stdout
            assert await fetchval(e2e_database, "SELECT count(*) FROM refresh_families") == 1
            assert (await refresh(client, live["refresh_token"])).status_code == 200

    bad = server.idp("tokens", "purge", "--retention", "-1")
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr


async def test_running_server_purges_ended_sessions_periodically(
    e2e_database: str, tmp_path: Path
) -> None:
    env = {"IDP_REFRESH_PURGE_INTERVAL": "1", "IDP_REFRESH_PURGE_RETENTION": "0"}
    with live_server(e2e_database, tmp_path, env=env) as server:
        create_alice(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            ended = (await login(client)).json()
            live = (await login(client)).json()
            assert (await client.post("/revoke", data={"token": ended["access_token"]})).is_success
            deadline = time.monotonic() + 15
            while await fetchval(e2e_database, "SELECT count(*) FROM refresh_families") != 1:
                assert time.monotonic() < deadline, "the ended session was not purged"
                await asyncio.sleep(0.2)
            assert (await refresh(client, live["refresh_token"])).status_code == 200
        assert "purged 1 ended session(s)" in server.log()
