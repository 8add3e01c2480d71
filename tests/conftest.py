"""Shared fixtures: a real PostgreSQL migrated once with Alembic, each test in a rolled-back
transaction, and an httpx client on the ASGI app.

Under pytest-xdist each worker has a database of its own, `<name>_<worker id>`. Only tests that
touch the database (through `engine`, `migrated_url` or the e2e fixtures) migrate it; tests that
need only settings or the key ring never connect."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from idp.configuration import migrations
from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from idp.services.keys import KeyStore
from tests.live import create_database_if_missing, database_named, execute_sync

# The lockout tests' fixtures (policy-bound app, manual clock, bcrypt-check counter).
pytest_plugins = ["tests.lockout_helpers"]

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "http://idp.test"
AUDIENCE = "api.test"


def _docker_available() -> bool:
    return shutil.which("docker") is not None and (
        subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


def configured_database_url() -> str | None:
    """IDP_TEST_DATABASE_URL, with `_<worker id>` added to its database name under xdist."""
    url = os.environ.get("IDP_TEST_DATABASE_URL")
    if not url:
        return None
    url = Settings(database_url=url).database_url
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return database_named(url, f"{make_url(url).database}_{worker}") if worker else url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """This worker's test database (see configured_database_url), else a testcontainers
    PostgreSQL. Only a URL: nothing has connected or migrated yet."""
    url = configured_database_url()
    if url:
        yield url
        return
    if not _docker_available():
        pytest.fail(
            "no PostgreSQL: run ./scripts/test, or set IDP_TEST_DATABASE_URL, or start Docker"
        )
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="asyncpg") as container:
        yield container.get_connection_url()


def alembic_config(url: str) -> Config:
    """The CLI's Alembic configuration, leaving pytest's logging alone."""
    config = migrations.alembic_config(url)
    config.attributes["configure_logging"] = False
    return config


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    """The test database, created if missing, emptied and migrated to head once per run (per
    worker) with Alembic, not create_all."""
    create_database_if_missing(database_url)
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    return database_url


def make_settings(database_url: str, keys_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "issuer": ISSUER,
        "audience": [AUDIENCE],
        "keys_dir": keys_dir,
        "bcrypt_rounds": 4,
        "jwks_max_age": 60,
        "token_rate_limit": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest, keys_dir: Path) -> Settings:
    """Settings naming the test database; asking for them neither starts nor migrates it."""
    url = configured_database_url() or request.getfixturevalue("database_url")
    return make_settings(url, keys_dir)


@pytest.fixture(scope="session")
def keyring(settings: Settings) -> KeyRing:
    store = KeyStore(
        settings.keys_dir,
        None,
        jwks_max_age=settings.jwks_max_age,
        retire_grace=settings.key_retire_grace,
    )
    store.init()
    return KeyRing(store)


@pytest.fixture(scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction per test, rolled back at the end: tests never see each other's rows."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
def database(settings: Settings, connection: AsyncConnection) -> Database:
    return Database(settings, bind=connection)


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.session() as session:
        yield session


@pytest.fixture
async def client(
    settings: Settings, database: Database, keyring: KeyRing
) -> AsyncIterator[AsyncClient]:
    app = create_app(settings, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


@pytest.fixture(scope="session")
def admin_url(database_url: str) -> str:
    """A URL on the same server for creating throwaway databases (e2e and migration tests)."""
    return make_url(database_url).set(database="postgres").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_url(database_url: str, admin_url: str) -> Iterator[str]:
    """A migrated database used as the template of each end-to-end test's own database."""
    name = f"idp_template_{os.getpid()}"
    execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute_sync(admin_url, f'CREATE DATABASE "{name}"')
    url = database_named(database_url, name)
    command.upgrade(alembic_config(url), "head")
    yield url
    execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def e2e_database(template_url: str, admin_url: str) -> Iterator[str]:
    """A fresh migrated database for one end-to-end test, for processes that commit for real."""
    name = f"idp_e2e_{uuid.uuid4().hex[:10]}"
    template = make_url(template_url).database
    execute_sync(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield database_named(template_url, name)
    execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
