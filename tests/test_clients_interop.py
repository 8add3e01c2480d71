"""OAuth clients against a real `idp serve` on PostgreSQL, through client libraries used as
they come: Authlib (client_secret_basic, client_secret_post, private_key_jwt with inline keys
and with a jwks_uri) and node's openid-client v6 (tests/node/clients.mjs). Also the refusals,
as real requests, and the RFC 8414 metadata checked against what the server does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import ClientSecretJWT, PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy.engine import make_url

from idp.services.client_auth import ASSERTION_ALGORITHMS, ASSERTION_TYPE
from idp_verifier import TokenVerifier
from tests.helpers import hs256
from tests.live import ROOT, LiveServer, database_named, execute_sync, live_server

pytestmark = pytest.mark.slow  # starts an `idp serve` process

AUDIENCE = "api.test"  # the live server's IDP_AUDIENCE
NODE_DIR = ROOT / "tests" / "node"


@dataclass
class Interop:
    """The running server and the clients registered on it: secrets and private keys."""

    server: LiveServer
    metadata: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    keys: dict[str, RSAKey | ECKey] = field(default_factory=dict)
    jwks_uri_keys: KeySet | None = None

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])


class _JwksHandler(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, type[_JwksHandler]]]:
    """A client's key set served over http on loopback (idp fetches jwks_uri itself)."""

    class Handler(_JwksHandler):
        pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json", Handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _idp(server: LiveServer, *args: str) -> str:
    ran = server.idp(*args)
    assert ran.returncode == 0, (args, ran.stdout, ran.stderr)
    return ran.stdout


def _register(server: LiveServer, interop: Interop, jwks_uri: str, workdir: Path) -> None:
    """The clients every test here uses, registered with `idp clients` as an operator would."""
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    remote = ECKey.generate_key("P-256", parameters={"kid": "remote-1"})
    interop.keys.update({"svc-rsa": rsa, "svc-ec": ec, "svc-uri": remote})
    interop.jwks_uri_keys = KeySet([remote])
    _idp(server, "roles", "create", "introspector", "--permission", "tokens:introspect")
    _idp(server, "roles", "create", "orders-service")
    usual = ["--scope", "orders:read", "--scope", "orders:write", "--audience", AUDIENCE]
    usual += ["--audience", "billing", "--default-audience", AUDIENCE]
    clients: list[tuple[str, list[str], list[str]]] = [
        ("svc-basic", ["--auth-method", "client_secret_basic"], ["introspector", "orders-service"]),
        ("svc-post", ["--auth-method", "client_secret_post"], ["introspector"]),
        ("svc-rsa", ["--auth-method", "private_key_jwt"], ["introspector"]),
        ("svc-ec", ["--auth-method", "private_key_jwt"], ["introspector"]),
        ("svc-uri", ["--auth-method", "private_key_jwt", "--jwks-uri", jwks_uri], ["introspector"]),
        ("svc-plain", [], []),
        ("svc-disabled", [], []),
        ("svc-no-cc", ["--grant", "refresh_token"], []),
    ]
    for client_id, options, roles in clients:
        key = interop.keys.get(client_id)
        if key is not None and client_id != "svc-uri":
            jwks = workdir / f"{client_id}.jwks.json"
            jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
            options = [*options, "--jwks-file", str(jwks)]
        out = _idp(server, "clients", "create", "--id", client_id, *usual, *options)
        for line in out.splitlines():
            if line.startswith("client_secret:"):
                interop.secrets[client_id] = line.split(":", 1)[1].strip()
        for role in roles:
            _idp(server, "clients", "grant-role", client_id, role)
    _idp(server, "clients", "disable", "svc-disabled")
    _idp(server, "clients", "create", "--id", "spa", "--public", "--grant", "password")
    assert set(interop.secrets) == {
        "svc-basic",
        "svc-post",
        "svc-plain",
        "svc-disabled",
        "svc-no-cc",
    }


