"""The shipped HAProxy configuration in front of a real `idp serve` (issue 13, items 1 and 9).

A client cannot choose its own address (the proxy overwrites X-Forwarded-For and drops
Forwarded; idp believes only the proxy), and cannot reach /metrics by encoding its path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from idp.configuration.settings import Settings
from tests.helpers import PASSWORD
from tests.live import live_server, run_idp
from tests.proxy import haproxy, haproxy_binary

pytestmark = pytest.mark.slow

SPOOFED = [f"198.51.100.{n}" for n in range(1, 11)]


async def _failure_addresses(url: str) -> set[str]:
    target = make_url(url)
    conn = await asyncpg.connect(
        host=target.host, port=target.port, user=target.username, database=target.database
    )
    try:
        rows = await conn.fetch("SELECT client_address FROM login_failures")
    finally:
        await conn.close()
    return {row["client_address"] for row in rows}


def test_spoofed_forwarded_headers_neither_change_the_address_nor_escape_the_rate_limit(
    e2e_database: str, tmp_path: Path
) -> None:
    haproxy_binary()
    env = {"IDP_TOKEN_RATE_LIMIT": "4", "IDP_LOCKOUT_THRESHOLD": "50"}
    with live_server(e2e_database, tmp_path, env=env) as server:
        created = run_idp(
            "users", "create", "alice", "--email", "alice@example.com",
            env=server.env, stdin=PASSWORD + "\n",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        with haproxy(tmp_path, [server.port]) as proxy:
            statuses = []
            for spoofed in SPOOFED:
                answer = httpx.post(
                    f"{proxy}/token",
                    data={"grant_type": "password", "username": "alice", "password": "wrong!!"},
                    headers={
                        "X-Forwarded-For": spoofed,
                        "Forwarded": f"for={spoofed}",
                        "X-Real-IP": spoofed,
                    },
                    timeout=10,
                )
                statuses.append(answer.status_code)
        log = server.log()
    # One address for all of them: four guesses, then the limit.
    assert statuses == [400] * 4 + [429] * 6, statuses
    assert asyncio.run(_failure_addresses(e2e_database)) == {"127.0.0.1"}
    assert not any(spoofed in log for spoofed in SPOOFED), log


PATHS = ["/metrics", "/metrics/", "/%6detrics", "/%6D%65%74%72%69%63%73", "//metrics", "/METRICS"]


def test_proxy_hides_metrics_however_the_path_is_spelled(e2e_database: str, tmp_path: Path) -> None:
    haproxy_binary()
    answers = {}
    with live_server(e2e_database, tmp_path) as server:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
        with haproxy(tmp_path, [server.port]) as proxy, httpx.Client(timeout=10) as client:
            assert client.get(f"{proxy}/healthz").status_code == 200
            for path in PATHS:
                # Sent as written: httpx would otherwise normalise the percent-encoding.
                request = client.build_request("GET", proxy)
                request.url = request.url.copy_with(raw_path=path.encode("ascii"))
                answer = client.send(request)
                answers[path] = (answer.status_code, "# HELP" in answer.text)
    assert answers == dict.fromkeys(PATHS, (404, False))


def test_trusting_every_address_is_refused() -> None:
    with pytest.raises(ValidationError, match="choose its own address"):
        Settings(forwarded_allow_ips="127.0.0.1, *")
    with pytest.raises(ValidationError):
        Settings(forwarded_allow_ips="not-an-address")
    settings = Settings(forwarded_allow_ips="172.30.0.10, 10.0.0.0/8")
    assert settings.forwarded_allow_ips == "172.30.0.10,10.0.0.0/8"


def test_serve_refuses_to_trust_every_address(tmp_path: Path) -> None:
    result = run_idp(
        "serve",
        env={"IDP_FORWARDED_ALLOW_IPS": "*", "IDP_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "IDP_FORWARDED_ALLOW_IPS" in result.stderr or "forwarded_allow_ips" in result.stderr
    assert "Traceback" not in result.stderr
