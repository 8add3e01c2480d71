"""Refresh tokens in process: rotation, reuse detection, expiry on a controllable clock,
revocation, introspection, password change and disabling, purge."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from alembic import command
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.models import RefreshFamily, RefreshToken, UsedAssertion, User
from idp.repository import clients as clients_repo
from idp.repository import users as users_repo
from idp.schemas.roles import RoleCreate
from idp.services import refresh_tokens
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.keyring import KeyRing
from idp.services.permissions import SYSTEM
from tests.conftest import ISSUER, alembic_config, make_settings
from tests.helpers import (
    PASSWORD,
    ManualClock,
    bearer,
    login,
    make_client,
    make_user,
    refresh,
)
from tests.live import free_port

NEW_PASSWORD = "another long passphrase"
DAY = 86_400


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def tokens(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def clock(client: AsyncClient) -> ManualClock:
    clock = ManualClock()
    client._transport.app.state.clock = clock  # type: ignore[attr-defined]
    return clock


@pytest.fixture
async def alice(session: AsyncSession, settings: Settings) -> User:
    return await make_user(session, settings)


@pytest.fixture(autouse=True)
async def public_clients(session: AsyncSession, settings: Settings, keyring: KeyRing) -> None:
    """Registered public clients with the password grant: a token request names one. (The
    key ring's fixture creates the keystore, where the secrets' pepper is.)"""
    for client_id in ("web", "mobile", "orders-web"):
        await make_client(session, settings, client_id, scopes=["orders:read", "profile", "a", "b"])


async def invalid_grant_body(client: AsyncClient) -> str:
    """The one body every refused grant gets (here: a wrong password)."""
    response = await login(client, "alice", "a wrong password!")
    assert response.status_code == 400
    return response.text


async def family_of(session: AsyncSession, family_id: str) -> RefreshFamily:
    family = await session.get(RefreshFamily, uuid.UUID(family_id), populate_existing=True)
    assert family is not None
    return family


# Issue and rotation ---------------------------------------------------------------------------


async def test_login_returns_an_opaque_refresh_token_stored_only_as_its_hash(
    client: AsyncClient, session: AsyncSession, alice: User
) -> None:
    body = await tokens(await login(client))
    token = body["refresh_token"]
    assert len(token) >= 43  # 32 random bytes, base64url
    assert "." not in token
    rows = (await session.execute(text("SELECT * FROM refresh_tokens"))).all()
    families = (await session.execute(text("SELECT * FROM refresh_families"))).all()
    assert len(rows) == 1
    assert len(families) == 1
    assert token not in repr(rows) + repr(families)
    stored = (await session.execute(select(RefreshToken))).scalar_one()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert claims_of(body["access_token"])["sid"] == str(stored.family_id)
    assert (await login(client)).json()["refresh_token"] != token  # a new family per login


async def test_refresh_rotates_and_carries_the_roles_held_now(
    client: AsyncClient, session: AsyncSession, alice: User
) -> None:
    first = await tokens(await login(client, client_id="orders-web", scope="orders:read profile"))
    assert claims_of(first["access_token"])["roles"] == []
    await roles_service.grant_role(session, alice, "admin", actor=SYSTEM)

    response = await refresh(client, first["refresh_token"])
    second = await tokens(response)
    assert response.headers["cache-control"] == "no-store"
    assert second["token_type"] == "Bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "orders:read profile"
    claims = claims_of(second["access_token"])
    assert claims["roles"] == ["admin"]
    assert claims["client_id"] == "orders-web"
    assert claims["scope"] == "orders:read profile"
    assert claims["sid"] == claims_of(first["access_token"])["sid"]
    assert claims["sub"] == str(alice.id)
    assert claims["jti"] != claims_of(first["access_token"])["jti"]

    consumed = (
        await session.execute(
            select(RefreshToken).where(
                RefreshToken.token_hash == refresh_tokens.hash_token(first["refresh_token"])
            )
        )
    ).scalar_one()
    assert consumed.consumed_at is not None
    third = await tokens(await refresh(client, second["refresh_token"]))
    assert (await client.get("/me", headers=bearer(third["access_token"]))).status_code == 200


async def test_reuse_of_a_consumed_token_revokes_the_whole_family(
    client: AsyncClient, session: AsyncSession, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    other_session = await tokens(await login(client))
    first = await tokens(await login(client))
    second = await tokens(await refresh(client, first["refresh_token"]))

    with caplog.at_level(logging.WARNING):
        replay = await refresh(client, first["refresh_token"])
    assert replay.status_code == 400
    assert replay.headers["cache-control"] == "no-store"
    assert replay.text == await invalid_grant_body(client)
    assert "reused" in caplog.text
    assert first["refresh_token"] not in caplog.text

    family = await family_of(session, claims_of(first["access_token"])["sid"])
    assert family.revoked_at is not None
    # The legitimate holder's newer token and its access token die with the family ...
    assert (await refresh(client, second["refresh_token"])).status_code == 400
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 401
    # ... while the user's other login session is untouched.
    assert (await refresh(client, other_session["refresh_token"])).status_code == 200


async def test_every_refresh_failure_gets_the_same_body(
    client: AsyncClient, session: AsyncSession, settings: Settings, alice: User, clock: ManualClock
) -> None:
    expected = await invalid_grant_body(client)
    consumed = (await tokens(await login(client)))["refresh_token"]
    await refresh(client, consumed)
    revoked = (await tokens(await login(client)))["refresh_token"]
    await client.post("/revoke", data={"token": revoked})
    other_client = (await tokens(await login(client, client_id="web")))["refresh_token"]
    expired = (await tokens(await login(client)))["refresh_token"]
    bob = await make_user(session, settings, "bob")
    bobs = (await tokens(await login(client, "bob")))["refresh_token"]
    bob.is_active = False
    await session.flush()
    clock.advance(settings.refresh_token_idle_ttl - 60)
    live = (await tokens(await login(client)))["refresh_token"]
    clock.advance(120)  # `expired` is now past its idle expiry, `live` is not

    answers = {
        "unknown": await refresh(client, "x" * 43),
        "huge": await refresh(client, "x" * 60_000),  # under IDP_MAX_BODY_SIZE
        "an access token": await refresh(
            client, (await tokens(await login(client)))["access_token"]
        ),
        "consumed": await refresh(client, consumed),
        "revoked": await refresh(client, revoked),
        "another client's": await refresh(client, other_client, client_id="mobile"),
        "expired": await refresh(client, expired),
        "disabled user": await refresh(client, bobs),
    }
    for name, response in answers.items():
        assert response.status_code == 400, name
        assert response.text == expected, name
    assert (await refresh(client, live)).status_code == 200


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": ""}, "invalid_request"),
        (
            {"grant_type": "refresh_token", "refresh_token": "x", "scope": "bad\\"},
            "invalid_request",
        ),
    ],
)
async def test_malformed_refresh_requests(
    client: AsyncClient, data: dict[str, str], error: str
) -> None:
    response = await client.post("/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_another_clients_refresh_does_not_consume_the_token(
    client: AsyncClient, alice: User
) -> None:
    token = (await tokens(await login(client, client_id="web")))["refresh_token"]
    assert (await refresh(client, token, client_id="mobile")).status_code == 400
    renewed = await tokens(await refresh(client, token, client_id="web"))
    assert claims_of(renewed["access_token"])["client_id"] == "web"
    assert (await refresh(client, renewed["refresh_token"])).status_code == 200


async def test_scope_may_narrow_never_widen(client: AsyncClient, alice: User) -> None:
    token = (await tokens(await login(client, client_id="web", scope="a b")))["refresh_token"]
    wider = await refresh(client, token, scope="a c")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    narrowed = await tokens(await refresh(client, token, scope="a"))  # not consumed by the 400
    assert narrowed["scope"] == "a"
    assert claims_of(narrowed["access_token"])["scope"] == "a"
    # The family keeps its scope: the next refresh without `scope` gets all of it again.
    again = await tokens(await refresh(client, narrowed["refresh_token"]))
    assert again["scope"] == "a b"

    unscoped = (await tokens(await login(client, client_id="web")))["refresh_token"]
    refused = await refresh(client, unscoped, scope="a")
    assert refused.json()["error"] == "invalid_scope"
    assert "scope" not in await tokens(await refresh(client, unscoped))


async def test_disabled_or_deleted_user_gets_invalid_grant(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    expected = await invalid_grant_body(client)
    bob = await make_user(session, settings, "bob")
    carol = await make_user(session, settings, "carol")
    bobs = (await tokens(await login(client, "bob")))["refresh_token"]
    carols = (await tokens(await login(client, "carol")))["refresh_token"]

    # Disabled behind the service's back (no session revocation): still refused.
    bob.is_active = False
    await session.flush()
    assert (await refresh(client, bobs)).text == expected
    bob.is_active = True
    await session.flush()
    assert (await refresh(client, bobs)).status_code == 200  # the refusal consumed nothing

    await users_repo.delete_user(session, carol.id)
    assert (await refresh(client, carols)).text == expected
    count = select(func.count()).select_from(RefreshFamily).where(RefreshFamily.user_id == carol.id)
    assert await session.scalar(count) == 0  # deleted with the user


# Expiry on a controllable clock ----------------------------------------------------------------


async def test_idle_expiry(
    client: AsyncClient, settings: Settings, alice: User, clock: ManualClock
) -> None:
    token = (await tokens(await login(client)))["refresh_token"]
    clock.advance(settings.refresh_token_idle_ttl - 1)
    token = (await tokens(await refresh(client, token)))["refresh_token"]  # use resets idleness
    clock.advance(settings.refresh_token_idle_ttl - 1)
    token = (await tokens(await refresh(client, token)))["refresh_token"]
    clock.advance(settings.refresh_token_idle_ttl)
    assert (await refresh(client, token)).status_code == 400


async def test_absolute_expiry_ends_even_an_active_session(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    alice: User,
    clock: ManualClock,
) -> None:
    assert (settings.refresh_token_ttl, settings.refresh_token_idle_ttl) == (14 * DAY, 3 * DAY)
    start = clock.now()
    first = await tokens(await login(client))
    token = first["refresh_token"]
    for _ in range(6):  # every two days, well within the idle limit, up to day 12
        clock.advance(2 * DAY)
        token = (await tokens(await refresh(client, token)))["refresh_token"]
    family = await family_of(session, claims_of(first["access_token"])["sid"])
    assert family.expires_at == start + timedelta(seconds=settings.refresh_token_ttl)
    assert family.idle_expires_at == family.expires_at  # day 12 + 3 is capped at day 14
    clock.advance(2 * DAY - 1)
    token = (await tokens(await refresh(client, token)))["refresh_token"]
    clock.advance(1)
    assert (await refresh(client, token)).status_code == 400


# Revocation (RFC 7009) -------------------------------------------------------------------------


async def test_revoking_a_refresh_token_ends_its_family(client: AsyncClient, alice: User) -> None:
    kept = await tokens(await login(client))
    first = await tokens(await login(client))
    second = await tokens(await refresh(client, first["refresh_token"]))

    response = await client.post(
        "/revoke", data={"token": second["refresh_token"], "token_type_hint": "refresh_token"}
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert (await refresh(client, second["refresh_token"])).status_code == 400
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 401
    assert (await client.get("/me", headers=bearer(kept["access_token"]))).status_code == 200
    assert (await refresh(client, kept["refresh_token"])).status_code == 200
    # Revoking again, or revoking with a hint that does not match, is still a plain 200.
    again = await client.post(
        "/revoke", data={"token": second["refresh_token"], "token_type_hint": "access_token"}
    )
    assert again.status_code == 200


async def test_revoking_an_access_token_ends_its_session(client: AsyncClient, alice: User) -> None:
    body = await tokens(await login(client))
    assert (await client.post("/revoke", data={"token": body["access_token"]})).status_code == 200
    assert (await refresh(client, body["refresh_token"])).status_code == 400
    assert (await client.get("/me", headers=bearer(body["access_token"]))).status_code == 401


@pytest.mark.parametrize(
    "token",
    ["unknown-token", "x" * 60_000, "not.a.jwt", "a.b.c" * 3000, "\u00e9\u00e8\U0001f600"],
)
async def test_revoking_unknown_or_malformed_tokens_is_200(client: AsyncClient, token: str) -> None:
    response = await client.post("/revoke", data={"token": token})
    assert response.status_code == 200
    assert response.content == b""


async def test_revoke_without_a_token_is_invalid_request(client: AsyncClient) -> None:
    for data in ({}, {"token": ""}, {"token_type_hint": "refresh_token"}):
        response = await client.post("/revoke", data=data)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
    assert (await client.post("/revoke", json={"token": "x"})).status_code == 400


# Introspection (RFC 7662) ----------------------------------------------------------------------


@pytest.fixture
async def introspector(client: AsyncClient, session: AsyncSession, settings: Settings) -> str:
    """An access token of a user whose role holds only `tokens:introspect`."""
    await roles_service.create_role(
        session, RoleCreate(name="resource-server", permissions=["tokens:introspect"]), actor=SYSTEM
    )
    await make_user(session, settings, "rs", roles=["resource-server"])
    token: str = (await tokens(await login(client, "rs")))["access_token"]
    return token


async def introspect(client: AsyncClient, caller: str, token: str, **extra: str) -> Response:
    return await client.post("/introspect", data={"token": token, **extra}, headers=bearer(caller))


async def test_introspection_requires_the_permission(
    client: AsyncClient, session: AsyncSession, settings: Settings, alice: User, introspector: str
) -> None:
    subject = (await tokens(await login(client)))["refresh_token"]
    anonymous = await client.post("/introspect", data={"token": subject})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.json()["error"] == "invalid_client"
    forged = await introspect(client, "not.a.token", subject)
    assert forged.status_code == 401
    # A refresh token is not a bearer credential.
    assert (await introspect(client, subject, subject)).status_code == 401

    alices_access = (await tokens(await login(client)))["access_token"]
    denied = await introspect(client, alices_access, subject)
    assert denied.status_code == 403
    assert "tokens:introspect" in denied.json()["detail"]

    allowed = await introspect(client, introspector, subject)
    assert allowed.status_code == 200
    assert allowed.json()["active"] is True
    # The permission is read from the database at each call: taking the role away is immediate.
    rs = await users_service.get_by_username(session, "rs")
    await roles_service.revoke_role(session, rs, "resource-server", actor=SYSTEM)
    assert (await introspect(client, introspector, subject)).status_code == 403
    # The admin role holds every permission of the service.
    await make_user(session, settings, "root", roles=["admin"])
    root = (await tokens(await login(client, "root")))["access_token"]
    assert (await introspect(client, root, subject)).status_code == 200


async def test_introspection_of_refresh_tokens(
    client: AsyncClient,
    session: AsyncSession,
    alice: User,
    introspector: str,
    clock: ManualClock,
    settings: Settings,
) -> None:
    body = await tokens(await login(client, client_id="web", scope="orders:read"))
    response = await introspect(client, introspector, body["refresh_token"])
    assert response.headers["cache-control"] == "no-store"
    now = int(clock.now().timestamp())
    assert response.json() == {
        "active": True,
        "token_type": "refresh_token",
        "client_id": "web",
        "username": "alice",
        "sub": str(alice.id),
        "scope": "orders:read",
        "iat": now,
        "exp": now + settings.refresh_token_idle_ttl,
        "iss": ISSUER,
    }
    renewed = await tokens(await refresh(client, body["refresh_token"]))
    consumed = await introspect(client, introspector, body["refresh_token"])
    assert consumed.json() == {"active": False}
    assert (await introspect(client, introspector, renewed["refresh_token"])).json()["active"]
    alice.is_active = False  # behind the service's back: no revocation, still inactive
    await session.flush()
    assert (await introspect(client, introspector, renewed["refresh_token"])).json() == {
        "active": False
    }
    alice.is_active = True
    await session.flush()

    clock.advance(settings.refresh_token_idle_ttl)
    fresh_caller = (await tokens(await login(client, "rs")))["access_token"]
    idle = await introspect(client, fresh_caller, renewed["refresh_token"])
    assert idle.json() == {"active": False}


async def test_introspection_of_access_tokens(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    alice: User,
    introspector: str,
    clock: ManualClock,
) -> None:
    body = await tokens(await login(client, client_id="web", scope="orders:read"))
    claims = claims_of(body["access_token"])
    answer = (
        await introspect(client, introspector, body["access_token"], token_type_hint="access_token")
    ).json()
    assert answer == {
        "active": True,
        "token_type": "access_token",
        "sub": str(alice.id),
        "username": "alice",
        "client_id": "web",
        "scope": "orders:read",
        "aud": claims["aud"],
        "iss": ISSUER,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "jti": claims["jti"],
    }
    # The hint is only a hint.
    hinted = await introspect(
        client, introspector, body["access_token"], token_type_hint="refresh_token"
    )
    assert hinted.json()["active"] is True

    for garbage in ("not.a.jwt", "abc", "x" * 20_000, body["access_token"][:-4] + "AAAA"):
        assert (await introspect(client, introspector, garbage)).json() == {"active": False}

    # RFC 7009 section 2.1: only the token's own client may revoke it.
    foreign = await client.post("/revoke", data={"token": body["refresh_token"]})
    assert foreign.json()["error"] == "unauthorized_client"
    assert (await introspect(client, introspector, body["access_token"])).json()["active"]
    await client.post("/revoke", data={"token": body["refresh_token"], "client_id": "web"})
    ended = await introspect(client, introspector, body["access_token"])
    assert ended.json() == {"active": False}  # its session was revoked

    other = await tokens(await login(client))
    await users_service.set_active(session, alice, False, actor=SYSTEM, now=datetime.now(UTC))
    assert (await introspect(client, introspector, other["access_token"])).json() == {
        "active": False
    }

    await users_service.set_active(session, alice, True, actor=SYSTEM, now=datetime.now(UTC))
    expiring = await tokens(await login(client))
    clock.advance(settings.access_token_ttl + settings.clock_leeway + 1)
    caller = (await tokens(await login(client, "rs")))["access_token"]
    assert (await introspect(client, caller, expiring["access_token"])).json() == {"active": False}


async def test_introspect_without_a_token_is_invalid_request(
    client: AsyncClient, introspector: str
) -> None:
    response = await client.post("/introspect", data={}, headers=bearer(introspector))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Password change and disabling -----------------------------------------------------------------


async def test_password_change_ends_the_other_sessions_and_keeps_the_callers(
    client: AsyncClient, alice: User
) -> None:
    mine = await tokens(await login(client))
    other = await tokens(await login(client))
    other = await tokens(await refresh(client, other["refresh_token"]))

    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(mine["access_token"]),
    )
    assert response.status_code == 204, response.text
    assert (await refresh(client, other["refresh_token"])).status_code == 400
    assert (await client.get("/me", headers=bearer(other["access_token"]))).status_code == 401
    assert (await client.get("/me", headers=bearer(mine["access_token"]))).status_code == 200
    assert (await refresh(client, mine["refresh_token"])).status_code == 200
    assert (await login(client)).status_code == 400
    assert (await login(client, password=NEW_PASSWORD)).status_code == 200


async def test_password_change_refusals_end_nothing(client: AsyncClient, alice: User) -> None:
    mine = await tokens(await login(client))
    other = await tokens(await login(client))
    wrong = await client.post(
        "/me/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=bearer(mine["access_token"]),
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "the current password is wrong"}
    weak = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(mine["access_token"]),
    )
    assert weak.status_code == 422
    malformed = await client.post(
        "/me/password", json={"new_password": NEW_PASSWORD}, headers=bearer(mine["access_token"])
    )
    assert malformed.status_code == 422
    anonymous = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert anonymous.status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 200
    assert (await login(client)).status_code == 200  # the password did not change


async def test_disabling_and_admin_password_reset_end_every_session(
    client: AsyncClient, session: AsyncSession, settings: Settings, alice: User
) -> None:
    first = await tokens(await login(client))
    second = await tokens(await login(client))
    await users_service.set_active(session, alice, False, actor=SYSTEM, now=datetime.now(UTC))
    await users_service.set_active(
        session, alice, True, actor=SYSTEM, now=datetime.now(UTC)
    )  # enabling again revives nothing
    for body in (first, second):
        assert (await refresh(client, body["refresh_token"])).status_code == 400

    third = await tokens(await login(client))
    await users_service.set_password(
        session, settings, alice, NEW_PASSWORD, actor=SYSTEM, now=datetime.now(UTC)
    )
    assert (await refresh(client, third["refresh_token"])).status_code == 400
    assert (await client.get("/me", headers=bearer(third["access_token"]))).status_code == 401


# Purge and indexes ----------------------------------------------------------------------------


async def _family(
    session: AsyncSession,
    user: User,
    now: datetime,
    *,
    started_ago: timedelta = timedelta(0),
    revoked_ago: timedelta | None = None,
    rotations: int = 0,
) -> RefreshFamily:
    """A family as the default settings make it (14 days absolute, 3 days idle)."""
    start = now - started_ago
    family = RefreshFamily(
        user_id=user.id,
        client_id="idp",
        created_at=start,
        expires_at=start + timedelta(days=14),
        idle_expires_at=start + timedelta(days=3),
        revoked_at=None if revoked_ago is None else now - revoked_ago,
    )
    session.add(family)
    await session.flush()
    for index in range(rotations + 1):
        session.add(
            RefreshToken(
                family_id=family.id,
                token_hash=uuid.uuid4().hex * 2,
                created_at=start,
                consumed_at=start if index < rotations else None,
            )
        )
    await session.flush()
    return family


async def test_purge_deletes_only_sessions_that_ended_before_the_retention(
    session: AsyncSession, database: Database, alice: User
) -> None:
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    live = await _family(session, alice, now, rotations=3)
    recently_revoked = await _family(session, alice, now, revoked_ago=hour / 2)
    await _family(session, alice, now, revoked_ago=2 * hour, rotations=2)
    await _family(session, alice, now, started_ago=timedelta(days=3) + 2 * hour)  # idle-expired
    await _family(session, alice, now, started_ago=timedelta(days=15))  # past absolute expiry
    result = await refresh_tokens.purge(database, now=now, retention=3600, batch_size=2)
    assert result == refresh_tokens.PurgeResult(families=3, tokens=5)
    remaining = (await session.execute(select(RefreshFamily.id))).scalars().all()
    assert set(remaining) == {live.id, recently_revoked.id}
    count = select(func.count()).select_from(RefreshToken).where(RefreshToken.family_id == live.id)
    assert await session.scalar(count) == 4  # consumed tokens of a live family stay (reuse)
    again = await refresh_tokens.purge(database, now=now, retention=3600)
    assert again == refresh_tokens.PurgeResult()


async def test_purge_forgets_the_ids_of_expired_client_assertions(
    session: AsyncSession, database: Database, settings: Settings
) -> None:
    """Every private_key_jwt request stores its assertion's jti: without a purge the table
    grows by one row per token request, forever."""
    await make_client(session, settings, "svc", client_type="confidential")
    now = datetime.now(UTC)
    for jti, expires_in in (("old", -60), ("older", -3600), ("live", 60)):
        assert await clients_repo.record_assertion(
            session, "svc", jti, expires_at=now + timedelta(seconds=expires_in)
        )
    await session.flush()
    result = await refresh_tokens.purge(database, now=now, retention=3600)
    assert result == refresh_tokens.PurgeResult(assertions=2)
    remaining = (await session.execute(select(UsedAssertion.jti_hash))).scalars().all()
    assert remaining == ["live"]
    # A live one is still remembered: its replay is still refused.
    assert not await clients_repo.record_assertion(session, "svc", "live", expires_at=now)


async def test_token_lookup_uses_the_hash_index_as_the_table_grows(
    session: AsyncSession, alice: User
) -> None:
    family = await _family(session, alice, datetime.now(UTC))
    await session.execute(
        text(
            "INSERT INTO refresh_tokens (id, family_id, token_hash, created_at) "
            "SELECT gen_random_uuid(), :family, md5(g::text) || md5((g + 1)::text), now() "
            "FROM generate_series(1, 20000) AS g"
        ),
        {"family": family.id},
    )
    await session.execute(text("ANALYZE refresh_tokens"))
    plan = "\n".join(
        (
            await session.execute(
                text(
                    "EXPLAIN UPDATE refresh_tokens SET consumed_at = now() "
                    "WHERE token_hash = :h AND consumed_at IS NULL"
                ),
                {"h": "0" * 64},
            )
        )
        .scalars()
        .all()
    )
    assert "uq_refresh_tokens_token_hash" in plan, plan


async def test_periodic_purge_survives_an_unreachable_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        f"postgresql+asyncpg://idp@127.0.0.1:{free_port()}/nowhere",
        tmp_path,
        refresh_purge_interval=0,  # back to back: the test waits for runs, not for seconds
        db_connect_timeout=1,
    )
    database = Database(settings)
    task = asyncio.create_task(refresh_tokens.purge_periodically(database, settings, ManualClock()))
    try:
        with caplog.at_level(logging.WARNING, logger="idp.services.refresh_tokens"):
            for _ in range(3000):  # 30 s at most
                if caplog.text.count("purge skipped: database unavailable") >= 2:
                    break
                await asyncio.sleep(0.01)
            assert not task.done()
        assert caplog.text.count("purge skipped: database unavailable") >= 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await database.dispose()


async def test_rotation_reuse_and_purge_on_sqlite(tmp_path: Path, keyring: KeyRing) -> None:
    """The zero-setup default database runs the same statements (UPDATE ... RETURNING)."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'idp.db'}", tmp_path)
    await asyncio.to_thread(command.upgrade, alembic_config(settings.database_url), "head")
    database = Database(settings)
    try:
        async with database.session() as session:
            await make_user(session, settings)
        app = create_app(settings, database=database, keyring=keyring)
        async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
            first = await tokens(await login(client))
            second = await tokens(await refresh(client, first["refresh_token"]))
            assert (await refresh(client, first["refresh_token"])).status_code == 400
            assert (await refresh(client, second["refresh_token"])).status_code == 400
            third = await tokens(await login(client))
            assert (await client.post("/revoke", data={"token": third["refresh_token"]})).is_success
            assert (await refresh(client, third["refresh_token"])).status_code == 400
        purged = await refresh_tokens.purge(database, now=datetime.now(UTC), retention=0)
        assert purged == refresh_tokens.PurgeResult(families=2, tokens=3)
    finally:
        await database.dispose()
