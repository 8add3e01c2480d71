"""Attacks on the login path (issue 13: items 4, 5, 6, 8 and the password and token parts of
14), each performed against the app and refused."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from idp.configuration.settings import Settings
from idp.models import User
from idp.services import passwords
from tests.helpers import ManualClock, login, make_user
from tests.lockout_helpers import CheckCounter

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
    from idp.configuration.clock import Clock

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


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent to the database while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# 4. Enumeration by timing with passwords bcrypt cannot check ------------------------------


@pytest.mark.parametrize("password", ["x" * 73, "é" * 37, "nul\x00inside"])
async def test_an_uncheckable_password_gets_the_same_answer_and_writes_for_every_account(
    client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    engine: AsyncEngine,
    checks: CheckCounter,
    clock: ManualClock,
    password: str,
) -> None:
    """Over 72 bytes (or with NUL) no password can be right: it is refused before the account
    is looked up, so neither the answer nor the database work depends on the username."""
    await make_user(session, settings, "alice")
    await make_user(session, settings, "locked")
    await make_user(session, settings, "disabled", active=False)
    await session.execute(
        update(User)
        .where(User.username == "locked")
        .values(locked_until=clock.now() + timedelta(hours=1))
    )
    await session.flush()
    answers, writes = {}, {}
    for username in ["nobody", "alice", "locked", "disabled"]:
        with statements(engine) as seen:
            response = await login(client, username, password)
        answers[username] = (response.status_code, response.text)
        writes[username] = seen
    assert set(answers.values()) == {answers["nobody"]}, answers
    assert all(seen == writes["nobody"] for seen in writes.values()), writes
    assert writes["nobody"] == []  # not even a lookup
    assert answers["nobody"][0] == 400
    assert "72 bytes" in answers["nobody"][1]
    assert checks.hashes == []
