"""An unmigrated database is not ready: /readyz, `idp serve` and the CLI say so.

Each test gets its own PostgreSQL database, migrated to head and then downgraded, the way an
operator ends up with one (a new release deployed before `idp db upgrade`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from httpx import ASGITransport, AsyncClient

from idp.configuration.database import Database
from idp.configuration.migrations import schema_head
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.conftest import alembic_config, make_settings
from tests.live import database_named, execute_sync, run_idp

FIRST_REVISION = "ff7f182965a4"


@pytest.fixture
def scratch_url(database_url: str, admin_url: str) -> Iterator[str]:
    """An empty database of its own (revision base), dropped afterwards."""
    name = f"idp_ready_{uuid.uuid4().hex[:8]}"
    execute_sync(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield database_named(database_url, name)
    finally:
        execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Alembic's commands run their own event loop: off this one."""
    action = command.downgrade if down else command.upgrade
    await asyncio.to_thread(action, alembic_config(url), revision)


async def _readyz(url: str, keyring: KeyRing, tmp_path: Path) -> tuple[int, dict[str, object]]:
    settings = make_settings(url, tmp_path)
    database = Database(settings)
    app = create_app(settings, database=database, keyring=keyring)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get("/readyz")
            return response.status_code, response.json()
    finally:
        await database.dispose()


def test_head_is_read_from_the_scripts_once() -> None:
    head = schema_head()
    assert head is schema_head()
    assert FIRST_REVISION in head.known and head.head in head.known
    assert head.head != FIRST_REVISION


async def test_an_empty_database_is_not_ready(
    scratch_url: str, keyring: KeyRing, tmp_path: Path
) -> None:
    status, body = await _readyz(scratch_url, keyring, tmp_path)
    assert status == 503
    assert body == {
        "status": "unavailable",
        "database": True,
        "migrated": False,
        "signing_key": True,
    }


async def test_a_database_behind_head_is_not_ready_until_upgraded(
    scratch_url: str, keyring: KeyRing, tmp_path: Path
) -> None:
    await _migrate(scratch_url, "head")
    await _migrate(scratch_url, FIRST_REVISION, down=True)
    status, body = await _readyz(scratch_url, keyring, tmp_path)
    assert (status, body["database"], body["migrated"]) == (503, True, False)
    await _migrate(scratch_url, "head")
    status, body = await _readyz(scratch_url, keyring, tmp_path)
    assert (status, body["migrated"]) == (200, True)


async def test_a_newer_release_schema_stays_ready_for_rolling_upgrades(
    scratch_url: str, keyring: KeyRing, tmp_path: Path
) -> None:
    await _migrate(scratch_url, "head")
    execute_sync(scratch_url, "UPDATE alembic_version SET version_num = 'f00dfacef00d'")
    status, body = await _readyz(scratch_url, keyring, tmp_path)
    assert (status, body["migrated"]) == (200, True)


def _one_line(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_serve_and_the_cli_refuse_a_database_behind_head(scratch_url: str, tmp_path: Path) -> None:
    env = {"IDP_DATABASE_URL": scratch_url, "IDP_KEYS_DIR": str(tmp_path / "keys")}
    head = schema_head().head
    assert run_idp("keys", "init", env=env, timeout=60).returncode == 0
    # Empty: serve refuses before binding a port, naming both revisions and the fix.
    line = _one_line(run_idp("serve", "--port", "9", env=env, timeout=30))
    assert line == f"error: database at revision base (empty), head is {head}: run `idp db upgrade`"
    command.upgrade(alembic_config(scratch_url), FIRST_REVISION)
    line = _one_line(run_idp("serve", "--port", "9", env=env, timeout=30))
    assert f"database at revision {FIRST_REVISION}, head is {head}" in line
    # Commands that need the schema say the same instead of a SQL error.
    for args in (("users", "list"), ("roles", "list"), ("tokens", "purge")):
        assert line == _one_line(run_idp(*args, env=env, timeout=30)), args
    # Once migrated the same command works.
    assert run_idp("db", "upgrade", env=env, timeout=60).returncode == 0
    listed = run_idp("users", "list", env=env, timeout=30)
    assert listed.returncode == 0, listed.stderr
