"""Attacks on the login path (issue 13: items 4, 5, 6, 8 and the password and token parts of
14), each performed against the app and refused."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from joserfc import jws
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import ValidationFailedError
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.models import AuditEvent, User
from idp.schemas.roles import RoleCreate
from idp.services import authentication, passwords
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.keyring import KeyRing
from idp.services.permissions import SYSTEM
from idp.services.ratelimit import RateLimiter
from tests.conftest import make_settings
from tests.helpers import PASSWORD, ManualClock, login, make_user
from tests.helpers import sql_statements as statements
from tests.lockout_helpers import CheckCounter, client_at

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
    await login(client, "nobody", password)  # the built-in client is now in the cache
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


# 8. A flood of refused logins must not queue the owner's login ----------------------------


@pytest.fixture
async def pooled_app(
    e2e_database: str, keys_dir: Path, keyring: KeyRing
) -> AsyncIterator[tuple[FastAPI, Database]]:
    """An app on its own migrated database with a real pool: requests truly run in parallel."""
    settings = make_settings(e2e_database, keys_dir, lockout_threshold=3)
    database = Database(settings)
    try:
        yield create_app(settings, database=database, keyring=keyring), database
    finally:
        await database.dispose()


async def test_a_refused_attempts_dummy_hash_does_not_hold_the_owners_login(
    pooled_app: tuple[FastAPI, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker's address is locked out of alice; its next guess runs the dummy bcrypt
    check, held here until released (a slow hasher, not wall-clock noise). Meanwhile alice's
    own login from elsewhere must go through, not wait behind it."""
    app, database = pooled_app
    settings: Settings = app.state.settings
    async with database.session() as session:
        await make_user(session, settings, "alice")
    async with client_at(app, "203.0.113.66") as attacker, client_at(app, "198.51.100.7") as owner:
        for i in range(3):
            assert (await login(attacker, "alice", f"guess {i}")).status_code == 400
        dummy = authentication._dummy_hash(settings.bcrypt_rounds)
        entered, release = threading.Event(), threading.Event()
        check = passwords.verify_password_sync

        def slow_dummy(password: str, password_hash: str) -> bool:
            if password_hash == dummy:
                entered.set()
                release.wait(30)
            return check(password, password_hash)

        monkeypatch.setattr(passwords, "verify_password_sync", slow_dummy)
        refused = asyncio.create_task(login(attacker, "alice", "guess 4"))
        try:
            assert await asyncio.to_thread(entered.wait, 10)  # the dummy check is running
            mine = await asyncio.wait_for(login(owner, "alice"), timeout=10)
            assert mine.status_code == 200
            assert not refused.done()  # the refused attempt is still in its dummy check
        finally:
            release.set()
        assert (await refused).status_code == 400


# 5. One address must not lock the owner out everywhere ------------------------------------


async def fresh(session: AsyncSession, user: User) -> User:
    await session.refresh(user)
    return user


async def guesses(client: AsyncClient, times: int, username: str = "alice") -> None:
    for i in range(times):
        assert (await login(client, username, f"wrong guess {i}")).status_code == 400


async def test_rounds_of_guesses_from_one_address_never_lock_the_owner_out_elsewhere(
    client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    checks: CheckCounter,
    clock: ManualClock,
) -> None:
    """Each round locks the attacker's address; waiting it out and guessing again, round
    after round, takes the account's count far past its threshold (6) from that one address."""
    user = await make_user(session, settings)
    async with client_at(app, "203.0.113.66") as attacker, client_at(app, "198.51.100.7") as owner:
        for _ in range(4):
            clock.advance(151)  # the longest wait: the attacker's address may guess again
            await guesses(attacker, 3)
            assert (await login(attacker)).status_code == 400  # this address is locked out
            account = await fresh(session, user)
            assert account.locked_until is None or account.locked_until <= clock.now()
        assert checks.against(user.password_hash) == 12
        assert (await login(owner)).status_code == 200


