"""OAuth clients at the token endpoint: authentication, client_credentials, the allowed
scopes and audiences, binding of refresh tokens, introspection and revocation by clients."""

from __future__ import annotations

import base64
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from httpx import ASGITransport, AsyncClient, Response
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.models import Client
from idp.schemas.clients import ClientUpdate
from idp.schemas.roles import RoleCreate
from idp.services import clients as clients_service
from idp.services import roles as roles_service
from idp.services.client_auth import ASSERTION_TYPE
from idp.services.keyring import KeyRing
from idp.services.permissions import SYSTEM
from tests.conftest import AUDIENCE, ISSUER
from tests.helpers import (
    PASSWORD,
    bearer,
    hs256,
    login,
    make_client,
    make_user,
    refresh,
    sql_statements,
)

TOKEN_URL = f"{ISSUER}/token"


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def client_credentials(
    client: AsyncClient, client_id: str, secret: str, **form: str
) -> Response:
    return await client.post(
        "/token",
        data={"grant_type": "client_credentials", **form},
        headers=basic(client_id, secret),
    )


@pytest.fixture
async def orders(session: AsyncSession, settings: Settings) -> str:
    """A confidential client for the orders service: its secret."""
    await roles_service.create_role(session, RoleCreate(name="orders-reader"), actor=SYSTEM)
    secret = await make_client(
        session,
        settings,
        "orders",
        client_type="confidential",
        scopes=["orders:read", "orders:write"],
        audiences=[AUDIENCE, "billing"],
        default_audience=AUDIENCE,
        roles=["orders-reader"],
    )
    assert secret is not None
    return secret


# client_credentials ---------------------------------------------------------------------


async def test_client_credentials_issues_a_client_token_without_refresh(
    client: AsyncClient, orders: str, settings: Settings
) -> None:
    response = await client_credentials(client, "orders", orders, scope="orders:read")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert "refresh_token" not in body
    assert body["scope"] == "orders:read"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == "client:orders"
    assert claims["client_id"] == "orders"
    assert claims["aud"] == AUDIENCE
    assert claims["roles"] == ["orders-reader"]
    assert "username" not in claims and "email" not in claims and "sid" not in claims
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl


async def test_client_secret_post_works_and_basic_is_form_urlencoded(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    poster = await make_client(
        session,
        settings,
        "poster",
        client_type="confidential",
        token_endpoint_auth_method="client_secret_post",
    )
    assert poster is not None
    ok = await client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "poster", "client_secret": poster},
    )
    assert ok.status_code == 200, ok.text
    # Registered for client_secret_post: the same secret over Basic is refused.
    assert (await client_credentials(client, "poster", poster)).status_code == 401
    # RFC 6749 section 2.3.1: Basic's id and secret are form-urlencoded first.
    odd = await make_client(session, settings, "svc.a", client_type="confidential")
    assert odd is not None
    header = base64.b64encode(b"svc%2Ea:" + odd.encode()).decode()
    encoded = await client.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {header}"},
    )
    assert encoded.status_code == 200, encoded.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"x" * 200 + b":y").decode()},
    ],
)
async def test_malformed_basic_is_invalid_client_with_a_challenge(
    client: AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_every_client_authentication_failure_is_the_same_401(
    client: AsyncClient, session: AsyncSession, settings: Settings, orders: str
) -> None:
    disabled = await make_client(session, settings, "old", client_type="confidential")
    assert disabled is not None
    await clients_service.update_client(
        session, settings, "old", ClientUpdate(enabled=False), actor=SYSTEM, now=datetime.now(UTC)
    )
    answers = {
        "wrong secret": await client_credentials(client, "orders", orders[:-1] + "x"),
        "empty secret": await client_credentials(client, "orders", ""),
        "unknown client": await client_credentials(client, "nobody", orders),
        "disabled client": await client_credentials(client, "old", disabled),
        "huge secret": await client_credentials(client, "orders", "x" * 5000),
    }
    bodies = {response.text for response in answers.values()}
    assert len(bodies) == 1, bodies
    for name, response in answers.items():
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Basic"), name
    # Without Basic there is no challenge to answer.
    posted = await client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "orders", "client_secret": "x"},
    )
    assert posted.status_code == 401
    assert "www-authenticate" not in posted.headers


