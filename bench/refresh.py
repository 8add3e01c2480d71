"""Benchmark 7: refresh-grant throughput per vCPU of the whole machine, against Keycloak's
sizing figure and against the raw RSA signing rate of the same cores."""

from __future__ import annotations

import os
import time

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import PASSWORD, Report, Sizes, wrk_script
from tests.live import LiveServer

KEYCLOAK_REFRESH_PER_VCPU = 120  # Keycloak's sizing guide: refresh-token requests/s per vCPU

# Each wrk thread drives one connection and one refresh-token chain: every response's new
# refresh token is sent in the next request, as a real client does.
WRK_SCRIPT = r"""
local tokens = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("token", tokens_list[counter])
end
function request()
  return wrk.format("POST", "/token", {["Content-Type"] = "application/x-www-form-urlencoded"},
    "grant_type=refresh_token&refresh_token=" .. token)
end
function response(status, headers, body)
  if status == 200 then
    token = string.match(body, '"refresh_token":"([^"]+)"')
  else
    failures = (failures or 0) + 1
  end
end
"""


def _sign_rate(seconds: float = 1.0) -> float:
    """RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second on one core."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    data, pad, digest = b"x" * 300, padding.PKCS1v15(), hashes.SHA256()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.sign(data, pad, digest)
        count += 1
    return count / (time.perf_counter() - start)


def _refresh_tokens(server: LiveServer, count: int) -> list[str]:
    tokens = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(count):
            response = client.post(
                "/token",
                data={"grant_type": "password", "username": "bench", "password": PASSWORD},
            )
            response.raise_for_status()
            tokens.append(response.json()["refresh_token"])
    return tokens


def run(report: Report, sizes: Sizes, server: LiveServer, connections: int = 16) -> None:
    tokens = _refresh_tokens(server, connections)
    lua = "tokens_list = {" + ",".join(f'"{t}"' for t in tokens) + "}\n" + WRK_SCRIPT
    measured = wrk_script(
        f"{server.url}/token",
        lua,
        seconds=sizes.refresh_seconds,
        threads=connections,
        connections=connections,
    )
    if measured is None:
        report.notes.append("7 skipped: wrk is not installed")
        return
    rps, non_2xx = measured
    cores = os.cpu_count() or 1
    per_vcpu = rps / cores
    report.add(
        "7a refresh grants per vCPU vs Keycloak's 120/s",
        per_vcpu / KEYCLOAK_REFRESH_PER_VCPU,
        ">= 4",
        per_vcpu / KEYCLOAK_REFRESH_PER_VCPU >= 4,
        f"{rps:,.0f} refreshes/s on {cores} vCPU shared by the server ({cores} workers), "
        f"PostgreSQL and wrk ({non_2xx} non-2xx)",
    )
    signing = _sign_rate() * cores
    report.add(
        "7b refresh grants vs raw RSA signing on the same cores",
        rps / signing,
        "-",
        None,
        f"{rps:,.0f}/s vs {signing:,.0f} RSA-2048 signatures/s",
    )
