"""Key rotation against a live `idp serve` process: no restart, no failed verification."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.helpers import PASSWORD
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.slow  # starts `idp serve` processes

# Short lifetimes so a retired key becomes prunable within the test.
ENV = {"IDP_ACCESS_TOKEN_TTL": "20", "IDP_CLOCK_LEEWAY": "0", "IDP_JWKS_MAX_AGE": "2"}


def _jwks_kids(server: LiveServer) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"]}


def _token(server: LiveServer) -> str:
    response = httpx.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def _me(server: LiveServer, token: str) -> int:
    return httpx.get(f"{server.url}/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _wait_for(condition, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _states(server: LiveServer) -> dict[str, str]:
    lines = server.idp("keys", "list").stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[2] for line in lines}


def test_rotation_prune_and_revoke_on_a_running_server(e2e_database: str, tmp_path: Path) -> None:
    with live_server(e2e_database, tmp_path, env=ENV) as server:
        assert (
            server.idp(
                "users", "create", "alice", "--email", "a@example.com", stdin=PASSWORD + "\n"
            ).returncode
            == 0
        )
        states = _states(server)
        old_active = next(k for k, s in states.items() if s == "active")
        first_next = next(k for k, s in states.items() if s == "next")
        assert _jwks_kids(server) == {old_active, first_next}  # next is published before it signs
        time.sleep(2.1)  # the next key has now been published for IDP_JWKS_MAX_AGE
        old_token = _token(server)
        assert _kid(old_token) == old_active
        rotated = server.idp("keys", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        states = _states(server)
        assert states[first_next] == "active"
        assert states[old_active] == "retired"
        new_next = next(k for k, s in states.items() if s == "next")

        _wait_for(lambda: new_next in _jwks_kids(server))
        assert _jwks_kids(server) == {old_active, first_next, new_next}
        new_token = _token(server)
        assert _kid(new_token) == first_next
        assert _me(server, old_token) == 200  # the retired key still verifies
        assert _me(server, new_token) == 200

        early = server.idp("keys", "prune")
        assert "nothing to prune" in early.stdout  # not before TTL + JWKS max-age + leeway
        _wait_for(lambda: old_active in server.idp("keys", "prune").stdout, timeout=40)
        _wait_for(lambda: old_active not in _jwks_kids(server))

        revoked = server.idp("keys", "revoke", first_next)
        assert revoked.returncode == 0, revoked.stderr
        _wait_for(lambda: first_next not in _jwks_kids(server))
        assert _me(server, new_token) == 401  # a revoked key verifies nothing, at once
        assert _kid(_token(server)) == new_next  # revoking the active key promoted next


def test_rotation_too_early_is_refused_unless_forced(e2e_database: str, tmp_path: Path) -> None:
    with live_server(e2e_database, tmp_path, env={"IDP_JWKS_MAX_AGE": "300"}) as server:
        refused = server.idp("keys", "rotate")
        assert refused.returncode == 1
        assert "--force" in refused.stderr
        assert "Traceback" not in refused.stderr
        forced = server.idp("keys", "rotate", "--force")
        assert forced.returncode == 0
        assert server.idp("keys", "revoke", "no-such-kid").returncode == 1


def test_es256_and_eddsa_keys_sign_when_chosen(e2e_database: str, tmp_path: Path) -> None:
    with live_server(e2e_database, tmp_path) as server:
        assert (
            server.idp(
                "users", "create", "alice", "--email", "a@example.com", stdin=PASSWORD + "\n"
            ).returncode
            == 0
        )
        for alg in ("ES256", "EdDSA"):
            assert server.idp("keys", "rotate", "--force", "--alg", alg).returncode == 0
            assert (
                server.idp("keys", "rotate", "--force").returncode == 0
            )  # the alg key is now active
            _wait_for(lambda alg=alg: jwt.get_unverified_header(_token(server))["alg"] == alg)  # type: ignore[misc]
            token = _token(server)
            assert _me(server, token) == 200
            keys = httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
            key = next(k for k in keys if k["kid"] == _kid(token))
            assert key["alg"] == alg
            assert "d" not in key