async def test_client_credentials_needs_authentication(client: AsyncClient) -> None:
    for data in (
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "client_id": "idp"},  # a public client
    ):
        response = await client.post("/token", data=data)
        assert response.status_code in (400, 401), data
        assert response.json()["error"] in ("invalid_client", "unauthorized_client"), data


async def test_a_confidential_client_cannot_pass_as_public(
    client: AsyncClient, orders: str
) -> None:
    response = await client.post(
        "/token", data={"grant_type": "client_credentials", "client_id": "orders"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_two_authentication_methods_are_invalid_request(
    client: AsyncClient, orders: str
) -> None:
    response = await client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_secret": orders},
        headers=basic("orders", orders),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    other_id = await client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "other"},
        headers=basic("orders", orders),
    )
    assert other_id.json()["error"] == "invalid_request"


async def test_repeated_parameters_are_invalid_request(client: AsyncClient, orders: str) -> None:
    response = await client.post(
        "/token",
        content="grant_type=client_credentials&scope=orders:read&scope=orders:write",
        headers={**basic("orders", orders), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_grant_the_client_is_not_registered_for_is_unauthorized_client(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    secret = await make_client(
        session, settings, "batch", client_type="confidential", grant_types=["refresh_token"]
    )
    assert secret is not None
    refused = await client_credentials(client, "batch", secret)
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"
    # The password grant is an opt-in (RFC 9700 section 2.4); `orders` did not opt in.
    await make_client(session, settings, "spa", grant_types=["refresh_token"])
    no_password = await login(client, client_id="spa")
    assert no_password.json()["error"] == "unauthorized_client"


# Scope and audience ---------------------------------------------------------------------


async def test_scope_outside_the_clients_list_is_invalid_scope(
    client: AsyncClient, orders: str
) -> None:
    for scope in ("orders:delete", "orders:read admin", "ORDERS:READ"):
        response = await client_credentials(client, "orders", orders, scope=scope)
        assert response.status_code == 400, scope
        assert response.json()["error"] == "invalid_scope", scope
    both = await client_credentials(client, "orders", orders, scope="orders:write orders:read")
    assert both.json()["scope"] == "orders:write orders:read"
    none = await client_credentials(client, "orders", orders)
    assert "scope" not in claims_of(none.json()["access_token"])


async def test_a_caller_chosen_client_id_or_scope_never_reaches_a_token(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    """The issue's reproduction: `-d 'scope=orders:delete admin' -d client_id=evil`."""
    await make_user(session, settings)
    evil = await login(client, client_id="evil", scope="orders:delete admin")
    assert evil.status_code == 401
    assert evil.json()["error"] == "invalid_client"
    scoped = await login(client, scope="orders:delete admin")  # the built-in client
    assert scoped.json()["error"] == "invalid_scope"


async def test_resource_selects_the_audience_within_the_clients_list(
    client: AsyncClient, orders: str, settings: Settings
) -> None:
    billing = await client_credentials(client, "orders", orders, resource="billing")
    assert claims_of(billing.json()["access_token"])["aud"] == "billing"
    # `audience` is accepted too, as many clients send it.
    aliased = await client_credentials(client, "orders", orders, audience="billing")
    assert claims_of(aliased.json()["access_token"])["aud"] == "billing"
    for resource in ("payroll", settings.admin_token_audience, "https://evil.example"):
        refused = await client_credentials(client, "orders", orders, resource=resource)
        assert refused.status_code == 400, resource
        assert refused.json()["error"] == "invalid_target", resource


async def test_a_token_for_one_service_is_refused_by_another_and_by_the_admin_api(
    client: AsyncClient, orders: str, session: AsyncSession, settings: Settings
) -> None:
    token = (await client_credentials(client, "orders", orders)).json()["access_token"]
    assert claims_of(token)["aud"] == AUDIENCE  # not "billing": one audience by default
    admin = await client.get("/admin/users", headers=bearer(token))
    assert admin.status_code == 401
    await make_user(session, settings, "root", roles=["admin"])
    user_token = (await login(client, "root")).json()["access_token"]
    wrong_audience = await client.get("/admin/users", headers=bearer(user_token))
    assert wrong_audience.status_code == 401
    assert "admin API" in wrong_audience.headers["www-authenticate"]


async def test_per_client_lifetime_shortens_the_servers(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    secret = await make_client(
        session, settings, "short", client_type="confidential", access_token_ttl=60
    )
    assert secret is not None
    body = (await client_credentials(client, "short", secret)).json()
    assert body["expires_in"] == 60
    claims = claims_of(body["access_token"])
    assert claims["exp"] - claims["iat"] == 60


# Refresh tokens stay with their client -----------------------------------------------


async def test_a_refresh_token_stays_with_its_confidential_client(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    secret = await make_client(
        session,
        settings,
        "backend",
        client_type="confidential",
        grant_types=["password", "refresh_token"],
    )
    other = await make_client(
        session,
        settings,
        "other",
        client_type="confidential",
        grant_types=["password", "refresh_token"],
    )
    assert secret is not None and other is not None
    issued = await client.post(
        "/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers=basic("backend", secret),
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["refresh_token"]
    unauthenticated = await refresh(client, token)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"
    as_public = await refresh(client, token, client_id="backend")
    assert as_public.status_code == 401
    foreign = await client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=basic("other", other),
    )
    assert foreign.status_code == 400
    assert foreign.json()["error"] == "invalid_grant"
    # None of the refusals consumed it.
    renewed = await client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=basic("backend", secret),
    )
    assert renewed.status_code == 200, renewed.text
    assert claims_of(renewed.json()["access_token"])["client_id"] == "backend"


async def test_a_session_loses_a_scope_its_client_lost(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    await make_client(session, settings, "web", scopes=["a", "b"])
    token = (await login(client, client_id="web", scope="a b")).json()["refresh_token"]
    await clients_service.update_client(
        session, settings, "web", ClientUpdate(scopes=["a"]), actor=SYSTEM, now=datetime.now(UTC)
    )
    client._transport.app.state.client_auth.cache.invalidate()  # type: ignore[attr-defined]
    renewed = await refresh(client, token)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["scope"] == "a"


# private_key_jwt --------------------------------------------------------------------------


def assertion(key: RSAKey | ECKey, client_id: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    alg = "RS256" if isinstance(key, RSAKey) else "ES256"
    header = {"alg": alg, "kid": key.kid}
    return jose_jwt.encode(header, claims, key)


@pytest.fixture
async def signer(session: AsyncSession, settings: Settings) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "k2"})
    await make_client(
        session,
        settings,
        "signer",
        client_type="confidential",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False), ec.as_dict(private=False)]},
    )
    return key


async def jwt_grant(client: AsyncClient, signed: str, **form: str) -> Response:
    return await client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
            **form,
        },
    )


