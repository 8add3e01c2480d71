"""The request's database session: one unit of work per request, committed before the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """Commit when the endpoint returns, roll back when it raises (Database.session does both).

    Scoped to the endpoint function, so the commit happens before the response is sent and
    a failed commit is an error response, not a 200 for lost work.
    """
    async with database.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
