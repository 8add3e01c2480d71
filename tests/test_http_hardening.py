"""Issue 13 items 10-12: response headers for browsers, the request-head limit, a private
SQLite file; and /docs served without a CDN (issue 16)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.conftest import ISSUER
from tests.helpers import bearer, login, make_user
from tests.live import live_server, run_idp

HARDENING = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture
async def small_head_client(
    settings: Settings, database: Database, keyring: KeyRing
) -> AsyncIterator[AsyncClient]:
    app = create_app(
        settings.model_copy(update={"max_header_size": 4096}), database=database, keyring=keyring
    )
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


def _inline_script_hashes(html: str) -> set[str]:
    return {
        base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        for script in re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    }


def _assert_private(response: httpx.Response) -> None:
    for name, value in HARDENING.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


async def test_token_profile_and_admin_answers_are_private_and_inert(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings, "hedge-admin", roles=["admin"])
    token_response = await login(client, "hedge-admin")
    _assert_private(token_response)
    headers = bearer(token_response.json()["access_token"])
    for path in ("/me", "/admin/users", "/admin/roles"):
        _assert_private(await client.get(path, headers=headers))
    _assert_private(await client.get("/admin/users"))  # the 401 too
    failed = await client.post("/token", data={"grant_type": "password"})
    _assert_private(failed)


async def test_cacheable_answers_keep_their_own_cache_control(client: AsyncClient) -> None:
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.headers["cache-control"].startswith("public, max-age=")
    assert jwks.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_assets_of_this_server(client: AsyncClient, page: str) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert "cdn" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), html
    policy = answer.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", policy)
    assert script_src is not None
    assert set(script_src[1].split()) - {"'self'"} == {
        f"'sha256-{digest}'" for digest in _inline_script_hashes(html)
    }
    assert "https:" not in policy and "*" not in policy
    assert "frame-ancestors 'none'" in policy
    for asset in re.findall(r"""(?:src|href)="(/docs/assets/[^"]+)\"""", html):
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert loaded.headers["cache-control"] == "public, max-age=86400"
        assert len(loaded.content) > 100


async def test_oauth2_redirect_page_and_unknown_asset(client: AsyncClient) -> None:
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    hashes = _inline_script_hashes(redirect.text)
    assert hashes
    assert all(f"'sha256-{h}'" in redirect.headers["content-security-policy"] for h in hashes)
    for path in ("/docs/assets/core.py", "/docs/assets/..%2f__init__.py", "/docs/assets/x"):
        assert (await client.get(path)).status_code == 404


async def test_oversized_request_head_is_431(small_head_client: AsyncClient) -> None:
    ok = await small_head_client.get("/healthz", headers={"X-Padding": "a" * 3000})
    assert ok.status_code == 200
    refused = await small_head_client.get("/healthz", headers={"X-Padding": "a" * 5000})
    assert refused.status_code == 431
    assert refused.json() == {"detail": "request header fields too large"}
    _assert_private(refused)
    many = {f"X-Pad-{n}": "a" * 100 for n in range(50)}
    assert (await small_head_client.get("/healthz", headers=many)).status_code == 431
    long_url = await small_head_client.get("/healthz?q=" + "a" * 5000)
    assert long_url.status_code == 431


def _raw_get(port: int, header_size: int) -> tuple[bytes, int]:
    """GET /healthz with one header of `header_size` bytes, sent as fast as the server reads:
    what the server answered (b"" if it closed without answering) and how much got sent."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    chunk = b"a" * 65_536
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(head)
            while sent < header_size:
                sock.sendall(chunk[: min(header_size - sent, len(chunk))])
                sent += len(chunk)
            sock.sendall(b"\r\nConnection: close\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: what it said is below
        try:
            while part := sock.recv(65_536):
                answer += part
        except OSError:
            pass
    return answer, sent


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[int]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/idp.db"
    assert run_idp("db", "upgrade", env={"IDP_DATABASE_URL": database_url}).returncode == 0
    with live_server(database_url, tmp_path) as server:
        yield server.port


@pytest.mark.slow
def test_serve_limits_request_heads(sqlite_server: int) -> None:
    port = sqlite_server
    assert _raw_get(port, 8 * 1024)[0].startswith(b"HTTP/1.1 200")
    assert _raw_get(port, 20 * 1024)[0].startswith(b"HTTP/1.1 431")
    # Past twice the limit the server's protocol refuses before the application runs.
    assert _raw_get(port, 40 * 1024)[0].startswith(b"HTTP/1.1 431")
    # Accepted (200) before the limit; then answered 431 only after buffering all 32 MB.
    answer, sent = _raw_get(port, 32 * 1024 * 1024)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert sent < 16 * 1024 * 1024, "the server kept reading a huge request head"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


@pytest.mark.slow
def test_serve_reads_large_bodies_on_a_kept_alive_connection(sqlite_server: int) -> None:
    """The head bound counts request heads only: a body larger than the bound, on the same
    connection and in the same reads as its head, is read as a body."""
    body = "grant_type=refresh_token&refresh_token=" + "a" * (60 * 1024)
    with httpx.Client(base_url=f"http://127.0.0.1:{sqlite_server}", timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            answer = client.post(
                "/token",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "invalid_grant"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_database_and_wal_are_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, under which files are world-readable
    try:
        path = tmp_path / "fresh.db"
        database = Database(Settings(database_url=f"sqlite:///{path}"))
        async with database.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x TEXT)"))
            await connection.execute(text("INSERT INTO t VALUES ('hash')"))
            files = [path, tmp_path / "fresh.db-wal", tmp_path / "fresh.db-shm"]
            assert all(file.exists() for file in files)
            assert {file.name: _mode(file) for file in files} == {
                file.name: 0o600 for file in files
            }
        await database.dispose()
        # An existing world-readable file (from an older version) is made private.
        old = tmp_path / "old.db"
        old.touch(mode=0o644)
        old.chmod(0o644)
        database = Database(Settings(database_url=f"sqlite:///{old}"))
        await database.dispose()
        assert _mode(old) == 0o600
    finally:
        os.umask(previous)


def test_cli_creates_a_private_sqlite_file(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path}/cli.db"
        assert run_idp("db", "upgrade", env={"IDP_DATABASE_URL": url}).returncode == 0
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "cli.db") == 0o600
