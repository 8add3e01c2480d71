"""Request ids and the access log: one line per request, never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.observability.logging import JsonFormatter, RequestIdFilter
from idp.services.keyring import KeyRing
from tests.conftest import ISSUER
from tests.helpers import PASSWORD, login, make_user


class Lines(logging.Handler):
    """The JSON lines the service would write, stamped with the request id like the real
    handler (the filter runs in the request's context)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's client, not the app
            self.lines.append(self.format(record))

    def entries(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
async def app_client(
    settings: Settings, database: Database, keyring: KeyRing
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(settings, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        yield app, client


async def test_request_id_is_generated_echoed_and_on_every_line(
    app_client: tuple[FastAPI, AsyncClient], log_lines: Lines
) -> None:
    app, client = app_client

    async def noisy() -> dict[str, bool]:
        logging.getLogger("idp.test").warning("inside the endpoint")
        return {"ok": True}

    app.add_api_route("/noisy", noisy, methods=["GET"])
    first = await client.get("/noisy")
    second = await client.get("/noisy")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert len(set(ids)) == 2
    assert all(len(i) == 32 for i in ids)
    entries = log_lines.entries()
    inside = [e for e in entries if e["msg"] == "inside the endpoint"]
    assert [e["request_id"] for e in inside] == ids
    access = [e for e in entries if e["logger"] == "idp.access"]
    assert [e["request_id"] for e in access] == ids


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("3f2c7d1e-6a4b-4c8e-9d21-0b5e7a9c1f00", True),
        ("nginx.abc:123_x", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("two words", False),
        ("quote\"and'", False),
        ("", False),
        ("é".encode(), False),
        (b"id\r\nX-Injected: 1", False),
    ],
)
async def test_incoming_request_id_kept_only_when_sane(
    app_client: tuple[FastAPI, AsyncClient], incoming: str | bytes, kept: bool
) -> None:
    _, client = app_client
    response = await client.get("/healthz", headers={"X-Request-ID": incoming})
    raw = incoming.encode() if isinstance(incoming, str) else incoming
    assert (response.headers.raw[-1] == (b"x-request-id", raw)) is kept
    assert "x-injected" not in response.headers
    assert response.headers["x-request-id"]


async def test_access_line_has_method_route_status_duration_client(
    app_client: tuple[FastAPI, AsyncClient], log_lines: Lines
) -> None:
    _, client = app_client
    await client.get("/healthz", headers={"X-Request-ID": "req-1"})
    await client.get("/nowhere/at/all")
    access = [e for e in log_lines.entries() if e["logger"] == "idp.access"]
    assert len(access) == 2  # one line per request
    first, second = access
    assert first["request_id"] == "req-1"
    assert (first["method"], first["route"], first["status"]) == ("GET", "/healthz", 200)
    assert isinstance(first["duration_ms"], float)
    assert first["client"] == "127.0.0.1"
    assert first["level"] == "INFO"
    assert (second["route"], second["status"]) == ("<unmatched>", 404)
    assert "nowhere" not in json.dumps(second)


async def test_no_secret_reaches_the_log(
    app_client: tuple[FastAPI, AsyncClient],
    log_lines: Lines,
    session: AsyncSession,
    settings: Settings,
) -> None:
    _, client = app_client
    await make_user(session, settings)
    token = (await login(client)).json()["access_token"]
    await login(client, password="wrong " + PASSWORD)
    await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    await client.get(f"/me?access_token={token}&password={PASSWORD}")
    await client.post("/token", json={"password": PASSWORD})  # wrong content type
    await client.post(
        "/token", content=f"password={PASSWORD}&x=\xff", headers={"content-type": "text/plain"}
    )
    text = "\n".join(log_lines.lines)
    assert log_lines.lines
    for secret in (PASSWORD, token, token.split(".")[2], "access_token="):
        assert secret not in text
