"""Nothing a client sends produces a 5xx: hostile bodies, content types, encodings, numbers,
paths, query strings and headers, thrown at every route the application has.

The routes come from the app itself, so endpoints added later are covered without editing
this table; requests carry an admin's token so they get past authentication to the parsing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.conftest import ISSUER
from tests.helpers import bearer, login, make_user

LIMIT = 4096  # IDP_MAX_BODY_SIZE for these tests
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
HUGE_INT = "9" * 5000  # past Python's int-from-string digit limit
NESTED = "[" * 3000 + "]" * 3000


@dataclass(frozen=True)
class Attack:
    name: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    chunked: bool = False


ATTACKS = [
    Attack("plain"),
    Attack("oversized declared body", b"a=" + b"x" * (LIMIT * 2), {"content-type": FORM}),
    Attack(
        "oversized chunked body", b"a=" + b"x" * (LIMIT * 2), {"content-type": FORM}, chunked=True
    ),
    Attack("json to a form endpoint", b'{"grant_type": "password"}', {"content-type": JSON}),
    Attack("form to a json endpoint", b"name=x&email=y", {"content-type": FORM}),
    Attack("xml", b"<?xml version='1.0'?><a>&lol;</a>", {"content-type": "application/xml"}),
    Attack("no content type", b"\x00\x01\x02binary"),
    Attack(
        "bad multipart", b"--b\r\nno headers", {"content-type": "multipart/form-data; boundary=b"}
    ),
    Attack("multipart without boundary", b"x", {"content-type": "multipart/form-data"}),
    Attack(
        "bad utf-8 form",
        b"grant_type=password&username=\xff\xfe&password=\xc3(",
        {"content-type": FORM},
    ),
    Attack("bad utf-8 json", b'{"name": "\xff\xfe\xc3("}', {"content-type": JSON}),
    Attack("bad percent escapes", b"username=%ff%fe%&password=%zz", {"content-type": FORM}),
    Attack("nul bytes", b"grant_type=password&username=a%00b&password=%00", {"content-type": FORM}),
    Attack(
        "huge json numbers",
        f'{{"n": {HUGE_INT}, "f": 1e999999, "limit": -{HUGE_INT}}}'.encode(),
        {"content-type": JSON},
    ),
    Attack("deeply nested json", NESTED.encode(), {"content-type": JSON}),
    Attack("json not an object", b'"just a string"', {"content-type": JSON}),
    Attack("truncated json", b'{"name": ', {"content-type": JSON}),
    Attack(
        "json with charset lies", b'{"a": 1}', {"content-type": "application/json; charset=utf-16"}
    ),
    Attack("huge query numbers", query=f"limit={HUGE_INT}&offset=-{HUGE_INT}&page=1e999"),
    Attack("bad query escapes", query="a=%ff%fe&b=%&c=%zz&limit=NaN&offset=inf"),
    Attack("token in the query", query="access_token=abc.def.ghi"),
    Attack("garbage bearer", headers={"authorization": "Bearer \x7f" + "a" * 9000}),
    Attack("basic auth", headers={"authorization": "Basic !!!notbase64"}),
    Attack("weird accept", headers={"accept": "application/x-nonsense;q=abc"}),
    Attack("bad content length", b"a=1", {"content-type": FORM, "content-length": "3"}),
]

PATH_VALUES = ["0", "-1", HUGE_INT, "%00", "..%2F..%2Fetc%2Fpasswd", "é✓", "x" * 3000, "1e999"]


def _paths(path: str) -> list[str]:
    """The path with each parameter replaced by hostile values, or itself."""
    if "{" not in path:
        return [path]
    return [re.sub(r"\{[^}]+\}", value, path) for value in PATH_VALUES]


def _endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route: the API's from its OpenAPI document (full
    paths, whatever routers they were included from) and plain Starlette ones (the docs)."""
    found = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    for route in app.routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str) and methods:
            found |= {(method, path) for method in methods}
    return sorted(found)


@pytest.fixture
async def hostile_client(
    settings: Settings, database: Database, keyring: KeyRing, session: AsyncSession
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(
        settings.model_copy(update={"max_body_size": LIMIT}), database=database, keyring=keyring
    )
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url=ISSUER) as client:
        await make_user(session, settings, "root", roles=["admin"])
        token = (await login(client, "root")).json()["access_token"]
        client.headers.update(bearer(token))
        yield app, client


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


async def test_no_input_makes_any_route_answer_5xx(
    hostile_client: tuple[FastAPI, AsyncClient],
) -> None:
    app, client = hostile_client
    endpoints = _endpoints(app)
    paths = {path for _, path in endpoints}
    assert {"/token", "/me", "/metrics", "/.well-known/jwks.json", "/docs"} <= paths
    failures = []
    tried = 0
    for method, template in endpoints:
        for path in _paths(template):
            for attack in ATTACKS:
                url = f"{path}?{attack.query}" if attack.query else path
                content = (
                    _chunks(attack.content) if attack.chunked and attack.content else attack.content
                )
                response = await client.request(
                    method, url, content=content, headers=attack.headers
                )
                tried += 1
                if response.status_code >= 500:
                    failures.append((method, url[:80], attack.name, response.status_code))
    assert tried > 200
    assert failures == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_bodies_get_413(
    hostile_client: tuple[FastAPI, AsyncClient], chunked: bool
) -> None:
    _, client = hostile_client
    body = b"grant_type=password&username=a&password=" + b"p" * LIMIT
    response = await client.post(
        "/token",
        content=_chunks(body) if chunked else body,
        headers={"content-type": FORM},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "request body too large"}


async def test_bodies_within_the_limit_are_read(
    hostile_client: tuple[FastAPI, AsyncClient],
) -> None:
    _, client = hostile_client
    body = b"grant_type=password&username=root&password=wrong&pad=" + b"x" * (LIMIT - 100)
    assert len(body) <= LIMIT
    for content in (body, _chunks(body)):
        response = await client.post("/token", content=content, headers={"content-type": FORM})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
