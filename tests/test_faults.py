"""Database faults: a stopped server, a full pool, a statement that runs too long, a lock.

`/readyz` and `/token` answer 503 (never a 500, never a token) while the JWKS is still served
from memory, and the service recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic import command
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from idp.configuration.database import Database, is_invalid_data, is_unavailable
from idp.configuration.exceptions import ServiceUnavailableError, ValidationFailedError
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.conftest import ISSUER, alembic_config, make_settings
from tests.helpers import PASSWORD, login, make_user
from tests.live import LiveServer, database_named, execute, execute_sync, live_server
from tests.pg_cluster import PgCluster, postgres_bindir

# Pool, timeouts and errors, on the suite's PostgreSQL ---------------------------------------


@pytest.fixture
async def own_database(
    migrated_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Database]]:
    """A real engine with its own pool (not the test transaction), short timeouts."""
    settings = make_settings(
        migrated_url,
        tmp_path,
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout=0.3,
        db_statement_timeout=0.5,
    )
    database = Database(settings)
    yield settings, database
    await database.dispose()


async def test_pool_and_timeout_settings_are_applied(
    own_database: tuple[Settings, Database], migrated_url: str, tmp_path: Path
) -> None:
    _, database = own_database
    async with database.session() as session:
        timeout = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
        name = (await session.execute(text("SHOW application_name"))).scalar_one()
    assert (timeout, name) == ("500ms", "idp")
    bigger = Database(
        make_settings(
            migrated_url, tmp_path, db_pool_size=7, db_max_overflow=3, db_pool_timeout=2.5
        )
    )
    pool = bigger.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (7, 3, 2.5)  # type: ignore[attr-defined]
    await bigger.dispose()


async def test_a_connection_the_server_closed_is_replaced_before_use(
    own_database: tuple[Settings, Database], migrated_url: str
) -> None:
    """No pre-ping round trip: a pooled connection whose backend was terminated (as by a
    restart) is seen closed at checkout and replaced, so the next unit of work succeeds."""
    _, database = own_database  # a pool of one connection
    async with database.session() as session:
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await execute(migrated_url, f"SELECT pg_terminate_backend({pid})")
    await asyncio.sleep(0.2)  # the pool's idle connection reads the server's goodbye
    async with database.session() as session:
        again = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert again != pid


async def test_a_statement_over_the_timeout_is_unavailable(
    own_database: tuple[Settings, Database],
) -> None:
    _, database = own_database
    with pytest.raises(ServiceUnavailableError):
        async with database.session() as session:
            await session.execute(text("SELECT pg_sleep(3)"))
    assert await database.ping()  # the connection is usable again


async def test_a_full_pool_is_unavailable(own_database: tuple[Settings, Database]) -> None:
    _, database = own_database
    async with database.engine.connect() as held:  # the pool's only connection
        await held.execute(text("SELECT 1"))
        with pytest.raises(ServiceUnavailableError):
            async with database.session() as session:
                await session.execute(text("SELECT 1"))


@pytest.mark.parametrize(
    ("sql", "value"),
    [("SELECT CAST(:v AS text)", "nul\x00byte"), ("SELECT CAST(:v AS integer)", 10**30)],
)
async def test_values_postgresql_refuses_are_client_errors(
    own_database: tuple[Settings, Database], sql: str, value: object
) -> None:
    _, database = own_database
    with pytest.raises(ValidationFailedError):
        async with database.session() as session:
            await session.execute(text(sql), {"v": value})


async def test_token_is_503_while_the_users_table_is_locked(
    e2e_database: str, keyring: KeyRing, tmp_path: Path
) -> None:
    settings = make_settings(e2e_database, tmp_path, db_statement_timeout=0.5)
    app = create_app(settings, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        async with app.state.database.session() as session:
            await make_user(session, settings)
        assert (await login(client)).status_code == 200
        locker = asyncio.create_task(
            execute(e2e_database, "BEGIN; LOCK TABLE users; SELECT pg_sleep(2); COMMIT;")
        )
        await asyncio.sleep(0.3)
        blocked = await login(client)
        assert blocked.status_code == 503
        assert "access_token" not in blocked.text
        assert (await client.get("/.well-known/jwks.json")).status_code == 200
        await locker
        assert (await login(client)).status_code == 200
        await app.state.database.dispose()


def _wrapped(inner: BaseException) -> BaseException:
    """`inner` as SQLAlchemy raises it: a DBAPIError whose cause is the driver's error."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise DBAPIError("SELECT 1", None, exc) from exc
    except DBAPIError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "unavailable", "invalid"),
    [
        (
            asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
            True,
            False,
        ),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True, False),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True, False),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True, False),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), True, False),
        (PoolTimeoutError("QueuePool limit reached"), True, False),
        (ConnectionRefusedError(), True, False),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False, False),
        (asyncpg.exceptions.UndefinedTableError("no such table"), False, False),
        (asyncpg.exceptions.CharacterNotInRepertoireError("NUL"), False, True),
        (asyncpg.exceptions.NumericValueOutOfRangeError("out of range"), False, True),
        (ValueError("a bug"), False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_database_errors_are_classified(
    error: BaseException, unavailable: bool, invalid: bool
) -> None:
    for raised in (error, _wrapped(error)):
        assert is_unavailable(raised) is unavailable
        assert is_invalid_data(raised) is invalid


# A real PostgreSQL stopped and started under running servers --------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries to run a cluster of the test's own")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster_database(cluster: PgCluster) -> str:
    execute_sync(cluster.url, "CREATE DATABASE idp")
    url = database_named(cluster.url, "idp")
    command.upgrade(alembic_config(url), "head")
    return url


def _token(server: LiveServer) -> httpx.Response:
    return httpx.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        timeout=15,
    )


