"""The example orders service beside a live idp: 401 without a token, 403 without the
service's own permission, 200/201 with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import PASSWORD
from tests.live import ROOT, LiveServer, free_port, live_server

pytestmark = pytest.mark.slow  # starts `idp serve` processes


@pytest.fixture
def idp(e2e_database: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(e2e_database, tmp_path, env={"IDP_AUDIENCE": "orders"}) as server:
        assert server.idp("roles", "create", "sales").returncode == 0
        assert server.idp("roles", "create", "support").returncode == 0
        for name, role in (("sam", "sales"), ("sue", "support"), ("nora", None)):
            args = ["users", "create", name, "--email", f"{name}@example.com"]
            created = server.idp(*args, *(["--role", role] if role else []), stdin=PASSWORD + "\n")
            assert created.returncode == 0, created.stderr
        yield server


@pytest.fixture
def orders(idp: LiveServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "ORDERS_ISSUER": idp.url,
        "ORDERS_AUDIENCE": "orders",
        "ORDERS_PORT": str(port),
    }
    log = (tmp_path / "orders.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.orders_service"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:  # compose's probe
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "orders.log").read_text()
            assert time.monotonic() < deadline, "orders service did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def _token(idp: LiveServer, username: str) -> dict[str, str]:
    response = httpx.post(
        f"{idp.url}/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_orders_service_applies_its_own_permissions(idp: LiveServer, orders: str) -> None:
    sam, sue, nora = (_token(idp, name) for name in ("sam", "sue", "nora"))
    assert httpx.get(f"{orders}/orders").status_code == 401
    bad = httpx.get(f"{orders}/orders", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]

    created = httpx.post(f"{orders}/orders", headers=sam, json={"item": "book", "quantity": 2})
    assert created.status_code == 201
    assert created.json()["owner"] == "sam"
    assert httpx.get(f"{orders}/orders", headers=sue).json()[0]["item"] == "book"
    assert (
        httpx.post(f"{orders}/orders", headers=sue, json={"item": "x", "quantity": 1}).status_code
        == 403
    )
    assert httpx.get(f"{orders}/orders", headers=nora).status_code == 403
    assert httpx.delete(f"{orders}/orders/1", headers=sam).status_code == 403
    whoami = httpx.get(f"{orders}/whoami", headers=sue).json()
    assert whoami["roles"] == ["support"]
    assert whoami["permissions"] == ["orders:read"]
