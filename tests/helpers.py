"""Small helpers shared by tests: users, logins, hand-made attack tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from idp.configuration.clock import Clock
from idp.configuration.settings import Settings
from idp.models import User
from idp.schemas.clients import ClientCreate
from idp.schemas.users import UserCreate
from idp.services import clients as clients_service
from idp.services import users as users_service
from idp.services.permissions import SYSTEM

PASSWORD = "a long enough passphrase"


async def make_user(
    session: AsyncSession,
    settings: Settings,
    username: str = "alice",
    *,
    roles: list[str] | None = None,
    password: str | None = PASSWORD,
    active: bool = True,
) -> User:
    return await users_service.create_user(
        session,
        settings,
        UserCreate(
            username=username,
            email=f"{username}@example.com",
            password=password,
            roles=roles or [],
            is_active=active,
        ),
        actor=SYSTEM,
    )


async def make_client(
    session: AsyncSession,
    settings: Settings,
    client_id: str = "orders-web",
    *,
    client_type: str = "public",
    grant_types: list[str] | None = None,
    roles: list[str] | None = None,
    **fields: Any,
) -> str | None:
    """Register a client (public, password and refresh grants unless told); its secret."""
    if grant_types is None:
        public = client_type == "public"
        grant_types = ["password", "refresh_token"] if public else ["client_credentials"]
    _client, secret = await clients_service.create_client(
        session,
        settings,
        ClientCreate(
            client_id=client_id, client_type=client_type, grant_types=grant_types, **fields
        ),
        actor=SYSTEM,
        pepper=clients_service.pepper_for(settings),
        now=datetime.now(UTC),
    )
    for role in roles or []:
        await clients_service.grant_role(session, client_id, role, actor=SYSTEM)
    return secret


async def login(
    client: AsyncClient, username: str = "alice", password: str = PASSWORD, **extra: str
) -> Response:
    return await client.post(
        "/token",
        data={"grant_type": "password", "username": username, "password": password, **extra},
    )


async def admin_login(
    client: AsyncClient, username: str = "alice", password: str = PASSWORD, **extra: str
) -> Response:
    """A login whose tokens idp's own /admin API accepts: RFC 8707 `resource` = the admin
    audience (the issuer, from the server's metadata, + `/admin` by default)."""
    metadata = await client.get("/.well-known/oauth-authorization-server")
    resource = f"{metadata.json()['issuer']}/admin"
    return await login(client, username, password, resource=resource, **extra)


async def refresh(client: AsyncClient, refresh_token: str, **extra: str) -> Response:
    return await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    )


class ManualClock(Clock):
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS with whatever header, claims and signature bytes an attacker chooses."""
    return ".".join((b64url(json.dumps(header)), b64url(json.dumps(claims)), b64url(signature)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HMAC-SHA256 token with any secret, e.g. a public key (the algorithm-confusion attack)."""
    signing_input = f"{b64url(json.dumps(header))}.{b64url(json.dumps(claims))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@contextmanager
def sql_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements the engine sends while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
