"""Benchmark 10: client_credentials grants per vCPU of the whole machine, against Keycloak's
sizing figure, and against the raw RSA signing rate of the same cores."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path

from bench.common import Report, Sizes
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
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        output = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{max(1, round(sizes.refresh_seconds))}s",
                "-s",
                script.name,
                f"{server.url}/token",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=sizes.refresh_seconds + 60,
        ).stdout
    except FileNotFoundError:
        report.notes.append("10 skipped: wrk is not installed")
        return
    finally:
        Path(script.name).unlink()
    rps = next(
        float(line.split()[1]) for line in output.splitlines() if line.startswith("Requests/sec:")
    )
    non_2xx = next((int(line.split()[-1]) for line in output.splitlines() if "Non-2xx" in line), 0)
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
