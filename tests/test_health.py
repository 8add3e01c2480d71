"""Liveness and readiness."""

from __future__ import annotations

from httpx import ASGITransport, AsyncClient

from idp.configuration.database import Database
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.conftest import make_settings


async def test_healthz_and_readyz(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "database": True,
        "migrated": True,
        "signing_key": True,
    }


async def test_readyz_is_503_when_the_database_is_unreachable(keyring: KeyRing, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        "postgresql+asyncpg://idp@127.0.0.1:9/nowhere", tmp_path, db_connect_timeout=1.0
    )
    app = create_app(settings, database=Database(settings), keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["database"] is False
        assert (await client.get("/healthz")).status_code == 200
