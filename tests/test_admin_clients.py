"""The OAuth client registry's administration: the service rules, `/admin/clients` over HTTP
(who may do what, validation, secrets shown once and never logged), and what /token sees."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient, Response
from joserfc.jwk import RSAKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ConflictError
from idp.configuration.settings import Settings
from idp.models import AuditEvent
from idp.schemas.clients import ClientUpdate
from idp.schemas.roles import RoleCreate
from idp.services import clients as clients_service
from idp.services import roles as roles_service
from idp.services.permissions import SYSTEM
from tests.conftest import AUDIENCE
from tests.helpers import admin_login, bearer, make_client, make_user

Headers = dict[str, str]

# Secrets are keyed with the pepper from the test keystore, which the key ring creates.
pytestmark = pytest.mark.usefixtures("keyring")

# The service's rules -----------------------------------------------------------------------


async def test_the_built_in_client_cannot_be_deleted_or_disabled(
    session: AsyncSession, settings: Settings
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.delete_client(session, settings, "idp", actor=SYSTEM)
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.update_client(
            session, settings, "idp", ClientUpdate(enabled=False), actor=SYSTEM, now=now
        )
    # Other changes to it stay possible, and it is still there and enabled.
    await clients_service.update_client(
        session, settings, "idp", ClientUpdate(name="Our login"), actor=SYSTEM, now=now
    )
    client = await clients_service.get_client(session, "idp")
    assert client.enabled and client.name == "Our login"


async def test_the_configured_default_client_is_protected_too(
    session: AsyncSession, settings: Settings
) -> None:
    await make_client(session, settings, "portal")
    custom = settings.model_copy(update={"default_client_id": "portal"})
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.delete_client(session, custom, "portal", actor=SYSTEM)
    await clients_service.delete_client(session, settings, "portal", actor=SYSTEM)


async def test_a_rotation_keeps_the_secret_it_made_whatever_the_clocks_say(
    session: AsyncSession, settings: Settings
) -> None:
    """The new secret is the row the rotation made, not the newest by created_at: replicas'
    clocks differ, and a secret made "earlier" than the one it replaces must still work."""
    pepper = clients_service.pepper_for(settings)
    first = await make_client(session, settings, "skewed", client_type="confidential")
    assert first is not None
    behind = datetime.now(UTC) - timedelta(seconds=30)  # another replica's clock
    new, until = await clients_service.rotate_secret(
        session, "skewed", actor=SYSTEM, pepper=pepper, now=behind, overlap=0
    )
    assert until == behind
    snapshot = await clients_service.load(session, "skewed")
    assert snapshot is not None
    assert snapshot.secret_matches(pepper, new, behind + timedelta(seconds=1))
    assert not snapshot.secret_matches(pepper, first, behind + timedelta(seconds=1))


# Over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
async def root(client: AsyncClient, session: AsyncSession, settings: Settings) -> Headers:
    """An administrator: holds the `admin` role, so no holding rule applies."""
    await make_user(session, settings, "root", roles=["admin"])
    return bearer((await admin_login(client, "root")).json()["access_token"])


async def _clerk(
    client: AsyncClient, session: AsyncSession, settings: Settings, username: str = "clerk"
) -> Headers:
    """A user whose one role (`<username>-role`) grants clients:read and clients:write."""
    role = f"{username}-role"
    await roles_service.create_role(
        session, RoleCreate(name=role, permissions=["clients:read", "clients:write"]), actor=SYSTEM
    )
    await make_user(session, settings, username, roles=[role])
    response = await admin_login(client, username)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def _basic(client_id: str, secret: str) -> Headers:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def _client_token(client: AsyncClient, client_id: str, secret: str) -> Response:
    return await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=_basic(client_id, secret)
    )


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def _create(client: AsyncClient, headers: Headers, **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/clients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_client_lifecycle(client: AsyncClient, root: Headers) -> None:
    response = await client.post(
        "/admin/clients",
        json={
            "client_id": "orders",
            "name": "Orders service",
            "scopes": ["orders:read"],
            "audiences": [AUDIENCE],
        },
        headers=root,
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/admin/clients/orders"
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    secret = created.pop("client_secret")
    assert secret.startswith(clients_service.SECRET_PREFIX)
    assert created["client_type"] == "confidential"
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["grant_types"] == ["client_credentials"]
    assert [s["hint"] for s in created["secrets"]] == [secret[-4:]]

    # Read back: the same, without the secret.
    shown = await client.get("/admin/clients/orders", headers=root)
    assert shown.status_code == 200 and shown.json() == created
    assert secret not in shown.text
    listed = (await client.get("/admin/clients", headers=root)).json()
    assert [c["client_id"] for c in listed] == ["idp", "orders"]
    assert secret not in json.dumps(listed)

    # The secret shown once works at /token.
    token = await _client_token(client, "orders", secret)
    assert token.status_code == 200, token.text
    claims = _claims(token.json()["access_token"])
    assert claims["sub"] == "client:orders" and claims["roles"] == []

    # Update, roles.
    response = await client.patch(
        "/admin/clients/orders", json={"name": "Orders", "scopes": ["orders:write"]}, headers=root
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Orders" and response.json()["scopes"] == ["orders:write"]
    await client.post("/admin/roles", json={"name": "billing"}, headers=root)
    response = await client.put("/admin/clients/orders/roles/billing", headers=root)
    assert response.status_code == 201 and response.json() == ["billing"]
    response = await client.put("/admin/clients/orders/roles/billing", headers=root)
    assert response.status_code == 200 and response.json() == ["billing"]
    token = await _client_token(client, "orders", secret)
    assert _claims(token.json()["access_token"])["roles"] == ["billing"]
    assert (await client.put("/admin/clients/orders/roles/nope", headers=root)).status_code == 404
    response = await client.delete("/admin/clients/orders/roles/billing", headers=root)
    assert response.status_code == 204
    response = await client.delete("/admin/clients/orders/roles/billing", headers=root)
    assert response.status_code == 404

    # Delete: gone, and its secret no longer works.
    assert (await client.delete("/admin/clients/orders", headers=root)).status_code == 204
    assert (await client.get("/admin/clients/orders", headers=root)).status_code == 404
    assert (await client.delete("/admin/clients/orders", headers=root)).status_code == 404
    token = await _client_token(client, "orders", secret)
    assert token.status_code == 401 and token.json()["error"] == "invalid_client"


async def test_a_duplicate_id_is_409(client: AsyncClient, root: Headers) -> None:
    await _create(client, root, client_id="dup")
    response = await client.post("/admin/clients", json={"client_id": "dup"}, headers=root)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


async def test_a_generated_id_and_a_public_client_without_secret(
    client: AsyncClient, root: Headers
) -> None:
    generated = await _create(client, root)
    assert generated["client_id"] and generated["client_secret"]
    public = await _create(client, root, client_id="spa", client_type="public")
    assert public["client_secret"] is None and public["token_endpoint_auth_method"] == "none"
    response = await client.post("/admin/clients/spa/secrets", headers=root)
    assert response.status_code == 422 and "not a secret" in response.json()["detail"]


async def test_the_built_in_client_cannot_be_deleted_or_disabled_over_http(
    client: AsyncClient, root: Headers
) -> None:
    response = await client.delete("/admin/clients/idp", headers=root)
    assert response.status_code == 409 and "built in" in response.json()["detail"]
    response = await client.patch("/admin/clients/idp", json={"enabled": False}, headers=root)
    assert response.status_code == 409 and "built in" in response.json()["detail"]
    # The password login through it still works.
    assert (await admin_login(client, "root")).status_code == 200


async def test_rotation_with_and_without_overlap(client: AsyncClient, root: Headers) -> None:
    first = (await _create(client, root, client_id="rotating"))["client_secret"]
    response = await client.post(
        "/admin/clients/rotating/secrets", params={"overlap": 3600}, headers=root
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    second = body["client_secret"]
    assert body["client_id"] == "rotating" and second != first
    until = datetime.fromisoformat(body["previous_expire_at"])
    assert timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
    # Both work during the overlap.
    assert (await _client_token(client, "rotating", first)).status_code == 200
    assert (await _client_token(client, "rotating", second)).status_code == 200

    # Overlap 0 (after a leak): only the newest works, at once.
    response = await client.post(
        "/admin/clients/rotating/secrets", params={"overlap": 0}, headers=root
    )
    assert response.status_code == 201, response.text
    third = response.json()["client_secret"]
    for old in (first, second):
        refused = await _client_token(client, "rotating", old)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert (await _client_token(client, "rotating", third)).status_code == 200
    shown = (await client.get("/admin/clients/rotating", headers=root)).json()
    assert [s["hint"] for s in shown["secrets"] if s["expires_at"] is None] == [third[-4:]]

    response = await client.post(
        "/admin/clients/rotating/secrets", params={"overlap": -1}, headers=root
    )
    assert response.status_code == 422


async def test_the_default_overlap_is_a_day(client: AsyncClient, root: Headers) -> None:
    await _create(client, root, client_id="daily")
    body = (await client.post("/admin/clients/daily/secrets", headers=root)).json()
    until = datetime.fromisoformat(body["previous_expire_at"])
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)


async def test_a_disabled_client_is_refused_at_token_at_once(
    client: AsyncClient, root: Headers
) -> None:
    secret = (await _create(client, root, client_id="flaky"))["client_secret"]
    # The first token request caches the client (IDP_CLIENT_CACHE_TTL, 5 s by default).
    assert (await _client_token(client, "flaky", secret)).status_code == 200
    response = await client.patch("/admin/clients/flaky", json={"enabled": False}, headers=root)
    assert response.status_code == 200 and response.json()["enabled"] is False
    refused = await _client_token(client, "flaky", secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    response = await client.patch("/admin/clients/flaky", json={"enabled": True}, headers=root)
    assert response.status_code == 200
    assert (await _client_token(client, "flaky", secret)).status_code == 200


async def test_a_client_created_after_a_failed_attempt_is_found_at_once(
    client: AsyncClient, root: Headers
) -> None:
    """The cache remembers unknown ids too: creating one must clear that."""
    assert (await _client_token(client, "late", "idp_cs_guess")).status_code == 401
    secret = (await _create(client, root, client_id="late"))["client_secret"]
    assert (await _client_token(client, "late", secret)).status_code == 200


async def test_the_cache_entry_goes_after_the_commit(
    client: AsyncClient, root: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped before the commit, a concurrent token request could cache the old client
    again for a whole TTL."""
    await _create(client, root, client_id="ordered")
    events: list[str] = []
    cache = client._transport.app.state.client_auth.cache  # type: ignore[attr-defined]
    invalidate = cache.invalidate
    monkeypatch.setattr(
        cache,
        "invalidate",
        lambda client_id=None: (events.append("invalidate"), invalidate(client_id)),
    )
    commit = AsyncSession.commit

    async def recording_commit(self: AsyncSession) -> None:
        events.append("commit")
        await commit(self)

    monkeypatch.setattr(AsyncSession, "commit", recording_commit)
    for method, path, params in (
        ("PATCH", "/admin/clients/ordered", {"json": {"enabled": False}}),
        ("POST", "/admin/clients/ordered/secrets", {}),
        ("DELETE", "/admin/clients/ordered", {}),
    ):
        events.clear()
        response = await client.request(method, path, headers=root, **params)
        assert response.status_code < 300, response.text
        assert events[-2:] == ["commit", "invalidate"], (path, events)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"client_type": "public", "grant_types": ["client_credentials"]},
            "client_credentials needs a confidential client",
        ),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "exactly one of jwks and jwks_uri"),
        (
            {
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [RSAKey.generate_key(2048).as_dict(private=True)]},
            },
            "public keys only",
        ),
        (
            {"client_type": "public", "redirect_uris": ["http://example.com/callback"]},
            "http is for loopback only",
        ),
        ({"audiences": ["orders"], "default_audience": "billing"}, "default_audience"),
        ({"access_token_ttl": 10**6}, "access_token_ttl"),
        ({"access_token_ttl": 901}, "IDP_ACCESS_TOKEN_TTL"),
        ({"refresh_token_ttl": 10**7}, "IDP_REFRESH_TOKEN_TTL"),
        ({"client_id": "bad id"}, "client_id"),
        ({"surprise": True}, "surprise"),
    ],
)
async def test_invalid_clients_are_422(
    client: AsyncClient, root: Headers, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/admin/clients", json=body, headers=root)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert (await client.get("/admin/clients", headers=root)).json()[-1]["client_id"] == "idp"


async def test_an_update_is_validated_too(client: AsyncClient, root: Headers) -> None:
    await _create(client, root, client_id="valid")
    response = await client.patch(
        "/admin/clients/valid", json={"redirect_uris": ["http://evil.example/cb"]}, headers=root
    )
    assert response.status_code == 422 and "loopback" in response.json()["detail"]
    assert (await client.get("/admin/clients/valid", headers=root)).json()["redirect_uris"] == []


async def test_a_clerk_hands_out_only_roles_they_hold(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk = await _clerk(client, session, settings)
    await client.post("/admin/roles", json={"name": "ops"}, headers=root)
    own = await _create(client, clerk, client_id="clerks")  # no roles: theirs to manage
    # Not holding `ops`, the clerk cannot give it to a client...
    response = await client.put("/admin/clients/clerks/roles/ops", headers=clerk)
    assert response.status_code == 403 and "ops" in response.json()["detail"]
    # ...but can give their own role.
    response = await client.put("/admin/clients/clerks/roles/clerk-role", headers=clerk)
    assert response.status_code == 201, response.text

    # A client holding `ops` is out of the clerk's reach: no change, rotation, role change
    # or deletion; reading it is fine.
    secret = (await _create(client, root, client_id="opsbot"))["client_secret"]
    assert (await client.put("/admin/clients/opsbot/roles/ops", headers=root)).status_code == 201
    for method, path, params in (
        ("PATCH", "/admin/clients/opsbot", {"json": {"enabled": False}}),
        ("POST", "/admin/clients/opsbot/secrets", {}),
        ("PUT", "/admin/clients/opsbot/roles/clerk-role", {}),
        ("DELETE", "/admin/clients/opsbot/roles/ops", {}),
        ("DELETE", "/admin/clients/opsbot", {}),
    ):
        response = await client.request(method, path, headers=clerk, **params)
        assert response.status_code == 403, (method, path, response.text)
    assert (await client.get("/admin/clients/opsbot", headers=clerk)).status_code == 200
    assert (await _client_token(client, "opsbot", secret)).status_code == 200

    # Their own client they manage fully.
    response = await client.patch("/admin/clients/clerks", json={"name": "Mine"}, headers=clerk)
    assert response.status_code == 200
    response = await client.post("/admin/clients/clerks/secrets", headers=clerk)
    assert response.status_code == 201
    assert own["client_secret"] != response.json()["client_secret"]
    assert (await client.delete("/admin/clients/clerks", headers=clerk)).status_code == 204


async def test_admin_api_clients_are_for_unrestricted_actors(
    client: AsyncClient, session: AsyncSession, settings: Settings, root: Headers
) -> None:
    clerk = await _clerk(client, session, settings)
    response = await client.post(
        "/admin/clients", json={"client_id": "console", "admin_api": True}, headers=clerk
    )
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    await _create(client, clerk, client_id="plain")
    response = await client.patch("/admin/clients/plain", json={"admin_api": True}, headers=clerk)
    assert response.status_code == 403
    # An existing admin_api client (such as `idp`) is not the clerk's to change.
    response = await client.patch("/admin/clients/idp", json={"name": "x"}, headers=clerk)
    assert response.status_code == 403
    # An administrator may do all of it.
    await _create(client, root, client_id="console", admin_api=True)
    response = await client.patch("/admin/clients/plain", json={"admin_api": True}, headers=root)
    assert response.status_code == 200 and response.json()["admin_api"] is True


async def test_secrets_are_never_logged_nor_audited(
    client: AsyncClient, session: AsyncSession, root: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/admin/roles", json={"name": "billing"}, headers=root)
    secrets = [(await _create(client, root, client_id="quiet"))["client_secret"]]
    for overlap in (60, 0):
        response = await client.post(
            "/admin/clients/quiet/secrets", params={"overlap": overlap}, headers=root
        )
        secrets.append(response.json()["client_secret"])
    await client.patch("/admin/clients/quiet", json={"name": "Quiet"}, headers=root)
    await client.put("/admin/clients/quiet/roles/billing", headers=root)
    await client.delete("/admin/clients/quiet/roles/billing", headers=root)
    for secret in secrets:  # used at /token, right and (for the old ones) wrong
        await _client_token(client, "quiet", secret)
    await client.delete("/admin/clients/quiet", headers=root)

    events = (
        (
            await session.execute(
                select(AuditEvent).where(AuditEvent.target_id == "quiet").order_by(AuditEvent.id)
            )
        )
        .scalars()
        .all()
    )
    assert [event.action for event in events] == [
        "client.create",
        "client.secret_rotate",
        "client.secret_rotate",
        "client.update",
        "client.role_grant",
        "client.role_revoke",
        "client.delete",
    ]
    assert all(event.actor_username == "root" for event in events)
    audited = json.dumps(
        [[e.action, e.actor_username, e.target_id, e.details] for e in events], default=str
    )
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert caplog.records  # the requests were logged at all
    for secret in secrets:
        body = secret.removeprefix(clients_service.SECRET_PREFIX)
        assert body[:12] not in audited
        assert body[:12] not in logged
