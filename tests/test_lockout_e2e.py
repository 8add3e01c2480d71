"""Lockout across real `idp serve` processes on one PostgreSQL database: replicas share the
count, a lock expires in real time, a flood from one address leaves the owner in, the
operator unlocks, and the rate limit answers 429.

Client addresses other than 127.0.0.1 come from `X-Forwarded-For`, which uvicorn trusts from
127.0.0.1 (the default `IDP_FORWARDED_ALLOW_IPS`), as it would from a reverse proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import PASSWORD
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.slow

ENV = {
    "IDP_LOCKOUT_THRESHOLD": "3",
    "IDP_LOCKOUT_ACCOUNT_THRESHOLD": "8",
    "IDP_LOCKOUT_WAIT": "3",
    "IDP_LOCKOUT_WAIT_INCREMENT": "3",
    "IDP_LOCKOUT_MAX_WAIT": "10",
}
# For tests that must not see a lock expire however slow the machine is.
LONG_LOCKS = {"IDP_LOCKOUT_WAIT": "600", "IDP_LOCKOUT_MAX_WAIT": "600"}


def fetch(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows of one query, read with asyncpg in a thread of its own."""

    async def run() -> list[dict[str, Any]]:
        target = make_url(url)
        conn = await asyncpg.connect(
            host=target.host, port=target.port, user=target.username, database=target.database
        )
        try:
            return [dict(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def attempt(
    server: LiveServer, password: str, *, username: str = "alice", address: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": username, "password": password},
        headers=headers,
        timeout=60,
    )


def create_user(server: LiveServer, username: str = "alice") -> None:
    result = server.idp(
        "users", "create", username, "--email", f"{username}@example.com", stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr


def address_lock(url: str, address: str = "127.0.0.1") -> dict[str, Any]:
    [row] = fetch(
        url,
        "SELECT failed_count, lockout_count, last_failed_at, locked_until FROM login_failures "
        f"WHERE client_address = '{address}'",
    )
    return row


def sleep_until(moment: datetime, extra: float = 0.3) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds() + extra))


@contextmanager
def two_servers(url: str, workdir: Path, **env: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two replicas on one database and one keystore."""
    settings = {**ENV, **env}
    with (
        live_server(url, workdir, env=settings) as first,
        live_server(url, workdir, keys_dir=workdir / "keys", env=settings) as second,
    ):
        yield first, second


def test_two_servers_share_the_count_and_parallel_guesses_get_only_the_threshold(
    e2e_database: str, tmp_path: Path
) -> None:
    with two_servers(e2e_database, tmp_path, **LONG_LOCKS) as (a, b):
        create_user(a, "alice")
        create_user(a, "bob")

        # One failure on A, one on B, one on A: the third locks the address on both.
        for server in (a, b, a):
            assert attempt(server, "wrong", username="bob").status_code == 400
        assert attempt(b, PASSWORD, username="bob").status_code == 400
        assert attempt(a, PASSWORD, username="bob").status_code == 400

        # 50 parallel guesses spread over both replicas: three real password checks in all.
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda i: attempt((a, b)[i % 2], f"guess {i}"), range(50)))
        assert {r.status_code for r in answers} == {400}
        assert len({r.text for r in answers}) == 1
        logs = a.log() + b.log()
        assert logs.count("login refused: wrong password") == 3 + 3  # bob's three, alice's three
        assert logs.count("login refused: locked") >= 47 + 2
        assert attempt(a, PASSWORD).status_code == 400
        assert attempt(b, PASSWORD).status_code == 400
        [alice] = fetch(
            e2e_database, "SELECT failed_login_count FROM users WHERE username = 'alice'"
        )
        assert alice["failed_login_count"] == 3
        assert PASSWORD not in logs


def test_a_lock_holds_on_both_replicas_and_expires_in_real_time(
    e2e_database: str, tmp_path: Path
) -> None:
    """How locks grow and expire is proven with a manual clock in test_lockout.py; here the
    servers' own clock ends a lock that the other replica set."""
    with two_servers(e2e_database, tmp_path) as (a, b):
        create_user(a)
        for server in (a, b, a):
            attempt(server, "wrong")
        first = address_lock(e2e_database)
        assert first["lockout_count"] == 1
        assert (first["locked_until"] - first["last_failed_at"]).total_seconds() == 3
        assert attempt(b, PASSWORD).status_code == 400

        sleep_until(first["locked_until"])
        assert attempt(b, PASSWORD).status_code == 200
        assert fetch(e2e_database, "SELECT * FROM login_failures") == []


def test_a_flood_from_one_address_leaves_the_owner_in_and_the_operator_unlocks(
    e2e_database: str, tmp_path: Path
) -> None:
    # Locks long enough to outlast the `idp users unlock` process start.
    with two_servers(e2e_database, tmp_path, **LONG_LOCKS) as (a, b):
        create_user(a)
        attacker, owner = "203.0.113.9", "198.51.100.4"
        for i in range(20):
            assert attempt((a, b)[i % 2], f"guess {i}", address=attacker).status_code == 400
        assert attempt(a, PASSWORD, address=owner).status_code == 200
        assert attempt(b, PASSWORD, address=owner).status_code == 200
        assert attempt(a, PASSWORD, address=attacker).status_code == 400

        # Spread over many addresses, guesses lock the account for everyone.
        for i in range(10):
            attempt((a, b)[i % 2], f"guess {i}", address=f"192.0.2.{i}")
        assert attempt(a, PASSWORD, address=owner).status_code == 400
        logs = a.log() + b.log()
        assert "audit user.locked" in logs
        assert "scope=account" in logs
        assert "scope=address" in logs

        unlocked = a.idp("users", "unlock", "alice")
        assert unlocked.returncode == 0, unlocked.stderr
        assert unlocked.stdout.strip() == "unlocked alice"
        assert attempt(b, PASSWORD, address=owner).status_code == 200
        assert attempt(a, PASSWORD, address=attacker).status_code == 200
        assert a.idp("users", "unlock", "nobody").returncode == 1


def test_rate_limit_is_per_address_and_answers_429_with_retry_after(
    e2e_database: str, tmp_path: Path
) -> None:
    with live_server(e2e_database, tmp_path, env={"IDP_TOKEN_RATE_LIMIT": "3"}) as server:
        create_user(server)
        for _ in range(3):
            assert attempt(server, PASSWORD, address="203.0.113.1").status_code == 200
        limited = attempt(server, PASSWORD, address="203.0.113.1")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "20"
        assert attempt(server, PASSWORD, address="203.0.113.2").status_code == 200
