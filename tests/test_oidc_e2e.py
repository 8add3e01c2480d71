"""OpenID Connect against a real `idp serve`: openid-client v6 (node) through the whole code
flow, oidc-client-ts in a single-page app on another origin in headless Chromium, and the
checks of the OpenID Foundation's Basic and Config OP plans that tests/test_oidc.py does not
already make in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.helpers import PASSWORD
from tests.live import ROOT, LiveServer, free_port, live_server
from tests.test_docs_browser import chromium_path

pytestmark = pytest.mark.slow  # starts `idp serve` processes

NODE_OIDC = ROOT / "tests" / "node_oidc"
SPA = ROOT / "tests" / "spa"
CLIENT_ID = "web-app"
CALLBACK = "http://127.0.0.1:9/callback"  # never reached: the flows read the Location
SCOPES = ["openid", "profile", "email"]


def node_project(folder: Path) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (folder / "node_modules").is_dir():
        pytest.fail(f"run `npm ci --prefix {folder.relative_to(ROOT)}` (scripts/test does)")
    return folder


@pytest.fixture
def server(e2e_database: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(e2e_database, tmp_path) as server:
        created = server.idp(
            "users", "create", "alice", "--email", "a@example.com", stdin=PASSWORD + "\n"
        )
        assert created.returncode == 0, created.stderr
        yield server
    assert "Traceback" not in server.log()


def register_web_app(
    server: LiveServer,
    redirect_uris: list[str],
    post_logout: list[str] | None = None,
    *,
    first_party: bool = True,
) -> None:
    server.register_client(
        CLIENT_ID,
        client_type="public",
        grant_types=["authorization_code", "refresh_token"],
        scopes=SCOPES,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout or [],
        first_party=first_party,
    )


def run_node_flow(server: LiveServer) -> dict[str, Any]:
    folder = node_project(NODE_OIDC)
    done = subprocess.run(
        ["node", "flow.mjs", server.url, CLIENT_ID, CALLBACK, "alice", PASSWORD],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# openid-client (node) ------------------------------------------------------------------------


def test_openid_client_code_flow_userinfo_and_refresh(server: LiveServer) -> None:
    register_web_app(server, [CALLBACK])
    result = run_node_flow(server)

    assert result["issuer"] == server.url
    assert result["callback"] == CALLBACK
    assert result["session_cookie"] is True
    claims = result["claims"]
    assert claims["iss"] == server.url
    assert claims["aud"] == CLIENT_ID or claims["aud"] == [CLIENT_ID]
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "a@example.com"
    assert isinstance(claims["auth_time"], int)
    assert claims["nonce"]
    assert result["token_type"].lower() == "bearer"

    userinfo = result["userinfo"]
    assert userinfo["sub"] == claims["sub"]
    assert userinfo["preferred_username"] == "alice"
    assert userinfo["email"] == "a@example.com"

    # The code a second time: refused, and what it gave is revoked (RFC 6749 4.1.2).
    assert result["code_reuse"] == "invalid_grant"
    assert result["userinfo_after_reuse"] == 401
    assert result["refresh_after_reuse"] == "invalid_grant"

    refreshed = result["refreshed_claims"]
    assert refreshed is not None, "a refresh of an openid grant returns an id_token"
    assert refreshed["sub"] == claims["sub"]
    assert refreshed["auth_time"] == claims["auth_time"]
    assert refreshed["iss"] == server.url
    assert "nonce" not in refreshed or refreshed["nonce"] == claims["nonce"]
    assert result["refreshed_userinfo"]["sub"] == claims["sub"]
    assert result["refresh_rotated"] is True

    # openid-client compares the id_token's nonce with the one it expects.
    assert result["wrong_nonce"] == "OAUTH_JWT_CLAIM_COMPARISON_FAILED"


# The Basic/Config OP checks not made in-process -----------------------------------------------


def test_discovery_document_and_id_token_signature(server: LiveServer) -> None:
    register_web_app(server, [CALLBACK])
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.get("/.well-known/openid-configuration")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        config = answer.json()
        # OpenID Connect Discovery 1.0 section 3: the required members.
        assert config["issuer"] == server.url  # the URL the document was fetched under
        for member in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
            assert config[member].startswith(server.url + "/")
        assert "code" in config["response_types_supported"]
        assert config["subject_types_supported"]
        assert set(config["subject_types_supported"]) <= {"public", "pairwise"}
        assert "RS256" in config["id_token_signing_alg_values_supported"]
        assert "openid" in config["scopes_supported"]
        jwks_answer = http.get(config["jwks_uri"])
        assert jwks_answer.status_code == 200
        jwks = jwks_answer.json()
        assert jwks["keys"]
        for key in jwks["keys"]:
            assert "d" not in key and "p" not in key  # public halves only
            assert key["kid"]

    result = run_node_flow(server)
    for id_token in (result["id_token"], result["refreshed_id_token"]):
        header = jwt.get_unverified_header(id_token)
        assert header["alg"] in config["id_token_signing_alg_values_supported"]
        keys = {key["kid"]: key for key in jwks["keys"]}
        assert header["kid"] in keys
        public = jwt.PyJWK.from_dict(keys[header["kid"]])
        claims = jwt.decode(
            id_token,
            public.key,
            algorithms=[header["alg"]],
            audience=CLIENT_ID,
            issuer=server.url,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
        assert claims["sub"] == result["claims"]["sub"]
        assert claims["exp"] > claims["iat"]
        head, _payload, signature = id_token.split(".")
        other = jwt.encode({**claims, "sub": "someone-else"}, "x" * 32, algorithm="HS256")
        tampered = f"{head}.{other.split('.')[1]}.{signature}"  # another payload, same signature
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(tampered, public.key, algorithms=[header["alg"]], audience=CLIENT_ID)


# oidc-client-ts in a single-page app, in Chromium ---------------------------------------------


@contextmanager
def spa_server(issuer: str) -> Iterator[str]:
    """tests/spa on a local origin of its own: index.html for every page path, the
    oidc-client-ts browser bundle, and a config.js naming the issuer and client."""
    folder = node_project(SPA)
    bundle = folder / "node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js"
    config = {"issuer": issuer, "clientId": CLIENT_ID}
    files = {
        "/app.js": ((folder / "app.js").read_bytes(), "text/javascript"),
        "/oidc-client-ts.min.js": (
            bundle.read_bytes(),
            "text/javascript",
        ),
        "/config.js": (
            f"window.IDP_CONFIG = {json.dumps(config)};".encode(),
            "text/javascript",
        ),
    }
    page = (folder / "index.html").read_bytes(), "text/html; charset=utf-8"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            body, media_type = files.get(path) or page
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.mark.parametrize("first_party", [True, False], ids=["first-party", "with-consent"])
def test_single_page_app_signs_in_and_out_with_oidc_client_ts(
    server: LiveServer, first_party: bool
) -> None:
    executable = chromium_path()
    from playwright.sync_api import Route, sync_playwright

    with spa_server(server.url) as app:
        register_web_app(
            server, [f"{app}/callback"], [f"{app}/signed-out"], first_party=first_party
        )
        outside: list[str] = []
        problems: list[str] = []

        def only_local(route: Route) -> None:
            url = route.request.url
            if url.startswith((server.url + "/", app + "/")):
                route.continue_()
            else:
                outside.append(url)
                route.abort("internetdisconnected")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
            )
            try:
                context = browser.new_context()
                context.route("**/*", only_local)
                page = context.new_page()
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )
                page.goto(app + "/", wait_until="load")
                page.wait_for_selector("#status:has-text('anonymous')", timeout=20_000)

                page.click("#signin")  # to the hosted login page
                page.wait_for_url(server.url + "/authorize?*", timeout=20_000)
                page.fill("input#username", "alice")
                page.fill("input#password", PASSWORD)
                page.click("button[type=submit]")
                if not first_party:  # the consent page's form, POSTed by the browser too
                    page.wait_for_selector("button[value=allow]", timeout=20_000)
                    page.click("button[value=allow]")
                page.wait_for_selector("#status:has-text('signed in')", timeout=20_000)
                assert page.url == app + "/"
                assert page.text_content("#username") == "alice"
                sub = page.text_content("#sub")
                assert sub
                userinfo = json.loads(page.text_content("#userinfo") or "")  # CORS allowed it
                assert userinfo["sub"] == sub
                assert userinfo["preferred_username"] == "alice"
                assert userinfo["email"] == "a@example.com"
                assert [c["name"] for c in context.cookies(server.url)].count("idp_session") == 1

                page.click("#signout")  # id_token_hint: no confirmation page
                page.wait_for_selector("#status:has-text('signed out')", timeout=20_000)
                assert page.url.startswith(app + "/signed-out")
                assert "idp_session" not in [c["name"] for c in context.cookies(server.url)]

                page.click("#silent")  # prompt=none: the session is gone
                page.wait_for_selector("#status:has-text('failed')", timeout=20_000)
                assert page.text_content("#error") == "login_required"
            finally:
                browser.close()

    assert outside == []
    assert problems == []
