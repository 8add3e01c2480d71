"""Browser sign-in in-process: the authorization code flow with PKCE through the hosted pages,
ID tokens, userinfo, prompt and max_age, code reuse, logout, and the checks of the OpenID
Foundation's Basic and Config OP plans that run without a browser."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from tests.helpers import PASSWORD, ManualClock, bearer, make_client, make_user

REDIRECT = "http://127.0.0.1:9999/callback"
# Browser sign-in needs an https issuer (or a loopback one): its cookies are Secure, __Host-.
ISSUER = "https://idp.test"


@pytest.fixture
async def client(
    settings: Settings, database: Database, keyring: KeyRing
) -> AsyncIterator[AsyncClient]:
    secure = settings.model_copy(update={"issuer": ISSUER})
    app = create_app(secure, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
async def spa(session: AsyncSession, settings: Settings) -> None:
    await make_user(session, settings)
    await make_client(
        session,
        settings,
        "spa",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["openid", "profile", "email", "orders:read"],
        redirect_uris=[REDIRECT],
        post_logout_redirect_uris=["http://127.0.0.1:9999/bye"],
        first_party=True,
    )


@pytest.fixture
def clock(client: AsyncClient) -> ManualClock:
    clock = ManualClock()
    client._transport.app.state.clock = clock  # type: ignore[attr-defined]
    return clock


def query(response: Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


async def sign_in(
    client: AsyncClient, params: dict[str, str], username: str = "alice", password: str = PASSWORD
) -> Response:
    """GET /authorize, fill the login form, follow back to /authorize: the final redirect."""
    page = await client.get("/authorize", params=params)
    assert page.status_code == 200, page.text
    assert "Sign in" in page.text
    form = {
        **{k: v.replace("&amp;", "&") for k, v in hidden_fields(page.text).items()},
        "username": username,
        "password": password,
    }
    posted = await client.post("/login", data=form, headers={"Origin": ISSUER})
    if posted.status_code != 303:
        return posted
    assert posted.headers["location"].startswith(f"{ISSUER}/authorize?")
    return await client.get(posted.headers["location"])


def authorize_params(challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "spa",
        "redirect_uri": REDIRECT,
        "scope": "openid profile email",
        "state": "s-123",
        "nonce": "n-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def exchange(client: AsyncClient, code: str, verifier: str | None) -> Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "spa",
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return await client.post("/token", data=data)


async def test_code_flow_with_pkce_id_token_userinfo_and_refresh(
    client: AsyncClient, spa: None, settings: Settings
) -> None:
    verifier, challenge = pkce()
    answer = query(await sign_in(client, authorize_params(challenge)))
    assert answer["state"] == "s-123"
    assert answer["iss"] == ISSUER  # RFC 9207
    tokens = await exchange(client, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    id_token = claims_of(body["id_token"])
    assert id_token["iss"] == ISSUER and id_token["aud"] == "spa"
    assert id_token["nonce"] == "n-456"
    assert id_token["preferred_username"] == "alice"
    assert id_token["email"] == "alice@example.com"
    access = body["access_token"]
    digest = hashlib.sha256(access.encode()).digest()
    assert id_token["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert jwt.get_unverified_header(body["id_token"])["typ"] == "JWT"
    info = await client.get("/userinfo", headers=bearer(access))
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == id_token["sub"]
    assert info.json()["email"] == "alice@example.com"
    posted_info = await client.post("/userinfo", headers=bearer(access))
    assert posted_info.json() == info.json()
    renewed = await client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    )
    assert renewed.status_code == 200, renewed.text
    again = claims_of(renewed.json()["id_token"])
    for name in ("iss", "sub", "aud", "auth_time", "sid"):
        assert again[name] == id_token[name], name
    assert "nonce" not in again


async def test_a_code_is_single_use_and_its_reuse_ends_what_it_started(
    client: AsyncClient, spa: None
) -> None:
    verifier, challenge = pkce()
    code = query(await sign_in(client, authorize_params(challenge)))["code"]
    first = (await exchange(client, code, verifier)).json()
    replay = await exchange(client, code, verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    refreshed = await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_pkce_is_enforced_and_cannot_be_downgraded(
    client: AsyncClient, spa: None, session: AsyncSession, settings: Settings
) -> None:
    verifier, challenge = pkce()
    code = query(await sign_in(client, authorize_params(challenge)))["code"]
    assert (await exchange(client, code, None)).json()["error"] == "invalid_grant"
    code = query(await client.get("/authorize", params=authorize_params(challenge)))["code"]
    wrong = await exchange(client, code, pkce()[0])
    assert wrong.json()["error"] == "invalid_grant"
    # A public client must send a challenge, S256 only.
    missing = authorize_params(challenge)
    del missing["code_challenge"], missing["code_challenge_method"]
    assert query(await client.get("/authorize", params=missing))["error"] == "invalid_request"
    plain = authorize_params(verifier, code_challenge_method="plain")
    assert query(await client.get("/authorize", params=plain))["error"] == "invalid_request"
    # A confidential client without a challenge may not then send a verifier (downgrade).
    secret = await make_client(
        session,
        settings,
        "web",
        client_type="confidential",
        grant_types=["authorization_code"],
        scopes=["openid"],
        redirect_uris=[REDIRECT],
        first_party=True,
    )
    assert secret is not None
    params = {**authorize_params(challenge, client_id="web", scope="openid")}
    del params["code_challenge"], params["code_challenge_method"]
    code = query(await client.get("/authorize", params=params))["code"]
    downgraded = await client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": "web",
            "client_secret": secret,
        },
    )
    assert downgraded.status_code in (400, 401)


async def test_unregistered_redirects_and_unknown_clients_get_a_page_not_a_redirect(
    client: AsyncClient, spa: None
) -> None:
    _verifier, challenge = pkce()
    for params in (
        authorize_params(challenge, redirect_uri="https://evil.example/cb"),
        authorize_params(challenge, redirect_uri=REDIRECT + "/x"),
        authorize_params(challenge, client_id="nobody"),
        {k: v for k, v in authorize_params(challenge).items() if k != "redirect_uri"},
    ):
        response = await client.get("/authorize", params=params)
        assert response.status_code == 400, params
        assert "location" not in response.headers
        assert "cannot continue" in response.text
    # A loopback redirect matches on any port (RFC 8252 section 7.3).
    other_port = authorize_params(challenge, redirect_uri="http://127.0.0.1:5555/callback")
    page = await client.get("/authorize", params=other_port)
    assert page.status_code == 200
    assert "Sign in" in page.text


async def test_prompt_none_max_age_and_login(
    client: AsyncClient, spa: None, clock: ManualClock
) -> None:
    verifier, challenge = pkce()
    none = await client.get("/authorize", params=authorize_params(challenge, prompt="none"))
    assert query(none)["error"] == "login_required"
    assert query(none)["state"] == "s-123"
    code = query(await sign_in(client, authorize_params(challenge)))["code"]
    first = claims_of((await exchange(client, code, verifier)).json()["id_token"])
    # Signed in: prompt=none now just answers, single sign-on.
    silent = query(
        await client.get("/authorize", params=authorize_params(challenge, prompt="none"))
    )
    assert "code" in silent
    clock.advance(120)
    too_old = await client.get("/authorize", params=authorize_params(challenge, max_age="60"))
    assert too_old.status_code == 200 and "Sign in" in too_old.text
    fresh = await client.get("/authorize", params=authorize_params(challenge, prompt="login"))
    assert "Sign in" in fresh.text
    code = query(await sign_in(client, authorize_params(challenge, max_age="60")))["code"]
    later = claims_of((await exchange(client, code, verifier)).json()["id_token"])
    assert later["auth_time"] >= first["auth_time"] + 120


async def test_wrong_password_shows_the_form_again_with_one_message(
    client: AsyncClient, spa: None
) -> None:
    _verifier, challenge = pkce()
    for username, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
        page = await sign_in(client, authorize_params(challenge), username, password)
        assert page.status_code == 401
        assert "Invalid username or password." in page.text


async def test_forms_need_the_csrf_token_and_our_origin(client: AsyncClient, spa: None) -> None:
    _verifier, challenge = pkce()
    page = await client.get("/authorize", params=authorize_params(challenge))
    form = {**hidden_fields(page.text), "username": "alice", "password": PASSWORD}
    cross = await client.post("/login", data=form, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    forged = await client.post("/login", data={**form, "csrf": "x"}, headers={"Origin": ISSUER})
    assert forged.status_code == 403
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_consent_for_third_party_clients_is_asked_once(
    client: AsyncClient, session: AsyncSession, settings: Settings, spa: None
) -> None:
    await make_client(
        session,
        settings,
        "partner",
        grant_types=["authorization_code"],
        scopes=["openid", "profile"],
        redirect_uris=[REDIRECT],
    )
    _verifier, challenge = pkce()
    params = authorize_params(challenge, client_id="partner", scope="openid profile")
    page = await sign_in(client, params)
    assert page.status_code == 200 and "Allow access?" in page.text
    denied = await client.post(
        "/consent",
        data={**hidden_fields(page.text), "decision": "deny"},
        headers={"Origin": ISSUER},
    )
    assert query(denied)["error"] == "access_denied"
    page = await client.get("/authorize", params=params)
    allowed = await client.post(
        "/consent",
        data={**hidden_fields(page.text), "decision": "allow"},
        headers={"Origin": ISSUER},
    )
    assert "code" in query(allowed)
    assert "code" in query(await client.get("/authorize", params=params))  # remembered
    none = await client.get(
        "/authorize", params={**params, "scope": "openid profile", "prompt": "consent"}
    )
    assert "Allow access?" in none.text


async def test_logout_ends_the_session_and_its_tokens(client: AsyncClient, spa: None) -> None:
    verifier, challenge = pkce()
    code = query(await sign_in(client, authorize_params(challenge)))["code"]
    body = (await exchange(client, code, verifier)).json()
    out = await client.get(
        "/logout",
        params={
            "id_token_hint": body["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:9999/bye",
            "state": "bye-state",
        },
    )
    assert out.status_code == 303
    assert out.headers["location"] == "http://127.0.0.1:9999/bye?state=bye-state"
    assert (await client.get("/userinfo", headers=bearer(body["access_token"]))).status_code == 401
    refreshed = await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"
    again = await client.get("/authorize", params=authorize_params(challenge, prompt="none"))
    assert query(again)["error"] == "login_required"
    bad = await client.get(
        "/logout",
        params={
            "id_token_hint": body["id_token"],
            "post_logout_redirect_uri": "https://evil.example",
        },
    )
    assert bad.status_code == 400


async def test_discovery_is_openid_connect_and_consistent(client: AsyncClient) -> None:
    oidc = (await client.get("/.well-known/openid-configuration")).json()
    oauth = (await client.get("/.well-known/oauth-authorization-server")).json()
    for name, value in oauth.items():
        assert oidc[name] == value, name
    assert oidc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert oidc["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert oidc["end_session_endpoint"] == f"{ISSUER}/logout"
    assert oidc["response_types_supported"] == ["code"]
    assert oidc["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in oidc["id_token_signing_alg_values_supported"]
    assert "userinfo_endpoint" not in oauth


async def test_cors_only_for_registered_origins(client: AsyncClient, spa: None) -> None:
    good = {"Origin": "http://127.0.0.1:9999", "Access-Control-Request-Method": "POST"}
    preflight = await client.options("/token", headers=good)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:9999"
    evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    refused = await client.options("/token", headers=evil)
    assert "access-control-allow-origin" not in refused.headers
    jwks = await client.get("/.well-known/jwks.json", headers={"Origin": "https://any.example"})
    assert jwks.headers["access-control-allow-origin"] == "*"
    page = await client.get("/authorize", headers={"Origin": "http://127.0.0.1:9999"})
    assert "access-control-allow-origin" not in page.headers


async def test_malformed_sign_in_requests_get_the_error_page(
    client: AsyncClient, spa: None
) -> None:
    _verifier, challenge = pkce()
    repeated = "&".join(f"{k}={v}" for k, v in authorize_params(challenge).items())
    for url in (f"/authorize?{repeated}&state=again", "/logout?state=a&state=b"):
        page = await client.get(url)
        assert page.status_code == 400, url
        assert "cannot continue" in page.text
    bad_utf8 = await client.post(
        "/login",
        content=b"username=%ff",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": ISSUER},
    )
    assert bad_utf8.status_code == 403  # no valid form, so no valid CSRF token either
