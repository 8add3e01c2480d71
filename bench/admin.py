"""Benchmark 8: the admin list of 100 users with their roles: SQL statements per request
(constant whatever the page size) and the latency of a page of 100 against a page of 10."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from bench.common import PASSWORD, Report, Sizes, median
from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from idp.services.keys import keystore_for
from tests.live import LiveServer


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """A token for the admin API: its audience is the issuer + `/admin` (IDP_ADMIN_AUDIENCE)."""
    issuer = (await client.get("/.well-known/oauth-authorization-server")).json()["issuer"]
    response = await client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "bench",
            "password": PASSWORD,
            "resource": f"{issuer}/admin",
        },
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def create_users(server: LiveServer, count: int, *, prefix: str = "user") -> list[str]:
    """`count` users with a password and a role, through the admin API."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        headers = await admin_headers(client)
        await client.post("/admin/roles", json={"name": "member"}, headers=headers)
        names = []
        for i in range(count):
            name = f"{prefix}{i:04d}"
            response = await client.post(
                "/admin/users",
                json={
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": PASSWORD,
                    "roles": ["member"],
                },
                headers=headers,
            )
            if response.status_code not in (201, 409):
                response.raise_for_status()
            names.append(name)
        return names


async def _statements(server: LiveServer, workdir: Path, limit: int) -> int:
    """SQL statements of one `GET /admin/users?limit=N`, counted in an in-process app on the
    same database and keys as the live server."""
    settings = Settings(
        database_url=server.env["IDP_DATABASE_URL"],
        issuer=server.url,
        audience=[server.env["IDP_AUDIENCE"]],
        keys_dir=workdir / "keys",
        token_rate_limit=0,
    )
    database = Database(settings)
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    app = create_app(settings, database=database, keyring=KeyRing(keystore_for(settings)))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as live:
            headers = await admin_headers(live)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            seen.clear()
            response = await client.get(f"/admin/users?limit={limit}", headers=headers)
            response.raise_for_status()
            assert len(response.json()["items"]) == min(limit, response.json()["total"])
        return len(seen)
    finally:
        await database.dispose()


async def run(report: Report, sizes: Sizes, server: LiveServer, workdir: Path) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        headers = await admin_headers(client)
        small, large = [], []
        for _ in range(max(5, sizes.login_samples)):
            for limit, sink in ((10, small), (100, large)):
                start = time.perf_counter()
                (
                    await client.get(f"/admin/users?limit={limit}", headers=headers)
                ).raise_for_status()
                sink.append(time.perf_counter() - start)
    page_10 = await _statements(server, workdir, 10)
    page_100 = await _statements(server, workdir, 100)
    report.add(
        "8a admin list: SQL statements, page 100 vs page 10",
        page_100 / page_10,
        "1.0 (constant)",
        page_100 == page_10,
        f"{page_100} statements for 100 users, {page_10} for 10",
    )
    ratio = median(large) / median(small)
    report.add(
        "8b admin list latency, page 100 vs page 10",
        ratio,
        "-",
        None,
        f"median {median(large) * 1000:.1f} ms for 100 users with roles, "
        f"{median(small) * 1000:.1f} ms for 10",
    )