async def test_private_key_jwt_authenticates_once_per_assertion(
    client: AsyncClient, signer: RSAKey
) -> None:
    signed = assertion(signer, "signer")
    first = await jwt_grant(client, signed)
    assert first.status_code == 200, first.text
    assert claims_of(first.json()["access_token"])["sub"] == "client:signer"
    replayed = await jwt_grant(client, signed)
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_client"
    # The issuer as audience (RFC 7523bis) and an explicit matching client_id work too.
    assert (await jwt_grant(client, assertion(signer, "signer", aud=ISSUER))).status_code == 200
    named = await jwt_grant(client, assertion(signer, "signer"), client_id="signer")
    assert named.status_code == 200


async def test_bad_assertions_are_invalid_client(
    client: AsyncClient, signer: RSAKey, session: AsyncSession, settings: Settings
) -> None:
    now = int(time.time())
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    hs = hs256(
        {"alg": "HS256", "kid": "k1"},
        {"iss": "signer", "sub": "signer", "aud": TOKEN_URL, "exp": now + 60, "jti": "j"},
        b"secret",
    )
    cases = {
        "expired": assertion(signer, "signer", exp=now - 3600, iat=now - 3700),
        "no exp": assertion(signer, "signer", exp=None),
        "exp too far": assertion(signer, "signer", exp=now + 2 * 86_400),
        "wrong aud": assertion(signer, "signer", aud="https://elsewhere.example/token"),
        "sub differs": assertion(signer, "signer", sub="orders"),
        "no jti": assertion(signer, "signer", jti=None),
        "future iat": assertion(signer, "signer", iat=now + 3600),
        "another key": assertion(stranger, "signer"),
        "HS256": hs,
        "garbage": "a.b.c",
        "unknown client": assertion(signer, "nobody"),
    }
    for name, signed in cases.items():
        response = await jwt_grant(client, signed)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "invalid_client", name
    wrong_type = await client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:other",
            "client_assertion": assertion(signer, "signer"),
        },
    )
    assert wrong_type.json()["error"] == "invalid_request"
    # A client registered for private_key_jwt cannot use a secret instead.
    assert (await client_credentials(client, "signer", "anything")).status_code == 401


