"""The async engine and the one place where a unit of work commits or rolls back."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

from idp.configuration.exceptions import IdpError, ServiceUnavailableError, ValidationFailedError
from idp.configuration.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the engine for `IDP_DATABASE_URL` with pool and timeout settings applied."""
    if settings.is_sqlite:
        _private_sqlite_file(settings.database_url)
        engine = create_async_engine(
            settings.database_url,
            hide_parameters=True,
            connect_args={"timeout": settings.db_statement_timeout},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    statement_ms = str(int(settings.db_statement_timeout * 1000))
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # Not `pool_pre_ping`: on asyncpg it costs three round trips (BEGIN, an empty query,
        # ROLLBACK) per checkout, more than a refresh grant's own work; see _drop_closed.
        pool_recycle=1800,
        # Error messages would quote bound values: password hashes, token hashes, emails.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_statement_timeout + 1,
            "server_settings": {
                "statement_timeout": statement_ms,
                "idle_in_transaction_session_timeout": str(int(statement_ms) * 6),
                "application_name": "idp",
            },
        },
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed)
    return engine


def _drop_closed(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has closed (a restart, a terminated backend,
    the idle-in-transaction timeout) before it is used, without a round trip: asyncpg reads
    the server's goodbye while the connection idles in the pool, and then reports it closed.
    The pool discards it and checks out another, as after a failed pre-ping."""
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("connection closed by the server")


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does, or make an existing one so:
    it holds password hashes. SQLite gives its -wal and -shm files the database file's mode."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
    except OSError:
        # A missing directory or a file owned by another user: SQLite reports it on connect.
        pass


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# Errors that mean "the database is not there or cannot serve now", as opposed to a bad
# statement: refused or lost connections, a full pool, a cancelled statement (the statement
# timeout, or PostgreSQL shutting down), too many connections.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InterfaceError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's error, the DBAPI adapter's, the driver's."""
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or what it wraps, says the database cannot be reached or cannot serve
    now (not a constraint or SQL error)."""
    return any(
        isinstance(error, UNAVAILABLE_ERRORS)
        or (isinstance(error, DBAPIError) and error.connection_invalidated)
        for error in _chain(exc)
    )


def is_invalid_data(exc: BaseException) -> bool:
    """True when PostgreSQL refused a value a client sent (SQLSTATE class 22: NUL in text, a
    number out of range, bad encoding): the client's mistake, a 422 rather than a 500."""
    return any(isinstance(error, asyncpg.exceptions.DataError) for error in _chain(exc))


@dataclass(frozen=True, slots=True)
class DatabaseProbe:
    reachable: bool
    revision: str | None


class Database:
    """Engine plus session factory. `bind` lets tests run every session inside one transaction."""

    def __init__(self, settings: Settings, bind: AsyncConnection | None = None) -> None:
        self.engine = create_engine(settings) if bind is None else bind.engine
        if bind is None:
            self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        else:
            self.sessionmaker = async_sessionmaker(
                bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit when the block succeeds, roll back when it raises, and
        translate what the database says: unreachable is `ServiceUnavailableError` (503), a
        value PostgreSQL refuses is `ValidationFailedError` (422), never a 500.

        Work that must outlive a failed request (lockout counters, the family a reused refresh
        token revokes) opens a unit of work of its own rather than keeping this one's changes.
        """
        try:
            async with self.sessionmaker() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    with suppress(Exception):  # a dead connection cannot roll back
                        await session.rollback()
                    raise
        except IdpError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise ServiceUnavailableError("database unreachable") from exc
            if is_invalid_data(exc):
                raise ValidationFailedError("a value is out of range or not valid text") from exc
            raise

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        return (await self.probe()).reachable

    async def probe(self) -> DatabaseProbe:
        """Whether the database answers, and its Alembic revision (None: not migrated at all)."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                try:
                    revision = (
                        await connection.execute(text("SELECT version_num FROM alembic_version"))
                    ).scalar_one_or_none()
                except Exception:  # no alembic_version table: an empty database
                    revision = None
        except Exception:
            return DatabaseProbe(reachable=False, revision=None)
        return DatabaseProbe(reachable=True, revision=revision)

    def pool_status(self) -> tuple[int, int, int] | None:
        """(size, checked out, overflow) of a queue pool; None for pools that keep no count."""
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return None
        # `overflow()` counts from -size up while the pool fills; only the excess is overflow.
        return pool.size(), pool.checkedout(), max(0, pool.overflow())

    async def dispose(self) -> None:
        await self.engine.dispose()
