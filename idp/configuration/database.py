"""The async engine and the one place where a unit of work commits or rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from idp.configuration.exceptions import IdpError, ServiceUnavailableError
from idp.configuration.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the engine for `IDP_DATABASE_URL` with pool and timeout settings applied."""
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url, connect_args={"timeout": settings.db_statement_timeout}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    statement_ms = str(int(settings.db_statement_timeout * 1000))
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# Errors that mean "the database is not there", as opposed to a bad statement.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached (not a constraint or SQL error)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    cause = exc.__cause__ or exc.__context__
    return (
        cause is not None
        and cause is not exc
        and type(cause).__name__
        in {
            "CannotConnectNowError",
            "ConnectionDoesNotExistError",
            "QueryCanceledError",
            "TooManyConnectionsError",
        }
    )


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
        """One unit of work: commit when the block succeeds, roll back on any exception
        (except an `IdpError` raised with `keep_changes=True`, which commits, then propagates).

        An unreachable database surfaces as `ServiceUnavailableError` (503), never as a 500.
        """
        async with self.sessionmaker() as session:
            try:
                try:
                    yield session
                except IdpError as refusal:
                    if not refusal.keep_changes:
                        raise
                    await session.commit()
                    raise
                await session.commit()
            except BaseException as exc:
                with suppress(Exception):  # a dead connection cannot roll back; it is discarded
                    await session.rollback()
                if not isinstance(exc, ServiceUnavailableError) and is_unavailable(exc):
                    raise ServiceUnavailableError("database unreachable") from exc
                raise

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