@pytest.fixture(scope="module")
def interop(
    template_url: str,
    admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    jwks_server: tuple[str, type[_JwksHandler]],
) -> Iterator[Interop]:
    """One server on a database of its own for the whole module, with its clients."""
    workdir = tmp_path_factory.mktemp("interop")
    name = f"idp_e2e_{uuid.uuid4().hex[:10]}"
    template = make_url(template_url).database
    execute_sync(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = database_named(template_url, name)
    # Refusals are what several tests here send: no per-address budget in the way.
    env = {"IDP_CLIENT_AUTH_FAILURE_LIMIT": "0"}
    try:
        with live_server(url, workdir, env=env) as server:
            metadata = httpx.get(f"{server.url}/.well-known/oauth-authorization-server").json()
            found = Interop(server, metadata)
            jwks_uri, handler = jwks_server
            _register(server, found, jwks_uri, workdir)
            assert found.jwks_uri_keys is not None
            handler.body = json.dumps(found.jwks_uri_keys.as_dict(private=False)).encode()
            yield found
            assert "Traceback" not in server.log(), server.log()
    finally:
        execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _jwks(interop: Interop) -> KeySet:
    return KeySet.import_key_set(httpx.get(f"{interop.server.url}/.well-known/jwks.json").json())


def _claims(interop: Interop, token: str) -> dict[str, Any]:
    """The access token's claims, its signature checked with the server's published keys."""
    return dict(jwt.decode(token, _jwks(interop)).claims)


def _oauth(interop: Interop, client_id: str, method: str, **kwargs: Any) -> AsyncOAuth2Client:
    """Authlib's httpx client for a registered client, configured the documented way."""
    if method == "private_key_jwt":
        key = interop.keys[client_id]
        alg = "RS256" if isinstance(key, RSAKey) else "ES256"
        oauth = AsyncOAuth2Client(
            client_id=client_id,
            client_secret=key,  # Authlib signs with a joserfc key as it is
            token_endpoint_auth_method="private_key_jwt",
            revocation_endpoint_auth_method="private_key_jwt",
            **kwargs,
        )
        oauth.register_client_auth_method(PrivateKeyJWT(interop.token_endpoint, alg=alg))
        return oauth
    return AsyncOAuth2Client(
        client_id=client_id,
        client_secret=interop.secrets[client_id],
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        **kwargs,
    )


def _assert_client_token(
    interop: Interop, token: dict[str, Any], client_id: str, *, scope: str | None
) -> dict[str, Any]:
    assert token["token_type"] == "Bearer"
    assert "refresh_token" not in token
    assert token.get("scope") == scope
    assert 0 < token["expires_in"] <= 900
    claims = _claims(interop, token["access_token"])
    assert claims["sub"] == f"client:{client_id}"
    assert claims["client_id"] == client_id
    assert claims["iss"] == interop.server.url
    assert "username" not in claims
    assert "email" not in claims
    assert "sid" not in claims
    assert claims.get("scope") == scope
    return claims


# Authlib ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "method"),
    [
        ("svc-basic", "client_secret_basic"),
        ("svc-post", "client_secret_post"),
        ("svc-rsa", "private_key_jwt"),
        ("svc-ec", "private_key_jwt"),
        ("svc-uri", "private_key_jwt"),
    ],
)
async def test_authlib_client_credentials_introspect_revoke(
    interop: Interop, client_id: str, method: str
) -> None:
    async with _oauth(interop, client_id, method, scope="orders:read") as oauth:
        token = await oauth.fetch_token(interop.token_endpoint, grant_type="client_credentials")
        claims = _assert_client_token(interop, token, client_id, scope="orders:read")
        assert claims["aud"] == AUDIENCE
        assert "introspector" in claims["roles"]

        answer = await oauth.introspect_token(
            interop.metadata["introspection_endpoint"], token=token["access_token"]
        )
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        assert seen["active"] is True
        assert seen["token_type"] == "access_token"
        assert seen["sub"] == f"client:{client_id}"
        assert seen["client_id"] == client_id
        assert seen["scope"] == "orders:read"
        assert seen["aud"] == AUDIENCE
        assert seen["jti"] == claims["jti"]
        assert "username" not in seen

        revoked = await oauth.revoke_token(
            interop.metadata["revocation_endpoint"],
            token=token["access_token"],
            token_type_hint="access_token",
        )
        assert revoked.status_code == 200, revoked.text
        # A client's own token has no session to end: it stays active until its short exp
        # (docs/clients.md; disabling the client is what cuts it off).
        again = await oauth.introspect_token(
            interop.metadata["introspection_endpoint"], token=token["access_token"]
        )
        assert again.json()["active"] is True


