"""The password policy: every rule with its message, at creation, reset and change; and no
password, however odd, makes the token endpoint answer 500."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ValidationFailedError
from idp.configuration.settings import Settings
from idp.controllers.errors import error_response
from idp.schemas.users import UserCreate
from idp.services import passwords
from idp.services import users as users_service
from idp.services.permissions import SYSTEM
from tests.helpers import PASSWORD, login, make_user
from tests.live import invoke_idp


async def check(settings: Settings, password: str, **user: str) -> None:
    users_service.check_new_password(password, settings, **user)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("seven c", "at least 8 characters"),
        ("", "at least 8 characters"),
        ("é" * 36 + "x", "longer than 72 bytes in UTF-8"),  # 37 characters, 73 bytes
        ("x" * 73, "longer than 72 bytes in UTF-8"),
        ("🔑" * 19, "longer than 72 bytes in UTF-8"),  # 19 characters, 76 bytes
        ("correct\x00horse battery", "must not contain NUL"),
        ("abcdefgh\ud800", "not valid Unicode"),  # a lone surrogate, as JSON can carry
        ("password1", "too common"),
        ("Password1", "too common"),  # the list is compared lowercased...
        (" iloveyou ", "too common"),  # ...and stripped
        ("qwertyuiop", "too common"),
    ],
)
async def test_each_rule_has_a_clear_message(
    settings: Settings, password: str, message: str
) -> None:
    with pytest.raises(ValidationFailedError, match=message) as refused:
        await check(settings, password)
    response = error_response(refused.value)
    assert response.status_code == 422
    assert message.encode() in response.body


@pytest.mark.parametrize(
    "password",
    [
        "all lowercase words",  # no composition rules
        "90210371649205",
        "🔑🗝️🔐🔒🔓🚪🧱🏰",  # emoji only: eight characters, 37 bytes
        "é" * 36,  # exactly 72 bytes
        "パスワードは秘密です",  # any Unicode
        "cafe\u0301 au lait",  # decomposed accents count as the characters a person sees
    ],
)
async def test_acceptable_passwords(settings: Settings, password: str) -> None:
    await check(settings, password)


async def test_minimum_length_is_a_setting(settings: Settings) -> None:
    strict = settings.model_copy(update={"password_min_length": 12})
    with pytest.raises(ValidationFailedError, match="at least 12 characters"):
        await check(strict, "eleven char")
    await check(strict, "twelve chars")


@pytest.mark.parametrize(
    "password", ["Alice.Liddell", "alice.liddell@wonderland.example", "ALICE.LIDDELL"]
)
async def test_username_and_email_are_refused_unless_turned_off(
    settings: Settings, password: str
) -> None:
    who = {"username": "alice.liddell", "email": "alice.liddell@wonderland.example"}
    with pytest.raises(ValidationFailedError, match="must not be the username or the email"):
        await check(settings, password, **who)
    lenient = settings.model_copy(update={"password_refuse_user_info": False})
    await check(lenient, password, **who)


def test_common_list_is_shipped_in_the_package_and_loaded_once() -> None:
    shipped = resources.files("idp").joinpath("data", passwords.COMMON_PASSWORDS_FILE)
    assert shipped.is_file()
    assert Path(str(shipped)).is_relative_to(Path(passwords.__file__).parent.parent)
    entries = passwords.common_passwords()
    assert isinstance(entries, frozenset)
    assert len(entries) >= 10_000
    assert passwords.common_passwords() is entries
    assert len(gzip.decompress(shipped.read_bytes()).splitlines()) == len(entries)
    assert all(entry == entry.lower() for entry in entries)


async def test_refused_at_creation_reset_and_change(
    session: AsyncSession, settings: Settings
) -> None:
    with pytest.raises(ValidationFailedError, match="too common"):
        await users_service.create_user(
            session,
            settings,
            UserCreate(username="bob", email="bob@example.com", password="letmein1"),
            actor=SYSTEM,
        )
    with pytest.raises(ValidationFailedError, match="username"):
        await users_service.create_user(
            session,
            settings,
            UserCreate(username="bob", email="bob@example.com", password="bob@example.com"),
            actor=SYSTEM,
        )
    user = await make_user(session, settings, "carolina.h")
    with pytest.raises(ValidationFailedError, match="too common"):
        await users_service.set_password(
            session, settings, user, "football", actor=SYSTEM, now=datetime.now(UTC)
        )
    with pytest.raises(ValidationFailedError, match="username"):
        await users_service.set_password(
            session, settings, user, "Carolina.H@Example.com", actor=SYSTEM, now=datetime.now(UTC)
        )
    # A change (`/me/password`) passes the user, so the same rules see its name.
    with pytest.raises(ValidationFailedError, match="username"):
        users_service.check_new_password("CAROLINA.H", settings, user=user)
    with pytest.raises(ValidationFailedError, match="72 bytes"):
        users_service.check_new_password("ü" * 40, settings, user=user)
    await users_service.set_password(
        session, settings, user, "a fresh long passphrase", actor=SYSTEM, now=datetime.now(UTC)
    )
    assert await passwords.verify_password("a fresh long passphrase", user.password_hash or "")


def test_the_cli_prints_the_rule_in_one_line(tmp_path: Path) -> None:
    env = {
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_BCRYPT_ROUNDS": "4",
    }
    assert invoke_idp("db", "upgrade", env=env).returncode == 0
    result = invoke_idp(
        "users", "create", "dave", "--email", "dave@example.com", env=env, stdin="sunshine\n"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the password is too common: it is on a list of frequently used passwords"
    ]


# No 500 at the token endpoint ------------------------------------------------------------

ODD_PASSWORDS = [
    "x" * 73,  # one byte over bcrypt's limit
    "é" * 37,  # 74 bytes in 37 characters
    "🔑🔑🔑",  # emoji only
    "🔑" * 100,
    "nul\x00inside",
    "\x00",
    " ",
    "x" * 10_000,
    PASSWORD + "\x00",  # the right password with a NUL after it must not match
    PASSWORD[:-1],
]

RAW_BODIES = [
    b"password=%ED%A0%80",  # a UTF-8-encoded lone surrogate
    b"password=%ED%A0%80%ED%B0%80",  # an encoded surrogate pair (CESU-8)
    b"password=%F0%9F",  # truncated UTF-8
    b"password=%FF%FE%FD",
    b"password=%",  # broken percent-encoding
    b"password=%zz",
    b"password=" + "🔑".encode() * 30,  # raw, not percent-encoded
    b"password=",  # empty
]


async def test_no_password_makes_the_token_endpoint_fail(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    for password in ODD_PASSWORDS:
        answers = set()
        for username in ("alice", "nobody"):
            response = await login(client, username, password)
            assert response.status_code == 400, (username, password[:20])
            answers.add(response.text)
        [answer] = answers  # the same whether the account exists
        # No account can have a password bcrypt cannot check: refused as a malformed request.
        uncheckable = len(password.encode()) > 72 or "\x00" in password
        expected = "invalid_request" if uncheckable else "invalid_grant"
        assert json.loads(answer)["error"] == expected
    for body in RAW_BODIES:
        response = await client.post(
            "/token",
            content=b"grant_type=password&username=alice&" + body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400, body
        assert response.json()["error"] in {"invalid_grant", "invalid_request"}
