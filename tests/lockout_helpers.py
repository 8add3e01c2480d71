"""What the lockout tests share: their policy, the manual clock, a bcrypt-check counter and
per-address clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from idp.configuration.clock import Clock
from idp.configuration.settings import Settings
from idp.services import passwords
from tests.conftest import ISSUER
from tests.helpers import ManualClock


class CheckCounter:
    """Wraps `passwords.verify_password_sync` and records the hash each bcrypt check used."""

    def __init__(self) -> None:
        self.hashes: list[str] = []
        self._original = passwords.verify_password_sync

    def __call__(self, password: str, password_hash: str) -> bool:
        self.hashes.append(password_hash)
        return self._original(password, password_hash)

    def against(self, password_hash: str | None) -> int:
        """How many checks ran against this (the user's real) hash."""
        return sum(1 for seen in self.hashes if seen == password_hash)


@asynccontextmanager
async def client_at(app: FastAPI, address: str) -> AsyncIterator[AsyncClient]:
    """An in-process client whose requests come from `address`."""
    transport = ASGITransport(app=app, client=(address, 50_000))
    async with AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


POLICY = {
    "lockout_threshold": 3,
    "lockout_account_threshold": 6,
    "lockout_wait": 60,
    "lockout_wait_increment": 60,
    "lockout_max_wait": 150,
    "lockout_failure_reset": 3600,
}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """Stands still until moved: every app's clock (`app.state.clock`) reads it."""
    clock = ManualClock()
    monkeypatch.setattr(Clock, "now", lambda _self: clock.now())
    return clock


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> CheckCounter:
    counter = CheckCounter()
    monkeypatch.setattr(passwords, "verify_password_sync", counter)
    return counter


@pytest.fixture
def app(client: AsyncClient, settings: Settings) -> FastAPI:
    """The `client` fixture's app, with the lockout policy of these tests."""
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    app.state.settings = settings.model_copy(update=POLICY)
    return app