def _wait_ready(server: LiveServer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "not ready again in time"
        time.sleep(0.2)


@pytest.mark.slow
def test_database_stopped_and_started_under_running_servers(
    cluster: PgCluster, cluster_database: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    env = {"IDP_DB_CONNECT_TIMEOUT": "2", "IDP_LOG_FORMAT": "json"}
    with live_server(cluster_database, tmp_path, keys_dir=keys, env=env) as server:
        created = server.idp("users", "create", "alice", "--email", "a@x.io", stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        first = _token(server)
        assert first.status_code == 200
        access = first.json()["access_token"]
        jwks = httpx.get(f"{server.url}/.well-known/jwks.json")

        cluster.stop()

        for _ in range(3):  # every time, not just the first: nothing is cached as "up"
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["database"] is False
            refused = _token(server)
            assert refused.status_code == 503
            assert "access_token" not in refused.text
            served = httpx.get(f"{server.url}/.well-known/jwks.json")
            assert served.status_code == 200
            assert served.content == jwks.content
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        me = httpx.get(f"{server.url}/me", headers={"Authorization": f"Bearer {access}"})
        assert me.status_code == 503
        assert httpx.get(f"{server.url}/metrics").status_code == 200

        # A server that starts while the database is down comes up, and is not ready.
        with live_server(
            cluster_database, tmp_path, keys_dir=keys, env=env, ready_path="/healthz"
        ) as late:
            assert httpx.get(f"{late.url}/readyz", timeout=10).status_code == 503
            assert httpx.get(f"{late.url}/.well-known/jwks.json").content == jwks.content

            cluster.start()  # same port: the same URL works again

            for running in (server, late):
                _wait_ready(running)
                assert _token(running).status_code == 200
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'idp_logins_total{outcome="unavailable"} 3.0' in metrics
            late_log = late.log()
        log = server.log()
    for lines in (log, late_log):
        assert "Traceback" not in lines
        assert '"status": 500' not in lines
    assert '"status": 503' in log
    assert "database unreachable (" in log