async def test_authlib_scope_audience_and_roles(interop: Interop) -> None:
    async with _oauth(interop, "svc-basic", "client_secret_basic") as oauth:
        token = await oauth.fetch_token(
            interop.token_endpoint,
            grant_type="client_credentials",
            scope="orders:write orders:read",
            resource="billing",
        )
        claims = _assert_client_token(interop, token, "svc-basic", scope="orders:write orders:read")
        assert claims["aud"] == "billing"
        assert sorted(claims["roles"]) == ["introspector", "orders-service"]

        bare = await oauth.fetch_token(interop.token_endpoint, grant_type="client_credentials")
        claims = _assert_client_token(interop, bare, "svc-basic", scope=None)
        assert claims["aud"] == AUDIENCE  # the client's default_audience


async def test_the_verifier_library_tells_a_client_token(interop: Interop) -> None:
    async with _oauth(interop, "svc-basic", "client_secret_basic") as oauth:
        token = await oauth.fetch_token(
            interop.token_endpoint, grant_type="client_credentials", scope="orders:read"
        )
    async with TokenVerifier(interop.server.url, AUDIENCE) as verifier:
        claims = await verifier.verify(token["access_token"])
    assert claims.is_client
    assert claims.subject == "client:svc-basic"
    assert claims.has_scope("orders:read")
    assert claims.has_role("orders-service")


async def test_authlib_refusals(interop: Interop) -> None:
    """What a library user sees for the usual mistakes: OAuthError with the RFC's code."""
    cases: list[tuple[AsyncOAuth2Client, dict[str, str], str]] = [
        (
            AsyncOAuth2Client(
                "svc-basic", "idp_cs_wrong", token_endpoint_auth_method="client_secret_basic"
            ),
            {},
            "invalid_client",
        ),
        (_oauth(interop, "svc-basic", "client_secret_basic"), {"scope": "admin"}, "invalid_scope"),
        (
            _oauth(interop, "svc-post", "client_secret_post"),
            {"resource": "https://elsewhere.example"},
            "invalid_target",
        ),
        (_oauth(interop, "svc-no-cc", "client_secret_basic"), {}, "unauthorized_client"),
    ]
    for oauth, extra, error in cases:
        async with oauth:
            with pytest.raises(OAuthError) as raised:
                await oauth.fetch_token(
                    interop.token_endpoint, grant_type="client_credentials", **extra
                )
            assert raised.value.error == error, (oauth.client_id, extra)


async def test_authlib_client_secret_jwt_is_refused(interop: Interop) -> None:
    """HS256 assertions keyed with the client's secret (client_secret_jwt): not supported,
    so not advertised; a library that sends one gets invalid_client."""
    secret = interop.secrets["svc-basic"]
    async with AsyncOAuth2Client(
        "svc-basic", secret, token_endpoint_auth_method="client_secret_jwt"
    ) as oauth:
        oauth.register_client_auth_method(ClientSecretJWT(interop.token_endpoint))
        with pytest.raises(OAuthError) as raised:
            await oauth.fetch_token(interop.token_endpoint, grant_type="client_credentials")
        assert raised.value.error == "invalid_client"


# Refusals as raw requests ----------------------------------------------------------------


