"""Logs and metrics of real `idp serve` processes: JSON lines with request ids and no secret,
and metrics that add up across `--workers`."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.helpers import PASSWORD
from tests.live import LiveServer, live_server


async def _password_hash(url: str, username: str) -> str:
    target = make_url(url)
    conn = await asyncpg.connect(
        host=target.host, port=target.port, user=target.username, database=target.database
    )
    try:
        value: str = await conn.fetchval(
            "SELECT password_hash FROM users WHERE username = $1", username
        )
        return value
    finally:
        await conn.close()


def _private_key_material(keys_dir: Path) -> list[str]:
    """Pieces of every private key file: its base64 lines, and its DER bytes re-encoded in
    the JWK alphabet, whichever way a leak might print them."""
    pieces = []
    for pem in keys_dir.glob("*.pem"):
        lines = [line for line in pem.read_text().splitlines() if not line.startswith("-----")]
        pieces += [line for line in lines if len(line) >= 32]
        der = base64.b64decode("".join(lines))
        pieces.append(base64.urlsafe_b64encode(der).decode().rstrip("=")[100:160])
    assert pieces
    return pieces


def _exercise(server: LiveServer) -> dict[str, str]:
    """Requests that carry secrets every way a client might send them; the secrets used."""
    url = server.url
    login = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    issued = httpx.post(f"{url}/token", data=login)
    assert issued.status_code == 200
    body = issued.json()
    access = body["access_token"]
    secrets = {"password": PASSWORD, "access token": access, "signature": access.split(".")[2]}
    refresh = body["refresh_token"]
    secrets["refresh token"] = refresh
    # A rotation, then a replay of the consumed token (reuse detection logs a warning).
    httpx.post(f"{url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    httpx.post(f"{url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    httpx.post(f"{url}/token", data={**login, "password": "wrong " + PASSWORD})
    httpx.get(f"{url}/me", headers={"Authorization": f"Bearer {access}"})
    httpx.get(f"{url}/me", params={"access_token": access, "password": PASSWORD})
    httpx.post(f"{url}/token", params=login)
    httpx.post(f"{url}/token", json=login)
    httpx.post(f"{url}/token", content=f"password={PASSWORD}&\xff".encode("latin-1"))
    httpx.post(f"{url}/token", data={**login, "pad": "x" * 70_000})  # 413
    httpx.get(f"{url}/healthz", headers={"X-Request-ID": "client-chosen-id-1"})
    return secrets


@pytest.mark.slow
def test_json_logs_carry_request_ids_and_no_secret(e2e_database: str, tmp_path: Path) -> None:
    bootstrap_password = "bootstrap admin passphrase"
    env = {
        "IDP_LOG_FORMAT": "json",
        "IDP_LOG_LEVEL": "DEBUG",
        "IDP_BOOTSTRAP_ADMIN_USERNAME": "root",
        "IDP_BOOTSTRAP_ADMIN_PASSWORD": bootstrap_password,
        "IDP_BOOTSTRAP_ADMIN_EMAIL": "root@example.com",
    }
    with live_server(e2e_database, tmp_path, env=env) as server:
        created = server.idp("users", "create", "alice", "--email", "a@x.io", stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        secrets = {**_exercise(server), "bootstrap password": bootstrap_password}
        secrets["password hash"] = asyncio.run(_password_hash(e2e_database, "alice"))
        for index, piece in enumerate(_private_key_material(tmp_path / "keys")):
            secrets[f"private key piece {index}"] = piece
    log = server.log()

    entries = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all("request_id" in entry for entry in entries)
    assert any("created admin account 'root'" in e["msg"] for e in entries)  # `idp serve` too
    access = [e for e in entries if e["logger"] == "idp.access"]
    assert len(access) >= 10
    assert all(
        len(e["request_id"]) == 32 or e["request_id"] == "client-chosen-id-1" for e in access
    )
    assert len({e["request_id"] for e in access}) == len(access)
    assert {e["status"] for e in access} >= {200, 400, 401, 413}
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} appears in the log"


def _healthz_count(metrics_text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "idp_http_requests_total" and sample.labels["route"] == "/healthz":
                total += sample.value
    return total


@pytest.mark.slow
def test_metrics_and_logs_add_up_across_workers(e2e_database: str, tmp_path: Path) -> None:
    requests = 40
    env = {"IDP_LOG_FORMAT": "json"}
    with live_server(e2e_database, tmp_path, env=env, args=["--workers", "2"]) as server:
        # New connections each time, so the kernel spreads them over both workers.
        for _ in range(requests):
            assert httpx.get(f"{server.url}/healthz", headers={"Connection": "close"}).is_success
        scrapes = [
            _healthz_count(httpx.get(f"{server.url}/metrics", headers={"Connection": "close"}).text)
            for _ in range(6)
        ]
    # Whichever worker answers the scrape, it reports the sum over both.
    assert scrapes == [requests] * 6
    entries = [json.loads(line) for line in server.log().splitlines()]
    pids = {
        e["msg"].split("[")[-1].rstrip("]") for e in entries if "Started server process" in e["msg"]
    }
    assert len(pids) == 2
    healthz = [e for e in entries if e["logger"] == "idp.access" and e["route"] == "/healthz"]
    assert len(healthz) == requests  # workers log too, in the configured format
