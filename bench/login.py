"""Benchmarks 3 to 6 and 9: login latency and throughput against bcrypt itself, JWKS
responsiveness under login load, JWKS against a trivial endpoint, memory."""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import bcrypt
import httpx

from bench.common import PASSWORD, Report, Sizes, login, median, percentile, rss_mb, run_for, wrk
from tests.live import LiveServer


def _bcrypt_seconds(password_hash: bytes) -> float:
    start = time.perf_counter()
    bcrypt.checkpw(PASSWORD.encode(), password_hash)
    return time.perf_counter() - start


async def _latencies(client: httpx.AsyncClient, path: str, count: int) -> list[float]:
    values = []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.get(path)
        values.append(time.perf_counter() - start)
        response.raise_for_status()
    return values


async def run(report: Report, sizes: Sizes, server: LiveServer, users: list[str]) -> None:
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(sizes.bcrypt_rounds))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        assert (await login(client)).status_code == 200
        # 3. Sequential logins and local bcrypt checks, interleaved so both see the same noise.
        logins, checks = [], []
        for _ in range(sizes.login_samples):
            start = time.perf_counter()
            response = await login(client)
            logins.append(time.perf_counter() - start)
            response.raise_for_status()
            checks.append(_bcrypt_seconds(password_hash))
        login_median, bcrypt_median = median(logins), median(checks)
        ratio = login_median / bcrypt_median
        report.add(
            "3 login latency vs one bcrypt check",
            ratio,
            "<= 1.15",
            ratio <= 1.15,
            f"median /token {login_median * 1000:.1f} ms, bcrypt cost {sizes.bcrypt_rounds} "
            f"{bcrypt_median * 1000:.1f} ms",
        )

        # 3b. Enumeration by timing (issue 13, item 4): a password bcrypt cannot check (over
        # 72 bytes) for an existing and an unknown account, interleaved; 1.0 tells nothing.
        existing, unknown = [], []
        for _ in range(sizes.login_samples):
            for username, samples in (("bench", existing), ("nobody-of-the-bench", unknown)):
                start = time.perf_counter()
                response = await client.post(
                    "/token",
                    data={"grant_type": "password", "username": username, "password": "x" * 73},
                )
                samples.append(time.perf_counter() - start)
                assert response.status_code == 400
        ratio = median(unknown) / median(existing)
        report.add(
            "3b long-password login, unknown vs existing account",
            ratio,
            "0.9 to 1.1",
            0.9 <= ratio <= 1.1,
            f"median unknown {median(unknown) * 1000:.2f} ms, "
            f"existing {median(existing) * 1000:.2f} ms",
        )

        # 5 (idle part). JWKS latency with nothing else running.
        idle = await _latencies(client, "/.well-known/jwks.json", 300)

        # 4 and 5. Saturate both cores with logins of many users while probing the JWKS.
        turns = itertools.cycle(users)

        async def one_login() -> bool:
            return (await login(client, next(turns))).status_code == 200

        probe: list[float] = []
        stop = asyncio.Event()

        async def probe_jwks() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as prober:
                while not stop.is_set():
                    start = time.perf_counter()
                    (await prober.get("/.well-known/jwks.json")).raise_for_status()
                    probe.append(time.perf_counter() - start)
                    await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe_jwks())
        ok, failed, elapsed = await run_for(sizes.saturation_seconds, 16, one_login)
        stop.set()
        await prober
        cores = os.cpu_count() or 1
        ideal = cores / bcrypt_median
        throughput = ok / elapsed
        report.add(
            "4 login throughput vs cores / bcrypt time",
            throughput / ideal,
            ">= 0.8",
            throughput / ideal >= 0.8,
            f"{throughput:.1f} logins/s ({failed} failed) vs {ideal:.1f}/s on {cores} cores",
        )
        busy_p99, idle_p99 = percentile(probe, 99), percentile(idle, 99)
        report.add(
            "5 JWKS p99 under login load vs idle p99",
            busy_p99 / idle_p99,
            "p99 < 50 ms",
            busy_p99 < 0.050,
            f"p99 {busy_p99 * 1000:.1f} ms under load ({len(probe)} probes), "
            f"idle {idle_p99 * 1000:.2f} ms",
        )

    # 6. JWKS against a trivial endpoint of the same app, alternated, best of two each.
    jwks_rps = [wrk(f"{server.url}/.well-known/jwks.json", sizes.wrk_seconds) for _ in range(2)]
    trivial_rps = [wrk(f"{server.url}/healthz", sizes.wrk_seconds) for _ in range(2)]
    if None in jwks_rps or None in trivial_rps:
        report.notes.append("6 skipped: wrk is not installed")
    else:
        best_jwks = max(r for r in jwks_rps if r is not None)
        best_trivial = max(r for r in trivial_rps if r is not None)
        report.add(
            "6 JWKS requests/s vs trivial endpoint",
            best_jwks / best_trivial,
            ">= 0.9",
            best_jwks / best_trivial >= 0.9,
            f"JWKS {best_jwks:,.0f}/s, /healthz {best_trivial:,.0f}/s (wrk, 32 connections)",
        )


def memory(report: Report, server: LiveServer) -> None:
    """9. Resident size of the server process after the load runs."""
    resident = rss_mb(server.process.pid)
    report.add(
        "9 server RSS after load vs 150 MB",
        resident / 150,
        "<= 1.0",
        resident <= 150,
        f"{resident:.0f} MB resident (Keycloak's sizing guide starts at 1,250 MB)",
    )
