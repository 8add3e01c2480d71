"""User and role rules on real PostgreSQL, through the services the API and CLI share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bcrypt
import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ConflictError, NotFoundError, ValidationFailedError
from idp.configuration.settings import Settings
from idp.models import LoginFailure, User
from idp.schemas.roles import RoleCreate
from idp.schemas.users import UserCreate
from idp.services import lockout as lockout_service
from idp.services import passwords
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.permissions import SYSTEM
from tests.helpers import make_user


async def test_create_user_hashes_password_with_configured_cost(
    session: AsyncSession, settings: Settings
) -> None:
    user = await users_service.create_user(
        session,
        settings,
        UserCreate(username="Alice", email="alice@example.com", password="correct horse"),
        actor=SYSTEM,
    )
    assert user.password_hash is not None
    assert passwords.hash_rounds(user.password_hash) == settings.bcrypt_rounds
    assert bcrypt.checkpw(b"correct horse", user.password_hash.encode())
    other = await passwords.hash_password("correct horse", settings.bcrypt_rounds)
    assert other != user.password_hash  # salted: same password, different hashes


@pytest.mark.parametrize(
    ("username", "email"),
    [("ALICE", "other@example.com"), ("bob", "ALICE@Example.com")],
)
async def test_username_and_email_unique_whatever_the_case(
    session: AsyncSession, settings: Settings, username: str, email: str
) -> None:
    await users_service.create_user(
        session, settings, UserCreate(username="alice", email="alice@example.com"), actor=SYSTEM
    )
    with pytest.raises(ConflictError):
        await users_service.create_user(
            session, settings, UserCreate(username=username, email=email), actor=SYSTEM
        )
    # The session is still usable after the conflict (the flush ran in a savepoint).
    found = await users_service.get_by_username(session, "Alice")
    assert found.username == "alice"


async def test_case_insensitive_uniqueness_is_a_database_constraint(session: AsyncSession) -> None:
    insert = text("INSERT INTO users (id, username, email) VALUES (gen_random_uuid(), :u, :e)")
    await session.execute(insert, {"u": "carol", "e": "carol@example.com"})
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(insert, {"u": "CAROL", "e": "carol2@example.com"})


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 8"),
        ("a" * 73, "72 bytes"),
        ("é" * 37, "72 bytes"),  # 37 characters, 74 bytes
        ("pass\x00word", "NUL"),
    ],
)
async def test_password_policy_refuses_with_a_clear_reason(
    session: AsyncSession, settings: Settings, password: str, reason: str
) -> None:
    with pytest.raises(ValidationFailedError, match=reason):
        await users_service.create_user(
            session,
            settings,
            UserCreate(username="dave", email="dave@example.com", password=password),
            actor=SYSTEM,
        )


async def test_72_byte_password_is_accepted_and_verifies(
    session: AsyncSession, settings: Settings
) -> None:
    password = "ü" * 36  # exactly 72 bytes
    user = await users_service.create_user(
        session,
        settings,
        UserCreate(username="erin", email="erin@example.com", password=password),
        actor=SYSTEM,
    )
    assert user.password_hash is not None
    assert await passwords.verify_password(password, user.password_hash)
    assert not await passwords.verify_password(password[:-1], user.password_hash)


async def test_unknown_role_is_not_found(session: AsyncSession, settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="nosuchrole"):
        await users_service.create_user(
            session,
            settings,
            UserCreate(username="frank", email="f@example.com", roles=["nosuchrole"]),
            actor=SYSTEM,
        )


async def test_migration_seeds_admin_role_with_whole_catalogue(session: AsyncSession) -> None:
    from idp.configuration.constants import ADMIN_ROLE, PERMISSIONS

    admin = await roles_service.get_role(session, ADMIN_ROLE)
    assert {p.code for p in admin.permissions} == set(PERMISSIONS)


async def test_roles_grant_revoke_and_last_admin_guard(
    session: AsyncSession, settings: Settings
) -> None:
    await roles_service.create_role(
        session, RoleCreate(name="auditor", permissions=["audit:read"]), actor=SYSTEM
    )
    with pytest.raises(ConflictError):
        await roles_service.create_role(session, RoleCreate(name="auditor"), actor=SYSTEM)
    user = await users_service.create_user(
        session,
        settings,
        UserCreate(username="gina", email="gina@example.com", roles=["auditor"]),
        actor=SYSTEM,
    )
    assert await roles_service.grant_role(session, user, "auditor", actor=SYSTEM) is False
    assert await roles_service.revoke_role(session, user, "auditor", actor=SYSTEM) is True

    generated = await users_service.ensure_admin(
        session, settings, username="root", email="root@example.com", password=None
    )
    assert generated is not None and len(generated) >= 20
    assert (
        await users_service.ensure_admin(
            session, settings, username="root2", email="root2@example.com", password=None
        )
        is None
    )
    root = await users_service.get_by_username(session, "root")
    with pytest.raises(ConflictError, match="no active user"):
        await roles_service.revoke_role(session, root, "admin", actor=SYSTEM)


async def test_list_users_filters_and_paginates(session: AsyncSession, settings: Settings) -> None:
    for i in range(5):
        await users_service.create_user(
            session,
            settings,
            UserCreate(
                username=f"list{i}", email=f"list{i}@example.com", roles=["admin"] if i % 2 else []
            ),
            actor=SYSTEM,
        )
    page, total = await users_service.list_users(session, limit=2, offset=0, username_prefix="LIST")
    assert total == 5 and [u.username for u in page] == ["list0", "list1"]
    admins, total_admins = await users_service.list_users(
        session, limit=10, username_prefix="list", role="admin"
    )
    assert total_admins == 2 and {u.username for u in admins} == {"list1", "list3"}
    assert all("admin" in [r.name for r in u.roles] for u in admins)
    with pytest.raises(ValidationFailedError):
        await users_service.list_users(session, limit=0)


async def test_list_users_searches_and_finds_locked_ones_on_postgresql(
    session: AsyncSession, settings: Settings
) -> None:
    """The CLI's `users list --search/--locked` queries, on PostgreSQL."""
    now = datetime.now(UTC)
    account = await make_user(session, settings, "locked_acct")
    address = await make_user(session, settings, "locked_addr")
    expired = await make_user(session, settings, "was_locked")
    await make_user(session, settings, "free_x1")
    await make_user(session, settings, "freeax1")
    await session.execute(
        update(User).where(User.id == account.id).values(locked_until=now + timedelta(hours=1))
    )
    await session.execute(
        update(User).where(User.id == expired.id).values(locked_until=now - timedelta(hours=1))
    )
    for n in range(3):
        await session.execute(
            insert(LoginFailure).values(
                user_id=address.id,
                client_address=f"198.51.100.{n}",
                locked_until=now + timedelta(minutes=5) if n else now - timedelta(minutes=5),
            )
        )
    page, total = await users_service.list_users(session, locked_at=now)
    assert [user.username for user in page] == ["locked_acct", "locked_addr"] and total == 2
    counts = await lockout_service.locked_addresses(session, page, now)
    assert counts == {address.id: 2}
    found, _ = await users_service.list_users(session, search="E_X")  # _ is not a wildcard
    assert [user.username for user in found] == ["free_x1"]
    found, _ = await users_service.list_users(session, search="D_ACCT@EXAMPLE")
    assert [user.username for user in found] == ["locked_acct"]