async def test_the_account_lock_needs_failures_from_several_addresses(
    client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    clock: ManualClock,
) -> None:
    assert settings.lockout_account_min_addresses == 3  # the default
    user = await make_user(session, settings)
    for address in ["192.0.2.1", "192.0.2.2"]:
        async with client_at(app, address) as guesser:
            await guesses(guesser, 3)
    account = await fresh(session, user)
    assert (account.failed_login_count, account.locked_until) == (6, None)  # two addresses
    async with client_at(app, "192.0.2.3") as third:
        await guesses(third, 1)  # the 7th failure, from a third address: the account locks
        assert (await login(third)).status_code == 400
    account = await fresh(session, user)
    assert account.locked_until is not None
    assert (account.locked_until - clock.now()).total_seconds() == 60
    assert account.lockout_count == 1
    async with client_at(app, "198.51.100.7") as owner:
        assert (await login(owner)).status_code == 400  # locked for everyone now
        clock.advance(61)
        assert (await login(owner)).status_code == 200


async def test_failures_forgotten_do_not_make_an_address_count(
    client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    clock: ManualClock,
) -> None:
    user = await make_user(session, settings)
    async with client_at(app, "192.0.2.1") as old:
        await guesses(old, 1)
    clock.advance(3601)  # that failure is forgotten
    for address in ["192.0.2.2", "192.0.2.3"]:
        async with client_at(app, address) as guesser:
            await guesses(guesser, 3)
    assert (await fresh(session, user)).locked_until is None  # two addresses count, not three


