"""The rotation statement itself: on PostgreSQL one statement of data-modifying CTEs, on SQLite
the same steps one by one. Both must agree on every outcome: live, idle- or absolutely
expired, revoked, consumed, another client's, and a revocation that commits while the
rotation waits for the family's row lock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import InvalidGrantError
from idp.configuration.settings import Settings
from idp.models import RefreshFamily, RefreshToken
from idp.repository import refresh_tokens as refresh_repo
from idp.schemas.roles import RoleCreate
from idp.services import refresh_tokens
from idp.services import roles as roles_service
from idp.services.permissions import SYSTEM
from tests.conftest import alembic_config, make_settings
from tests.helpers import make_user

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(hours=1)


@pytest.fixture
async def sqlite_session(tmp_path: Path) -> AsyncIterator[tuple[AsyncSession, Settings]]:
    """A session on a fresh migrated SQLite file."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'idp.db'}", tmp_path)
    await asyncio.to_thread(command.upgrade, alembic_config(settings.database_url), "head")
    database = Database(settings)
    try:
        async with database.session() as session:
            yield session, settings
    finally:
        await database.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session(request: pytest.FixtureRequest) -> tuple[AsyncSession, Settings]:
    """A session on the suite's PostgreSQL (inside the test's transaction) or on SQLite."""
    if request.param == "sqlite":
        found: tuple[AsyncSession, Settings] = request.getfixturevalue("sqlite_session")
        return found
    return request.getfixturevalue("session"), request.getfixturevalue("settings")


async def _family(
    session: AsyncSession, settings: Settings, *, roles: list[str] | None = None
) -> tuple[refresh_tokens.IssuedRefreshToken, uuid.UUID]:
    for name in roles or ():
        await roles_service.create_role(session, RoleCreate(name=name), actor=SYSTEM)
    user = await make_user(session, settings, roles=roles)
    issued = await refresh_tokens.start_family(
        session, settings, user_id=user.id, client_id="app", scope="a b", now=NOW
    )
    return issued, user.id


async def _rotate(
    session: AsyncSession,
    token: str,
    *,
    now: datetime = NOW,
    client_id: str | None = None,
    allowed_audiences: tuple[str, ...] | None = ("api",),
) -> refresh_repo.Rotation | refresh_repo.FamilyRevokedMeanwhile | None:
    return await refresh_repo.rotate(
        session,
        refresh_tokens.hash_token(token),
        refresh_tokens.hash_token("successor"),
        now=now,
        idle_expires_at=now + IDLE,
        allowed_audiences=allowed_audiences,
        client_id=client_id,
    )


async def _tokens_of(session: AsyncSession, family_id: uuid.UUID) -> list[tuple[str, bool]]:
    rows = await session.execute(
        select(RefreshToken.token_hash, RefreshToken.consumed_at.is_not(None))
        .where(RefreshToken.family_id == family_id)
        .order_by(RefreshToken.created_at, RefreshToken.consumed_at.is_(None))
    )
    return [(token_hash, bool(consumed)) for token_hash, consumed in rows.all()]


async def test_a_live_token_is_consumed_and_replaced_with_user_and_sorted_roles(
    any_session: tuple[AsyncSession, Settings],
) -> None:
    session, settings = any_session
    issued, user_id = await _family(session, settings, roles=["zeta", "alpha"])
    rotation = await _rotate(session, issued.token, now=NOW + timedelta(minutes=5))
    assert isinstance(rotation, refresh_repo.Rotation)
    assert rotation.family == refresh_repo.FamilySnapshot(
        issued.family.id, user_id, "app", "a b", None
    )
    assert rotation.user == refresh_repo.TokenHolder(
        user_id, "alice", "alice@example.com", is_active=True
    )
    assert rotation.roles == ["alpha", "zeta"]
    assert await _tokens_of(session, issued.family.id) == [
        (refresh_tokens.hash_token(issued.token), True),
        (refresh_tokens.hash_token("successor"), False),
    ]
    idle = await session.scalar(
        select(RefreshFamily.idle_expires_at)
        .where(RefreshFamily.id == issued.family.id)
        .execution_options(populate_existing=True)
    )
    assert idle == NOW + timedelta(minutes=5) + IDLE


async def test_a_user_without_roles_gets_an_empty_list(
    any_session: tuple[AsyncSession, Settings],
) -> None:
    session, settings = any_session
    issued, _ = await _family(session, settings)
    rotation = await _rotate(session, issued.token)
    assert isinstance(rotation, refresh_repo.Rotation)
    assert rotation.roles == []


async def test_the_idle_expiry_is_capped_by_the_absolute_one(
    any_session: tuple[AsyncSession, Settings],
) -> None:
    session, settings = any_session
    issued, _ = await _family(session, settings)
    end = NOW + timedelta(minutes=30)
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == issued.family.id)
        .values(expires_at=end, idle_expires_at=end)
    )
    assert isinstance(await _rotate(session, issued.token), refresh_repo.Rotation)
    idle = await session.scalar(
        select(RefreshFamily.idle_expires_at)
        .where(RefreshFamily.id == issued.family.id)
        .execution_options(populate_existing=True)
    )
    assert idle == end


@pytest.mark.parametrize("case", ["idle expired", "revoked", "consumed", "other client"])
async def test_a_dead_token_changes_nothing(
    any_session: tuple[AsyncSession, Settings], case: str
) -> None:
    session, settings = any_session
    issued, _ = await _family(session, settings)
    now, client_id = NOW, None
    if case == "idle expired":
        now = issued.family.idle_expires_at
    elif case == "revoked":
        await refresh_repo.revoke_family(session, issued.family.id, now=NOW)
    elif case == "consumed":
        await refresh_repo.consume(session, refresh_tokens.hash_token(issued.token), now=NOW)
    else:
        client_id = "another app"
    before = await _tokens_of(session, issued.family.id)
    assert await _rotate(session, issued.token, now=now, client_id=client_id) is None
    assert await _tokens_of(session, issued.family.id) == before
    assert await _rotate(session, "unknown", now=now) is None


