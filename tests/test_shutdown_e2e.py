"""SIGTERM under load: every request the server accepted finishes, then the process exits 0.

"Accepted" is what the server says: a request counts once the application has started on
it, which the server reports as `idp_http_requests_in_progress` or as a finished /token in
`idp_http_requests_total`. The signal is sent only when all the load is accepted and much of
it is still in flight. Requests sent after the listener closed get a connection error: they
were never accepted, and the test checks that this is how they fail.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import PASSWORD
from tests.live import LiveServer, live_server

LOAD = 200
# bcrypt cost 8 keeps each login busy for a while, so many are in flight at the signal. The
# pool wait is long because 200 logins share 20 connections on a small test machine; pool
# exhaustion is not what this test is about (tests/test_faults.py covers it).
ENV = {"IDP_BCRYPT_ROUNDS": "8", "IDP_DB_POOL_TIMEOUT": "60", "IDP_LOG_FORMAT": "json"}


def _accepted_and_in_flight(metrics_text: str) -> tuple[int, int]:
    """(/token requests accepted so far, requests in flight), from the server's own metrics."""
    finished = in_flight = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "idp_http_requests_total" and sample.labels["route"] == "/token":
                finished += sample.value
            if sample.name == "idp_http_requests_in_progress":
                in_flight = sample.value - 1  # minus the scrape that reports it
    return int(finished + in_flight), int(in_flight)


async def _login(client: httpx.AsyncClient, url: str) -> httpx.Response | Exception:
    try:
        return await client.post(
            f"{url}/token",
            data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        )
    except httpx.HTTPError as exc:
        return exc


async def _load_then_sigterm(server: LiveServer) -> tuple[list[httpx.Response | Exception], int]:
    # One connection per request: no request can land on a keep-alive connection that the
    # server is closing, which would blur "not accepted" and "dropped".
    limits = httpx.Limits(max_connections=LOAD + 10, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(limits=limits, timeout=90) as client,
        httpx.AsyncClient(timeout=10) as probe,
    ):
        load = [asyncio.create_task(_login(client, server.url)) for _ in range(LOAD)]
        deadline = time.monotonic() + 60
        while True:
            accepted, in_flight = _accepted_and_in_flight(
                (await probe.get(f"{server.url}/metrics")).text
            )
            if accepted >= LOAD:
                break
            assert time.monotonic() < deadline, f"only {accepted} of {LOAD} accepted"
            await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)

        # The listener closes at once; the accepted requests keep the process alive.
        await asyncio.sleep(1.0)
        assert server.process.poll() is None, "the server did not wait for its requests"
        late = await _login(probe, server.url)
        assert isinstance(late, httpx.ConnectError), late

        return list(await asyncio.gather(*load)), in_flight


@pytest.mark.slow
def test_sigterm_under_load_fails_no_accepted_request(e2e_database: str, tmp_path: Path) -> None:
    with live_server(e2e_database, tmp_path, env=ENV) as server:
        created = server.idp("users", "create", "alice", "--email", "a@x.io", stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr

        results, in_flight_at_signal = asyncio.run(_load_then_sigterm(server))

        assert server.process.wait(40) == 0
        log = server.log()
    assert in_flight_at_signal >= 20, "too few requests in flight to show anything"
    failures = [r for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert failures == []
    assert all("access_token" in r.json() for r in results if isinstance(r, httpx.Response))
    assert "Waiting for connections to close" in log or in_flight_at_signal == 0
    assert "Cancel" not in log  # uvicorn's message when the graceful timeout cuts requests
    assert "Traceback" not in log
    assert "Application shutdown complete" in log