async def test_an_ec_p256_key_works_and_only_the_registered_one(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec1"})
    await make_client(
        session,
        settings,
        "ec-signer",
        client_type="confidential",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [ec.as_dict(private=False)]},
    )
    assert (await jwt_grant(client, assertion(ec, "ec-signer"))).status_code == 200
    impostor = ECKey.generate_key("P-256", parameters={"kid": "ec1"})
    assert (await jwt_grant(client, assertion(impostor, "ec-signer"))).status_code == 401


# Brute force -------------------------------------------------------------------------------


async def test_failed_client_authentications_are_rate_limited(
    settings: Settings, database: Database, keyring: KeyRing, session: AsyncSession
) -> None:
    secret = await make_client(session, settings, "svc", client_type="confidential")
    assert secret is not None
    limited = settings.model_copy(update={"client_auth_failure_limit": 3})
    app = create_app(limited, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as http:
        for _ in range(3):
            assert (await client_credentials(http, "svc", "wrong")).status_code == 401
        blocked = await client_credentials(http, "svc", secret)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


# Introspection and revocation by clients ---------------------------------------------------


async def test_a_client_introspects_when_its_roles_allow_it(
    client: AsyncClient, session: AsyncSession, settings: Settings, orders: str
) -> None:
    await roles_service.create_role(
        session, RoleCreate(name="introspector", permissions=["tokens:introspect"]), actor=SYSTEM
    )
    gateway = await make_client(
        session, settings, "gateway", client_type="confidential", roles=["introspector"]
    )
    assert gateway is not None
    token = (await client_credentials(client, "orders", orders)).json()["access_token"]
    denied = await client.post(
        "/introspect", data={"token": token}, headers=basic("orders", orders)
    )
    assert denied.status_code == 403
    answer = await client.post(
        "/introspect", data={"token": token}, headers=basic("gateway", gateway)
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["active"] is True
    assert body["sub"] == "client:orders"
    assert body["client_id"] == "orders"
    assert "username" not in body
    wrong = await client.post(
        "/introspect", data={"token": token}, headers=basic("gateway", "wrong")
    )
    assert wrong.status_code == 401
    # Disabling the client makes its tokens inactive at once, here.
    disable = ClientUpdate(enabled=False)
    await clients_service.update_client(
        session, settings, "orders", disable, actor=SYSTEM, now=datetime.now(UTC)
    )
    client._transport.app.state.client_auth.cache.invalidate()  # type: ignore[attr-defined]
    again = await client.post(
        "/introspect", data={"token": token}, headers=basic("gateway", gateway)
    )
    assert again.json() == {"active": False}


async def test_revocation_by_a_confidential_client(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    secret = await make_client(
        session,
        settings,
        "backend",
        client_type="confidential",
        grant_types=["password", "refresh_token"],
    )
    assert secret is not None
    issued = await client.post(
        "/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers=basic("backend", secret),
    )
    token = issued.json()["refresh_token"]
    anonymous = await client.post("/revoke", data={"token": token})
    assert anonymous.json()["error"] == "unauthorized_client"  # the built-in client's request
    wrong = await client.post("/revoke", data={"token": token}, headers=basic("backend", "x"))
    assert wrong.status_code == 401
    done = await client.post("/revoke", data={"token": token}, headers=basic("backend", secret))
    assert done.status_code == 200
    after = await client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=basic("backend", secret),
    )
    assert after.json()["error"] == "invalid_grant"


# Secrets at rest ----------------------------------------------------------------------------


async def test_no_secret_is_stored_or_logged(
    client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    secret = await make_client(session, settings, "vault", client_type="confidential")
    assert secret is not None
    assert secret.startswith("idp_cs_") and len(secret) >= 7 + 43
    rotated, _until = await clients_service.rotate_secret(
        session,
        "vault",
        actor=SYSTEM,
        pepper=clients_service.pepper_for(settings),
        now=datetime.now(UTC),
        overlap=60,
    )
    for value in (secret, rotated):
        assert (await client_credentials(client, "vault", value)).status_code == 200
        await client_credentials(client, "vault", value + "x")
    dump = []
    for table in ("clients", "client_secrets", "audit_events"):
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
        dump.append(repr(rows))
    stored = "\n".join(dump)
    for value in (secret, rotated):
        assert value not in stored
        assert value[7:] not in stored
        assert value not in caplog.text


async def test_rotation_overlap_then_only_the_new_secret(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    old = await make_client(session, settings, "rot", client_type="confidential")
    assert old is not None
    pepper = clients_service.pepper_for(settings)
    new, _ = await clients_service.rotate_secret(
        session, "rot", actor=SYSTEM, pepper=pepper, now=datetime.now(UTC), overlap=0
    )
    client._transport.app.state.client_auth.cache.invalidate()  # type: ignore[attr-defined]
    assert (await client_credentials(client, "rot", old)).status_code == 401
    assert (await client_credentials(client, "rot", new)).status_code == 200


async def test_the_pepper_file_is_private_and_stable(settings: Settings) -> None:
    first = clients_service.pepper_for(settings)
    assert clients_service.pepper_for(settings) == first
    path = settings.keys_dir / "client-secret-pepper"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(first) == 64


async def test_the_built_in_client_comes_from_the_migration(session: AsyncSession) -> None:
    found = (await session.execute(select(Client).where(Client.id == "idp"))).scalar_one()
    assert found.client_type == "public"
    assert found.grant_types == ["password", "refresh_token"]
    assert found.admin_api and found.first_party


async def test_basic_with_an_empty_secret_names_a_public_client(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    """Swagger UI's password flow sends `Authorization: Basic base64("idp:")`."""
    await make_user(session, settings)
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    ok = await client.post("/token", data=data, headers=basic("idp", ""))
    assert ok.status_code == 200, ok.text
    secret = await make_client(session, settings, "backend", client_type="confidential")
    assert secret is not None
    refused = await client.post("/token", data=data, headers=basic("backend", ""))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")


async def test_describing_many_clients_costs_the_same_statements_as_one(
    session: AsyncSession, settings: Settings, engine: AsyncEngine
) -> None:
    await roles_service.create_role(session, RoleCreate(name="svc"), actor=SYSTEM)
    for index in range(5):
        await make_client(
            session, settings, f"svc-{index}", client_type="confidential", roles=["svc"]
        )
    everyone = await clients_service.list_clients(session)
    with sql_statements(engine) as many:
        described = await clients_service.describe_all(session, everyone)
    with sql_statements(engine) as one:
        await clients_service.describe_all(session, everyone[:1])
    assert len(many) == len(one)
    assert {c.client_id: c.roles for c in described}["svc-3"] == ["svc"]
    assert all(len(c.secrets) == 1 for c in described if c.client_id.startswith("svc-"))