def _assertion(interop: Interop, client_id: str, *, alg: str = "ES256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": interop.token_endpoint,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 60,
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    key = interop.keys[client_id]
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


def _assertion_form(assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }


async def _token(
    interop: Interop, data: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(interop.token_endpoint, data=data, auth=auth)


def _error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


async def test_secret_refusals(interop: Interop) -> None:
    grant = {"grant_type": "client_credentials"}
    wrong = await _token(interop, grant, auth=("svc-basic", "idp_cs_wrong"))
    _error(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].lower().startswith("basic")

    posted = await _token(
        interop, {**grant, "client_id": "svc-post", "client_secret": "idp_cs_wrong"}
    )
    _error(posted, 401, "invalid_client")

    for client_id in ("nobody", "svc-disabled"):
        secret = interop.secrets.get(client_id, "idp_cs_whatever")
        _error(await _token(interop, grant, auth=(client_id, secret)), 401, "invalid_client")

    # The registered method only: a Basic client's secret in the form does not authenticate.
    other = {**grant, "client_id": "svc-basic", "client_secret": interop.secrets["svc-basic"]}
    _error(await _token(interop, other), 401, "invalid_client")

    both = {**grant, "client_secret": interop.secrets["svc-basic"]}
    _error(
        await _token(interop, both, auth=("svc-basic", interop.secrets["svc-basic"])),
        400,
        "invalid_request",
    )


async def test_public_client_may_not_use_client_credentials(interop: Interop) -> None:
    answer = await _token(interop, {"grant_type": "client_credentials", "client_id": "spa"})
    _error(answer, 400, "unauthorized_client")
    anonymous = await _token(interop, {"grant_type": "client_credentials"})
    _error(anonymous, 401, "invalid_client")


async def test_assertion_refusals(interop: Interop) -> None:
    fine = _assertion(interop, "svc-ec")
    assert (await _token(interop, _assertion_form(fine))).status_code == 200
    replayed = await _token(interop, _assertion_form(fine))
    _error(replayed, 401, "invalid_client")

    long_ago = int(time.time()) - 3600
    expired = _assertion(interop, "svc-ec", iat=long_ago, exp=long_ago + 60)
    _error(await _token(interop, _assertion_form(expired)), 401, "invalid_client")

    elsewhere = _assertion(interop, "svc-ec", aud="https://another-server.example/token")
    _error(await _token(interop, _assertion_form(elsewhere)), 401, "invalid_client")

    no_jti = _assertion(interop, "svc-ec", jti=None)
    _error(await _token(interop, _assertion_form(no_jti)), 401, "invalid_client")

    # Signed by the RSA client's key, claiming to be the EC client.
    forged = _assertion(interop, "svc-rsa", alg="RS256", iss="svc-ec", sub="svc-ec")
    _error(await _token(interop, _assertion_form(forged)), 401, "invalid_client")

    # HS256 keyed with the client's public key (algorithm confusion) or a secret client's
    # secret (client_secret_jwt, not supported).
    now = int(time.time())
    for client_id, key in (
        ("svc-rsa", json.dumps(interop.keys["svc-rsa"].as_dict(private=False)).encode()),
        ("svc-basic", interop.secrets["svc-basic"].encode()),
    ):
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": interop.token_endpoint,
            "jti": uuid.uuid4().hex,
            "exp": now + 60,
        }
        confused = hs256({"alg": "HS256", "typ": "JWT"}, claims, key)
        _error(await _token(interop, _assertion_form(confused)), 401, "invalid_client")

    mismatch = _assertion(interop, "svc-ec")
    form = _assertion_form(mismatch, client_id="svc-rsa")
    _error(await _token(interop, form), 401, "invalid_client")

    wrong_type = {**_assertion_form(_assertion(interop, "svc-ec"))}
    wrong_type["client_assertion_type"] = "urn:example:other"
    _error(await _token(interop, wrong_type), 400, "invalid_request")


async def test_introspection_needs_the_permission(interop: Interop) -> None:
    async with _oauth(interop, "svc-plain", "client_secret_basic") as oauth:
        token = await oauth.fetch_token(interop.token_endpoint, grant_type="client_credentials")
        assert _claims(interop, token["access_token"])["roles"] == []
        answer = await oauth.introspect_token(
            interop.metadata["introspection_endpoint"], token=token["access_token"]
        )
        assert answer.status_code == 403, answer.text
    async with httpx.AsyncClient(timeout=30) as http:
        public = await http.post(
            interop.metadata["introspection_endpoint"],
            data={"token": token["access_token"], "client_id": "spa"},
        )
    _error(public, 401, "invalid_client")


async def test_revoking_another_clients_token_is_refused(interop: Interop) -> None:
    async with _oauth(interop, "svc-basic", "client_secret_basic") as mine:
        token = await mine.fetch_token(interop.token_endpoint, grant_type="client_credentials")
    async with _oauth(interop, "svc-post", "client_secret_post") as other:
        answer = await other.revoke_token(
            interop.metadata["revocation_endpoint"], token=token["access_token"]
        )
    _error(answer, 400, "unauthorized_client")


# Metadata --------------------------------------------------------------------------------


async def test_metadata_tells_what_the_server_does(interop: Interop) -> None:
    metadata = interop.metadata
    url = interop.server.url
    async with httpx.AsyncClient(timeout=30) as http:
        oidc = (await http.get(f"{url}/.well-known/openid-configuration")).json()
    # OpenID Connect Discovery is the RFC 8414 document plus OpenID Connect's own members.
    assert {name: oidc[name] for name in metadata} == metadata
    assert {"userinfo_endpoint", "end_session_endpoint"} <= oidc.keys() - metadata.keys()
    assert metadata["issuer"] == url
    assert metadata["grant_types_supported"] == [
        "password",
        "refresh_token",
        "client_credentials",
        "authorization_code",
    ]
    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    assert metadata["token_endpoint_auth_methods_supported"] == methods
    assert metadata["revocation_endpoint_auth_methods_supported"] == methods
    assert metadata["introspection_endpoint_auth_methods_supported"] == methods[:3]
    for endpoint in ("token", "revocation", "introspection"):
        algs = metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert algs == list(ASSERTION_ALGORITHMS)
        assert "HS256" not in algs
    assert "id_token_signing_alg_values_supported" not in metadata
    assert metadata["response_types_supported"] == ["code"]
    # Every advertised method is exercised above; `none` here: a public client's password
    # grant is covered by test_refresh_e2e, and it is what /revoke accepts from it.
    async with httpx.AsyncClient(timeout=30) as http:
        revoked = await http.post(
            metadata["revocation_endpoint"], data={"token": "unknown", "client_id": "spa"}
        )
    assert revoked.status_code == 200


# node openid-client ----------------------------------------------------------------------


def _node(interop: Interop, client_id: str, method: str, **env: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the openid-client interop test needs it")
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node`")
    ran = subprocess.run(
        [node, str(NODE_DIR / "clients.mjs"), interop.server.url, client_id, method],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result: dict[str, Any] = json.loads(ran.stdout)
    return result


@pytest.mark.parametrize(
    ("client_id", "method"),
    [
        ("svc-basic", "client_secret_basic"),
        ("svc-post", "client_secret_post"),
        ("svc-ec", "private_key_jwt"),
    ],
)
def test_openid_client(interop: Interop, client_id: str, method: str) -> None:
    if method == "private_key_jwt":
        key = interop.keys[client_id]
        env = {"IDP_CLIENT_PRIVATE_JWK": json.dumps(key.as_dict(private=True))}
    else:
        env = {"IDP_CLIENT_SECRET": interop.secrets[client_id]}
    result = _node(interop, client_id, method, IDP_SCOPE="orders:read", **env)
    tokens = result["tokens"]
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["scope"] == "orders:read"
    assert "refresh_token" not in tokens
    assert 0 < result["expiresIn"] <= 900
    claims = _claims(interop, tokens["access_token"])
    assert claims["sub"] == f"client:{client_id}"
    assert claims["client_id"] == client_id
    seen = result["introspection"]
    assert seen["active"] is True
    assert seen["sub"] == f"client:{client_id}"
    assert seen["client_id"] == client_id
    assert seen["scope"] == "orders:read"
    assert seen["aud"] == AUDIENCE
    assert "username" not in seen
    assert result["revoked"] is True
    assert result["metadata"]["issuer"] == interop.server.url


def test_openid_client_reports_a_wrong_secret(interop: Interop) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the openid-client interop test needs it")
    ran = subprocess.run(
        [
            node,
            str(NODE_DIR / "clients.mjs"),
            interop.server.url,
            "svc-basic",
            "client_secret_basic",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "IDP_CLIENT_SECRET": "idp_cs_wrong"},
        check=False,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    failed = json.loads(ran.stdout)
    assert failed["oauthError"] == "invalid_client"
    assert failed["status"] == 401
    assert [challenge["scheme"] for challenge in failed["challenges"]] == ["basic"]
