"""POST /token with the password grant, the JWKS, the metadata, and GET /me."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.settings import Settings
from idp.services import passwords
from idp.services.client_auth import ASSERTION_ALGORITHMS
from idp.services.keyring import KeyRing
from tests.conftest import AUDIENCE, ISSUER
from tests.helpers import PASSWORD, bearer, hs256, login, make_client, make_user, unsigned

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


async def test_password_grant_issues_an_rfc9068_token_that_pyjwt_verifies(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, settings, roles=["admin"])
    await make_client(session, settings, "orders-web", scopes=["orders:read", "profile"])
    response = await login(client, "ALICE", client_id="orders-web", scope="orders:read profile")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl
    assert body["scope"] == "orders:read profile"

    jwks = (await client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        body["access_token"],
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["sub"] == str(user.id)
    assert claims["username"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["roles"] == ["admin"]
    assert claims["client_id"] == "orders-web"
    assert claims["scope"] == "orders:read profile"
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    assert claims["nbf"] == claims["iat"]
    second = (await login(client)).json()["access_token"]
    assert jwt.decode(second, options={"verify_signature": False})["jti"] != claims["jti"]


async def test_default_client_id_and_no_scope(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    body = (await login(client)).json()
    assert "scope" not in body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == settings.default_client_id
    assert "scope" not in claims
    assert claims["roles"] == []


async def test_bad_credentials_all_look_the_same(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_user(session, settings)
    await make_user(session, settings, "disabled", active=False)
    await make_user(session, settings, "nopassword", password=None)
    answers = [
        await login(client, "alice", "wrong password!"),
        await login(client, "nobody-here", PASSWORD),
        await login(client, "disabled", PASSWORD),
        await login(client, "nopassword", PASSWORD),
    ]
    for response in answers:
        assert response.status_code == 400
        assert response.headers["cache-control"] == "no-store"
    assert len({r.text for r in answers}) == 1
    assert answers[0].json()["error"] == "invalid_grant"
    # A password no account can have: one answer too, whether the account exists or not.
    too_long = [await login(client, username, "x" * 100) for username in ("alice", "nobody-here")]
    assert {(r.status_code, r.json()["error"]) for r in too_long} == {(400, "invalid_request")}
    assert too_long[0].text == too_long[1].text


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "invalid_request"),
        ({"grant_type": "password", "username": "alice"}, "invalid_request"),
        ({"grant_type": "device_code"}, "unsupported_grant_type"),
        (
            {"grant_type": "password", "username": "a", "password": "b", "scope": "bad\\scope"},
            "invalid_request",
        ),
    ],
)
async def test_malformed_requests_get_rfc6749_errors(
    client: AsyncClient, data: dict[str, str], error: str
) -> None:
    response = await client.post("/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert "error_description" in response.json()


async def test_json_body_is_invalid_request_not_500(client: AsyncClient) -> None:
    response = await client.post(
        "/token", json={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_hash_is_upgraded_when_the_cost_rises(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, settings)
    assert user.password_hash is not None
    assert passwords.hash_rounds(user.password_hash) == 4
    client._transport.app.state.settings = settings.model_copy(update={"bcrypt_rounds": 5})  # type: ignore[attr-defined]
    assert (await login(client)).status_code == 200
    await session.refresh(user)
    assert passwords.hash_rounds(user.password_hash) == 5
    assert await passwords.verify_password(PASSWORD, user.password_hash)


async def test_jwks_public_only_cached_with_etag(client: AsyncClient, settings: Settings) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == f"public, max-age={settings.jwks_max_age}"
    keys = response.json()["keys"]
    assert len(keys) >= 2  # active and next
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key)
        assert key["use"] == "sig"
        assert {"kty", "kid", "alg"} <= set(key)
    etag = response.headers["etag"]
    cached = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    other = await client.get("/.well-known/jwks.json", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
async def test_rfc8414_metadata(client: AsyncClient, path: str) -> None:
    metadata = (await client.get(path)).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == f"{ISSUER}/token"
    assert metadata["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert metadata["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert metadata["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert metadata["grant_types_supported"] == [
        "password",
        "refresh_token",
        "client_credentials",
        "authorization_code",
    ]
    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    assert metadata["token_endpoint_auth_methods_supported"] == methods
    assert metadata["revocation_endpoint_auth_methods_supported"] == methods
    # A public client may not introspect (a user's bearer token may, which RFC 8414 cannot say).
    assert metadata["introspection_endpoint_auth_methods_supported"] == methods[:3]
    for endpoint in ("token", "revocation", "introspection"):
        algorithms = metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert algorithms == list(ASSERTION_ALGORITHMS)
    assert metadata["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    # OpenID Connect's own members only where OpenID Connect clients look (Discovery 1.0).
    oidc = path.endswith("openid-configuration")
    for name in ("userinfo_endpoint", "end_session_endpoint", "subject_types_supported"):
        assert (name in metadata) == oidc, name
    if oidc:
        assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_openapi_declares_the_password_flow(client: AsyncClient) -> None:
    schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
    flows = [s["flows"]["password"] for s in schemes.values() if "password" in s.get("flows", {})]
    # Swagger UI posts the form to this URL: its query asks for the admin audience (RFC 8707),
    # so the Authorize button gives tokens the /admin routes accept.
    assert flows == [{"scopes": {}, "tokenUrl": "token?resource=http%3A%2F%2Fidp.test%2Fadmin"}]


async def test_me_returns_the_profile(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, settings, roles=["admin"])
    token = (await login(client)).json()["access_token"]
    profile = (await client.get("/me", headers=bearer(token))).json()
    assert profile["id"] == str(user.id)
    assert profile["roles"] == ["admin"]
    assert "users:write" in profile["permissions"]


# Attacks on /me ----------------------------------------------------------------------------


def _valid_claims(sub: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "x",
        "client_id": "idp",
        "username": "alice",
        "email": "alice@example.com",
        "roles": ["admin"],
    }
    claims.update(overrides)
    return claims


def _attacker_rs256(
    header: dict[str, Any], claims: dict[str, Any]
) -> tuple[str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims, key, algorithm="RS256", headers=header)
    return token, key


async def test_attack_tokens_are_all_401(
    client: AsyncClient, session: AsyncSession, settings: Settings, keyring: KeyRing
) -> None:
    user = await make_user(session, settings, roles=["admin"])
    sub = str(user.id)
    good = (await login(client)).json()["access_token"]
    assert (await client.get("/me", headers=bearer(good))).status_code == 200
    keyset = keyring.current
    kid = keyset.active_kid
    public_pem = keyset.active_key.as_pem(private=False)
    public_jwk = json.dumps(keyset.active_key.as_dict(private=False)).encode()
    head, body, sig = good.split(".")
    attacker_jwk_token, attacker_key = _attacker_rs256(
        {"kid": kid, "typ": "at+jwt"}, _valid_claims(sub)
    )
    from joserfc.jwk import RSAKey

    attacker_public = RSAKey.import_key(attacker_key.public_key()).as_dict()
    embedded_jwk, _ = _attacker_rs256(
        {"kid": kid, "typ": "at+jwt", "jwk": attacker_public}, _valid_claims(sub)
    )
    attacks = {
        "alg none": unsigned({"alg": "none", "typ": "at+jwt", "kid": kid}, _valid_claims(sub)),
        "alg NoNe": unsigned({"alg": "NoNe", "typ": "at+jwt", "kid": kid}, _valid_claims(sub)),
        "hs256 with public pem": hs256(
            {"alg": "HS256", "typ": "at+jwt", "kid": kid}, _valid_claims(sub), public_pem
        ),
        "hs256 with public jwk": hs256(
            {"alg": "HS256", "typ": "at+jwt", "kid": kid}, _valid_claims(sub), public_jwk
        ),
        "empty signature": f"{head}.{body}.",
        "truncated signature": f"{head}.{body}.{sig[:20]}",
        "other key, our kid": attacker_jwk_token,
        "embedded jwk": embedded_jwk,
        "wrong typ": _attacker_rs256({"kid": kid, "typ": "JWT"}, _valid_claims(sub))[0],
        "foreign kid": _attacker_rs256(
            {"kid": "../../etc/passwd", "typ": "at+jwt"}, _valid_claims(sub)
        )[0],
        "huge kid": unsigned(
            {"alg": "RS256", "typ": "at+jwt", "kid": "k" * 10_000}, _valid_claims(sub)
        ),
        "garbage": "not.a.token",
        "not even dots": "abc",
    }
    for name, token in attacks.items():
        response = await client.get("/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name


async def test_claim_checks_on_tokens_we_signed(
    client: AsyncClient, session: AsyncSession, settings: Settings, keyring: KeyRing
) -> None:
    user = await make_user(session, settings)
    sub = str(user.id)
    now = int(time.time())
    sign = keyring.current.sign
    cases = {
        "wrong iss": sign(_valid_claims(sub, iss=ISSUER + ".evil")),
        "iss prefix": sign(_valid_claims(sub, iss=ISSUER[:-1])),
        "wrong aud": sign(_valid_claims(sub, aud="someone-else")),
        "expired": sign(_valid_claims(sub, exp=now - 3600)),
        "no exp": sign({k: v for k, v in _valid_claims(sub).items() if k != "exp"}),
        "nbf future": sign(_valid_claims(sub, nbf=now + 3600)),
        "crit": jwt.encode(
            _valid_claims(sub),
            keyring.current.active_key.as_pem(private=True),
            algorithm="RS256",
            headers={"kid": keyring.current.active_kid, "typ": "at+jwt", "crit": ["exp"]},
        ),
        "unknown user": sign(_valid_claims("00000000-0000-0000-0000-000000000000")),
    }
    assert (await client.get("/me", headers=bearer(sign(_valid_claims(sub))))).status_code == 200
    for name, token in cases.items():
        assert (await client.get("/me", headers=bearer(token))).status_code == 401, name


@pytest.mark.parametrize("claim", ["iat", "jti", "client_id", "sub"])
async def test_tokens_the_verifier_refuses_are_refused_here_too(
    client: AsyncClient, session: AsyncSession, settings: Settings, keyring: KeyRing, claim: str
) -> None:
    """One set of token rules: a token of ours lacking an RFC 9068 claim is as invalid for
    /me and introspection as for a service using idp_verifier."""
    admin = await make_user(session, settings, "root", roles=["admin"])
    caller = (await login(client, "root")).json()["access_token"]
    token = keyring.current.sign(
        {k: v for k, v in _valid_claims(str(admin.id)).items() if k != claim}
    )
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert "required claim" in response.headers["www-authenticate"]
    introspected = await client.post("/introspect", data={"token": token}, headers=bearer(caller))
    assert introspected.json() == {"active": False}


async def test_me_without_token_is_401_bearer(client: AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_disabled_user_token_stops_working_at_once(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, settings)
    token = (await login(client)).json()["access_token"]
    user.is_active = False
    await session.flush()
    assert (await client.get("/me", headers=bearer(token))).status_code == 401


def test_private_key_never_in_pem_export(keyring: KeyRing) -> None:
    assert b"PRIVATE" not in keyring.current.active_key.as_pem(private=False)
    assert serialization  # the import documents what as_pem produces