@pytest.mark.parametrize("case", ["inactive user", "audience no longer configured"])
async def test_postgresql_refuses_what_the_grant_would_refuse_without_consuming(
    session: AsyncSession, settings: Settings, case: str
) -> None:
    """So that a rotation may commit by itself: the grant's own later checks then never fail."""
    issued, user_id = await _family(session, settings)
    own: tuple[str, ...] = ("api", "admin")
    if case == "inactive user":
        await session.execute(
            text("UPDATE users SET is_active = false WHERE id = :id"), {"id": user_id}
        )
    else:
        await session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == issued.family.id)
            .values(audience=["api", "retired"])
        )
    before = await _tokens_of(session, issued.family.id)
    assert await _rotate(session, issued.token, allowed_audiences=own) is None
    assert await _tokens_of(session, issued.family.id) == before


@pytest.mark.parametrize("audience", [None, [], ["api"], ["api", "admin"]])
async def test_postgresql_accepts_configured_or_default_audiences(
    session: AsyncSession, settings: Settings, audience: list[str] | None
) -> None:
    issued, _ = await _family(session, settings)
    await session.execute(
        update(RefreshFamily).where(RefreshFamily.id == issued.family.id).values(audience=audience)
    )
    rotation = await _rotate(session, issued.token, allowed_audiences=("api", "admin"))
    assert isinstance(rotation, refresh_repo.Rotation)
    assert (rotation.family.audience or None) == (audience or None)


async def test_the_owning_client_may_rotate(any_session: tuple[AsyncSession, Settings]) -> None:
    session, settings = any_session
    issued, _ = await _family(session, settings)
    assert isinstance(await _rotate(session, issued.token, client_id="app"), refresh_repo.Rotation)


@pytest.mark.parametrize("final", [False, True])
async def test_a_revocation_committed_while_the_rotation_waits_is_seen(
    e2e_database: str, tmp_path: Path, final: bool
) -> None:
    """The family row is locked by an uncommitted revocation: the rotation waits for the lock,
    sees the revocation and refuses with `invalid_grant` (not reuse), leaving the token
    unconsumed in a revoked family, whether it would have committed by itself or not."""
    settings = make_settings(e2e_database, tmp_path)
    database = Database(settings)
    try:
        async with database.session() as session:
            issued, _ = await _family(session, settings)
        async with database.engine.connect() as revoker:
            await revoker.execute(
                update(RefreshFamily)
                .where(RefreshFamily.id == issued.family.id)
                .values(revoked_at=NOW)
            )

            async def refresh() -> None:
                async with database.session() as session:
                    await refresh_tokens.rotate(
                        session, settings, issued.token, client_id=None, now=NOW, final=final
                    )

            task = asyncio.create_task(refresh())
            async with database.engine.connect() as watcher:
                for _ in range(100):
                    waiting = await watcher.scalar(
                        text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.05)
                assert waiting, "the rotation never waited for the family's lock"
            await revoker.commit()
            with pytest.raises(InvalidGrantError) as refused:
                await task
            assert not isinstance(refused.value, refresh_tokens.ReusedRefreshTokenError)
        async with database.session() as session:
            assert await _tokens_of(session, issued.family.id) == [
                (refresh_tokens.hash_token(issued.token), False)
            ]
    finally:
        await database.dispose()


@pytest.mark.parametrize("final", [True, False])
async def test_a_final_rotation_commits_by_itself(
    e2e_database: str, tmp_path: Path, final: bool
) -> None:
    """With nothing left to refuse, the rotation is visible to others before the unit of work
    ends (no BEGIN or COMMIT); otherwise only once it commits."""
    settings = make_settings(e2e_database, tmp_path)
    database = Database(settings)
    try:
        async with database.session() as session:
            issued, _ = await _family(session, settings)
        old_hash = refresh_tokens.hash_token(issued.token)
        async with database.session() as session:
            rotated = await refresh_tokens.rotate(
                session, settings, issued.token, client_id=None, now=NOW, final=final
            )
            async with database.engine.connect() as other:
                consumed = await other.scalar(
                    select(RefreshToken.consumed_at.is_not(None)).where(
                        RefreshToken.token_hash == old_hash
                    )
                )
            assert consumed is final
        async with database.session() as session:
            assert await _tokens_of(session, issued.family.id) == [
                (old_hash, True),
                (refresh_tokens.hash_token(rotated.token), False),
            ]
    finally:
        await database.dispose()


async def test_concurrent_final_rotations_of_one_token_are_reuse(
    e2e_database: str, tmp_path: Path
) -> None:
    settings = make_settings(e2e_database, tmp_path)
    database = Database(settings)
    try:
        async with database.session() as session:
            issued, _ = await _family(session, settings)

        async def refresh() -> str:
            async with database.session() as session:
                rotated = await refresh_tokens.rotate(
                    session, settings, issued.token, client_id=None, now=NOW, final=True
                )
                return rotated.token

        results = await asyncio.gather(*(refresh() for _ in range(5)), return_exceptions=True)
        winners = [r for r in results if isinstance(r, str)]
        assert len(winners) == 1
        assert all(
            isinstance(r, refresh_tokens.ReusedRefreshTokenError)
            for r in results
            if r not in winners
        )
    finally:
        await database.dispose()
