"""What the lockout tests share: a bcrypt-check counter and per-address clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from idp.services import passwords
from tests.conftest import ISSUER


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
