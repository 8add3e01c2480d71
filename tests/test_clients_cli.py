"""`idp clients` as an operator runs it (in this process), on a fresh SQLite database; the
secret it prints once works at /token of an app on the same database and keystore."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from joserfc.jwk import RSAKey

from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from idp.services.keys import keystore_for
from tests.live import invoke_idp

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_BCRYPT_ROUNDS": "4",
        "IDP_AUDIENCE": "api.test",
    }


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    """`idp ...` in-process on a migrated database with a keystore (the pepper is in it)."""

    def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return invoke_idp(*args, env=env, stdin=stdin)

    assert _run("db", "upgrade").returncode == 0
    assert _run("keys", "init").returncode == 0
    return _run


@pytest.fixture
async def http(env: dict[str, str], run: Run) -> AsyncIterator[AsyncClient]:
    """The server's app on the command's database and keystore; no client cache, as if a
    server had waited IDP_CLIENT_CACHE_TTL."""
    settings = Settings(
        database_url=env["IDP_DATABASE_URL"],
        keys_dir=Path(env["IDP_KEYS_DIR"]),
        audience=["api.test"],
        bcrypt_rounds=4,
        token_rate_limit=0,
        client_cache_ttl=0,
    )
    app = create_app(settings, keyring=KeyRing(keystore_for(settings)))
    async with AsyncClient(transport=ASGITransport(app=app), base_url=settings.issuer) as client:
        yield client
    await app.state.database.dispose()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _secret(output: str) -> str:
    found = re.findall(r"^client_secret: (\S+)$", output, re.MULTILINE)
    assert len(found) == 1, output
    return str(found[0])


async def _token(http: AsyncClient, client_id: str, secret: str, **form: str) -> Any:
    return await http.post(
        "/token", data={"grant_type": "client_credentials", **form}, auth=(client_id, secret)
    )


async def test_create_show_list_update_rotate_disable_delete(run: Run, http: AsyncClient) -> None:
    out = _ok(
        run(
            "clients", "create", "--id", "orders", "--name", "Orders service",
            "--scope", "orders:read", "--scope", "orders:write",
            "--audience", "api.test", "--audience", "billing",
            "--default-audience", "api.test", "--access-token-ttl", "300",
        )
    )  # fmt: skip
    secret = _secret(out)
    assert "client_id:     orders" in out
    assert "shown only this once" in out and "cannot be shown again" in out
    response = await _token(http, "orders", secret, scope="orders:read")
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 300

    shown = json.loads(_ok(run("clients", "show", "orders", "--json")))
    assert shown["client_id"] == "orders" and shown["name"] == "Orders service"
    assert shown["scopes"] == ["orders:read", "orders:write"]
    assert shown["audiences"] == ["api.test", "billing"]
    assert shown["default_audience"] == "api.test" and shown["access_token_ttl"] == 300
    assert shown["secrets"][0]["hint"] == secret[-4:]
    text = _ok(run("clients", "show", "orders"))
    assert "Orders service" in text and secret not in text

    listed = json.loads(_ok(run("clients", "list", "--json")))
    assert [c["client_id"] for c in listed] == ["idp", "orders"]
    table = _ok(run("clients", "list"))
    assert table.splitlines()[0].split()[:2] == ["client_id", "type"]
    assert any(line.startswith("orders ") for line in table.splitlines())
    assert secret not in table + json.dumps(listed)

    out = _ok(run("clients", "update", "orders", "--name", "Orders", "--scope", "orders:read"))
    assert "name, scopes" in out
    shown = json.loads(_ok(run("clients", "show", "orders", "--json")))
    assert shown["name"] == "Orders" and shown["scopes"] == ["orders:read"]
    assert (await _token(http, "orders", secret, scope="orders:write")).status_code == 400

    # Rotation: with an overlap both secrets work, with 0 only the newest.
    second = _secret(_ok(run("clients", "rotate-secret", "orders", "--overlap", "3600")))
    assert (await _token(http, "orders", secret)).status_code == 200
    assert (await _token(http, "orders", second)).status_code == 200
    third = _secret(_ok(run("clients", "rotate-secret", "orders", "--overlap", "0")))
    assert (await _token(http, "orders", secret)).status_code == 401
    assert (await _token(http, "orders", second)).status_code == 401
    assert (await _token(http, "orders", third)).status_code == 200

    _ok(run("clients", "disable", "orders"))
    refused = await _token(http, "orders", third)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert json.loads(_ok(run("clients", "show", "orders", "--json")))["enabled"] is False
    _ok(run("clients", "enable", "orders"))
    assert (await _token(http, "orders", third)).status_code == 200

    # Delete: asks unless --yes.
    assert run("clients", "delete", "orders", stdin="n\n").returncode != 0
    _ok(run("clients", "show", "orders"))
    assert "deleted client orders" in _ok(run("clients", "delete", "orders", "--yes"))
    assert (await _token(http, "orders", third)).status_code == 401
    assert run("clients", "show", "orders").returncode == 1


async def test_roles_of_a_client(run: Run, http: AsyncClient) -> None:
    _ok(run("roles", "create", "billing"))
    secret = _secret(_ok(run("clients", "create", "--id", "worker")))
    assert "granted billing to worker" in _ok(run("clients", "grant-role", "worker", "billing"))
    assert "already has" in _ok(run("clients", "grant-role", "worker", "billing"))
    response = await _token(http, "worker", secret)
    payload = response.json()["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["roles"] == ["billing"] and claims["sub"] == "client:worker"
    assert json.loads(_ok(run("clients", "show", "worker", "--json")))["roles"] == ["billing"]
    _ok(run("clients", "revoke-role", "worker", "billing"))
    assert json.loads(_ok(run("clients", "show", "worker", "--json")))["roles"] == []


def test_changes_are_audited_as_the_operator(run: Run, env: dict[str, str]) -> None:
    secret = _secret(_ok(run("clients", "create", "--id", "audited")))
    rotated = _secret(_ok(run("clients", "rotate-secret", "audited")))
    _ok(run("clients", "delete", "audited", "--yes"))
    path = env["IDP_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT action, actor_username, details FROM audit_events "
            "WHERE target_id = 'audited' ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == ["client.create", "client.secret_rotate", "client.delete"]
    assert all(row[1].startswith("os:") for row in rows)
    for value in (secret, rotated):
        assert value[-20:] not in json.dumps(rows)


def test_public_and_private_key_jwt_clients(run: Run, tmp_path: Path) -> None:
    out = _ok(
        run("clients", "create", "--id", "spa", "--public", "--grant", "authorization_code",
            "--redirect-uri", "https://app.example/cb", "--first-party",
            "--post-logout-redirect-uri", "https://app.example/")
    )  # fmt: skip
    assert "client_secret" not in out
    shown = json.loads(_ok(run("clients", "show", "spa", "--json")))
    assert shown["client_type"] == "public" and shown["first_party"] is True
    assert shown["redirect_uris"] == ["https://app.example/cb"]
    assert shown["post_logout_redirect_uris"] == ["https://app.example/"]

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [RSAKey.generate_key(2048).as_dict(private=False)]}))
    out = _ok(
        run("clients", "create", "--id", "signer", "--auth-method", "private_key_jwt",
            "--jwks-file", str(jwks))
    )  # fmt: skip
    assert "client_secret" not in out
    assert json.loads(_ok(run("clients", "show", "signer", "--json")))["jwks"]["keys"]


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_operator_mistakes_are_one_line(run: Run, tmp_path: Path) -> None:
    _ok(run("clients", "create", "--id", "dup"))
    assert "already exists" in _one_line_error(run("clients", "create", "--id", "dup"))
    assert "not found" in _one_line_error(run("clients", "show", "ghost"))
    error = _one_line_error(run("clients", "create", "--public", "--grant", "client_credentials"))
    assert "confidential" in error
    error = _one_line_error(run("clients", "create", "--access-token-ttl", "100000"))
    assert "access_token_ttl" in error
    assert "built in" in _one_line_error(run("clients", "delete", "idp", "--yes"))
    assert "built in" in _one_line_error(run("clients", "disable", "idp"))
    assert "nothing to change" in _one_line_error(run("clients", "update", "dup"))
    assert "jwks-file" in _one_line_error(
        run("clients", "create", "--auth-method", "private_key_jwt", "--jwks-file", "/nope")
    )
    _ok(run("clients", "create", "--id", "pub", "--public"))
    assert "not a secret" in _one_line_error(run("clients", "rotate-secret", "pub"))


def test_without_a_keystore_the_error_says_to_run_keys_init(tmp_path: Path) -> None:
    env = {
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'nokeys.db'}",
        "IDP_KEYS_DIR": str(tmp_path / "missing"),
    }
    assert invoke_idp("db", "upgrade", env=env).returncode == 0
    error = _one_line_error(invoke_idp("clients", "create", "--id", "x", env=env))
    assert "idp keys init" in error
    assert "not found" in _one_line_error(invoke_idp("clients", "show", "x", env=env))
