"""Benchmark 10: client_credentials grants per vCPU of the whole machine, against Keycloak's
sizing figure, and against the raw RSA signing rate of the same cores."""

from __future__ import annotations

import base64
import os

from bench.common import Report, Sizes, wrk_script
from bench.refresh import _sign_rate
from tests.live import LiveServer

# Keycloak's sizing guide: client-credentials grants per second per vCPU.
KEYCLOAK_CLIENT_CREDENTIALS_PER_VCPU = 120

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=orders:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = authorization
function response(status, headers, body)
  if status ~= 200 then
    failures = (failures or 0) + 1
  end
end
"""


def run(report: Report, sizes: Sizes, server: LiveServer, connections: int = 16) -> None:
    secret = server.register_client("bench", scopes=["orders:read"])
    assert secret is not None
    authorization = "Basic " + base64.b64encode(f"bench:{secret}".encode()).decode()
    lua = f'authorization = "{authorization}"\n' + WRK_SCRIPT
    measured = wrk_script(
        f"{server.url}/token",
        lua,
        seconds=sizes.refresh_seconds,
        threads=2,
        connections=connections,
    )
    if measured is None:
        report.notes.append("10 skipped: wrk is not installed")
        return
    rps, non_2xx = measured
    cores = os.cpu_count() or 1
    per_vcpu = rps / cores
    ratio = per_vcpu / KEYCLOAK_CLIENT_CREDENTIALS_PER_VCPU
    report.add(
        "10a client_credentials grants per vCPU vs Keycloak's 120/s",
        ratio,
        ">= 8",
        ratio >= 8,
        f"{rps:,.0f} grants/s on {cores} vCPU shared by the server ({cores} workers), "
        f"PostgreSQL and wrk ({non_2xx} non-2xx)",
    )
    signing = _sign_rate() * cores
    report.add(
        "10b client_credentials grants vs raw RSA signing on the same cores",
        rps / signing,
        "-",
        None,
        f"{rps:,.0f}/s vs {signing:,.0f} RSA-2048 signatures/s",
    )