def test_the_minimum_of_addresses_is_a_setting(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///x.db"
    assert make_settings(url, tmp_path).lockout_account_min_addresses == 3
    assert make_settings(url, tmp_path, lockout_account_min_addresses=1)
    with pytest.raises(ValueError, match="lockout_account_min_addresses"):
        make_settings(url, tmp_path, lockout_account_min_addresses=0)


# 6. Guessing the current password with a stolen access token ------------------------------


async def password_change(client: AsyncClient, token: str, current: str) -> Response:
    return await client.post(
        "/me/password",
        json={"current_password": current, "new_password": "a brand new passphrase"},
        headers={"Authorization": f"Bearer {token}"},
    )


async def audit_actions(database: Database, user: User) -> list[tuple[str, str | None]]:
    async with database.session() as session:
        rows = await session.execute(
            select(AuditEvent.action, AuditEvent.client_address)
            .where(AuditEvent.target_id == str(user.id), AuditEvent.action.like("user.password%"))
            .order_by(AuditEvent.id)
        )
        return [(action, address) for action, address in rows.all()]


async def test_wrong_current_passwords_count_in_the_lockout_and_are_audited(
    pooled_app: tuple[FastAPI, Database], checks: CheckCounter
) -> None:
    """Real units of work (a pool, not one test transaction): what the failed request's own
    transaction rolls back must not take the counts and audit rows with it."""
    app, database = pooled_app
    settings: Settings = app.state.settings
    async with database.session() as session:
        user = await make_user(session, settings)
    async with client_at(app, "203.0.113.66") as thief, client_at(app, "198.51.100.7") as owner:
        token = (await login(owner)).json()["access_token"]
        for i in range(3):
            assert (await password_change(thief, token, f"guess {i}")).status_code == 403
        checked = checks.against(user.password_hash)
        locked = await password_change(thief, token, PASSWORD)  # right, but this address is out
        assert locked.status_code == 403
        assert "try again later" in locked.json()["detail"]
        assert checks.against(user.password_hash) == checked  # not even checked
        assert (await login(thief)).status_code == 400  # the same lock as for logins
        assert (
            await audit_actions(database, user)
            == [("user.password_change_failed", "203.0.113.66")] * 4
        )
        assert (await password_change(owner, token, PASSWORD)).status_code == 204
    assert (await audit_actions(database, user))[-1] == ("user.password_change", "198.51.100.7")
    async with database.session() as session:
        events = (await session.execute(select(AuditEvent.details))).scalars().all()
    assert PASSWORD not in str(events)


async def test_password_changes_are_rate_limited_per_address(
    pooled_app: tuple[FastAPI, Database],
) -> None:
    app, database = pooled_app
    settings: Settings = app.state.settings
    async with database.session() as session:
        user = await make_user(session, settings)
    async with client_at(app, "192.0.2.10") as client:
        token = (await login(client)).json()["access_token"]
        app.state.token_rate_limiter = RateLimiter(2, clock=lambda: 1000.0)
        for i in range(2):
            assert (await password_change(client, token, f"guess {i}")).status_code == 403
        limited = await password_change(client, token, PASSWORD)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"
    assert (
        await audit_actions(database, user) == [("user.password_change_failed", "192.0.2.10")] * 2
    )


# 14. Numeric dates that are not integers, and common passwords in disguise -----------------


def resigned(keyring: KeyRing, token: str, **dates: str) -> str:
    """`token`'s claims with `dates` replaced by raw JSON text (NaN, Infinity, 1e400, ...),
    signed with the server's own active key: only the numbers are hostile."""
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    for name in dates:
        claims[name] = f"@{name}@"
    payload = json.dumps(claims)
    for name, raw in dates.items():
        payload = payload.replace(f'"@{name}@"', raw)
    keyset = keyring.current
    header = {"alg": keyset.active_alg, "typ": "at+jwt", "kid": keyset.active_kid}
    return jws.serialize_compact(
        header, payload.encode(), keyset.active_key, algorithms=[keyset.active_alg]
    )


@pytest.mark.parametrize(
    "dates",
    [
        {"exp": "NaN"},
        {"exp": "Infinity"},
        {"exp": "1e400"},  # parses as infinity
        {"exp": "4102444800.5"},  # not an integer (the contract: integers, seconds)
        {"nbf": "NaN"},
        {"iat": "-Infinity"},
    ],
    ids=lambda dates: ",".join(f"{k}={v}" for k, v in dates.items()),
)
async def test_a_token_whose_dates_are_not_integers_is_refused(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    keyring: KeyRing,
    dates: dict[str, str],
) -> None:
    await roles_service.create_role(
        session, RoleCreate(name="resource-server", permissions=["tokens:introspect"]), actor=SYSTEM
    )
    await make_user(session, settings, "rs", roles=["resource-server"])
    caller = (await login(client, "rs")).json()["access_token"]
    hostile = resigned(keyring, caller, **dates)
    me = await client.get("/me", headers={"Authorization": f"Bearer {hostile}"})
    assert me.status_code == 401
    assert me.headers["www-authenticate"].startswith("Bearer")
    answer = await client.post(
        "/introspect", data={"token": hostile}, headers={"Authorization": f"Bearer {caller}"}
    )
    assert (answer.status_code, answer.json()) == (200, {"active": False})


@pytest.mark.parametrize(
    "disguised",
    [
        "ｐａｓｓｗｏｒｄ１２３",  # fullwidth
        "PASSWORD123",
        "ᴾᴬˢˢᵂᴼᴿᴰ¹²³",  # superscripts (compatibility forms)
        "password123",  # the plain entry, for reference
    ],
)
async def test_common_passwords_are_refused_in_compatibility_forms(
    session: AsyncSession, settings: Settings, disguised: str
) -> None:
    user = await make_user(session, settings)
    with pytest.raises(ValidationFailedError, match="too common"):
        await users_service.set_password(
            session, settings, user, disguised, actor=SYSTEM, now=datetime.now(UTC)
        )


async def test_existing_hashes_stay_valid_the_password_itself_is_hashed_unchanged(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    """Normalising is for the list only: a password keeps the bytes it was set with."""
    fullwidth = "ｃｏｒｒｅｃｔ ｈｏｒｓｅ ｂａｔｔｅｒｙ"
    await make_user(session, settings, "alice", password=fullwidth)
    assert (await login(client, "alice", fullwidth)).status_code == 200
    assert (await login(client, "alice", "correct horse battery")).status_code == 400
