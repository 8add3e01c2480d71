"""GET /metrics: request counts and latency by route template, grant outcomes, key status."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration import metrics
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    InvalidGrantError,
    OAuthError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from idp.configuration.settings import Settings
from idp.main import create_app
from idp.services.keyring import KeyRing
from idp.services.keys import KeyStore
from tests.conftest import ISSUER
from tests.helpers import PASSWORD, login, make_user


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.fixture
async def app_client(
    settings: Settings, database: Database, keyring: KeyRing
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(settings, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        yield app, client


async def test_requests_are_counted_by_route_template_not_by_path(
    app_client: tuple[FastAPI, AsyncClient],
) -> None:
    app, client = app_client

    async def thing() -> dict[str, str]:
        return {}

    app.add_api_route("/things/{thing_id}", thing, methods=["GET"])
    inner = APIRouter(prefix="/roles")
    inner.add_api_route("/{name}", thing, methods=["GET"])
    outer = APIRouter(prefix="/admin")
    outer.include_router(inner)
    app.include_router(outer, prefix="/v1")
    before = await scrape(client)
    for thing_id in ("1", "2", str(uuid.uuid4())):
        assert (await client.get(f"/things/{thing_id}")).status_code == 200
    assert (await client.get("/v1/admin/roles/writers")).status_code == 200
    random_paths = [f"/no-such-{uuid.uuid4().hex}" for _ in range(3)]
    for path in random_paths:
        assert (await client.get(path)).status_code == 404
    assert (await client.request("BREW", "/healthz")).status_code == 405
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/things/{thing_id}"
    assert delta("idp_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("idp_http_request_duration_seconds_count", method="GET", route=route) == 3
    assert delta("idp_http_request_duration_seconds_sum", method="GET", route=route) > 0
    nested = "/v1/admin/roles/{name}"  # every include prefix, not just the router's own
    assert delta("idp_http_requests_total", method="GET", route=nested, status="200") == 1
    unmatched = metrics.UNMATCHED_ROUTE
    assert delta("idp_http_requests_total", method="GET", route=unmatched, status="404") == 3
    assert delta("idp_http_requests_total", method="other", route="/healthz", status="405") == 1
    for path in random_paths:
        assert path not in after  # raw paths never become labels
    assert "BREW" not in after
    # The scrape itself is in progress while it renders.
    assert value(after, "idp_http_requests_in_progress") == 1


async def test_logins_are_counted_by_outcome(
    app_client: tuple[FastAPI, AsyncClient], session: AsyncSession, settings: Settings
) -> None:
    _, client = app_client
    await make_user(session, settings)
    before = await scrape(client)
    assert (await login(client)).status_code == 200
    assert (await login(client, password="wrong password")).status_code == 400
    assert (await login(client, username="nobody")).status_code == 400
    assert (await client.post("/token", data={"grant_type": "password"})).status_code == 400
    after = await scrape(client)

    def delta(outcome: str) -> float:
        return value(after, "idp_logins_total", outcome=outcome) - value(
            before, "idp_logins_total", outcome=outcome
        )

    assert delta("success") == 1
    assert delta("invalid_grant") == 2
    assert delta("invalid_request") == 1
    assert PASSWORD not in after


def test_count_outcome_names_every_kind_of_failure() -> None:
    counter = Counter("idp_test_outcomes", "test", ["outcome"], registry=None)

    def run(exc: BaseException | None) -> None:
        expected = pytest.raises(type(exc)) if exc else contextlib.nullcontext()
        with expected, metrics.count_outcome(counter):
            if exc:
                raise exc

    run(None)
    run(InvalidGrantError())
    run(TooManyRequestsError(retry_after=3))
    run(ServiceUnavailableError())
    run(RuntimeError("boom"))
    run(ConnectionRefusedError())  # a database error before the session turns it into a 503
    counts = {
        sample.labels["outcome"]: sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counts == {
        "success": 1,
        "invalid_grant": 1,
        "rate_limited": 1,
        "unavailable": 2,
        "error": 1,
    }


async def test_active_key_id_and_age(
    app_client: tuple[FastAPI, AsyncClient], keyring: KeyRing
) -> None:
    _, client = app_client
    text = await scrape(client)
    keyset = keyring.current
    assert value(text, "idp_signing_key_info", kid=keyset.active_kid, alg=keyset.active_alg) == 1
    since = keyset.active_activated_at or keyset.active_created_at
    expected_age = (datetime.now(UTC) - since).total_seconds()
    assert abs(value(text, "idp_signing_key_age_seconds") - expected_age) < 5
    assert value(text, "idp_signing_keys_published") == len(keyset.records)


def test_key_ages_are_computed_at_scrape_time() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    status = metrics.SigningKeyStatus(
        kid="k1",
        alg="ES256",
        active_since=since,
        published=3,
        next_since=since + timedelta(seconds=30),
        retired_removable_after=since + timedelta(seconds=60),
    )
    collector = metrics.ScrapeTimeCollector(status, now=since + timedelta(seconds=90))
    found = {s.name: s.value for family in collector.collect() for s in family.samples}
    assert found["idp_signing_key_age_seconds"] == 90
    assert found["idp_signing_keys_published"] == 3
    assert found["idp_signing_key_next_age_seconds"] == 60
    assert found["idp_signing_key_retired_removable_in_seconds"] == -30  # overdue for prune
    without = metrics.ScrapeTimeCollector(
        metrics.SigningKeyStatus(kid="k1", alg="ES256", active_since=since, published=2)
    )
    names = {s.name for family in without.collect() for s in family.samples}
    assert "idp_signing_key_retired_removable_in_seconds" not in names


async def test_next_and_retired_keys_are_read_from_the_key_ring(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path, None, jwks_max_age=0, retire_grace=600)
    store.init()
    store.rotate(force=True)
    records = {r.state.value: r for r in store.list()}
    app = create_app(settings, database=database, keyring=KeyRing(store))
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        text = await scrape(client)
    now = datetime.now(UTC)
    next_age = (now - records["next"].created_at).total_seconds()
    assert abs(value(text, "idp_signing_key_next_age_seconds") - next_age) < 5
    removable_after = records["retired"].removable_after
    assert removable_after is not None
    removable_in = (removable_after - now).total_seconds()
    assert 500 < removable_in <= 600
    assert abs(value(text, "idp_signing_key_retired_removable_in_seconds") - removable_in) < 5


def test_every_outcome_is_exported_as_zero_before_anything_happens() -> None:
    """In a fresh process, so no earlier test has counted anything."""
    script = (
        "from idp.configuration import metrics\n"
        "import sys\n"
        "sys.stdout.write(metrics.render(None)[0].decode())\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    found = samples(fresh)
    for outcome in metrics.LOGIN_OUTCOMES:
        assert found[("idp_logins_total", (("outcome", outcome),))] == 0, outcome
    for outcome in metrics.REFRESH_OUTCOMES:
        assert found[("idp_refreshes_total", (("outcome", outcome),))] == 0, outcome
    for outcome in metrics.REFRESH_OUTCOMES:
        assert found[("idp_client_credentials_grants_total", (("outcome", outcome),))] == 0
    for grant in ("password", "refresh_token"):
        key = ("idp_tokens_issued_total", (("client_id", "idp"), ("grant", grant)))
        assert found[key] == 0
    for method in metrics.CLIENT_AUTH_METHODS:
        key = ("idp_client_authentication_failures_total", (("method", method),))
        assert found[key] == 0
    assert {"unavailable", "rate_limited", "error"} <= set(metrics.LOGIN_OUTCOMES)


def test_every_oauth_error_code_is_a_preinitialised_outcome() -> None:
    def codes(cls: type[OAuthError]) -> set[str]:
        return {cls.error}.union(*(codes(sub) for sub in cls.__subclasses__()))

    assert codes(OAuthError) <= set(metrics.OAUTH_ERRORS)


async def test_tokens_issued_by_grant_and_rate_limited_logins(
    settings: Settings, database: Database, keyring: KeyRing, session: AsyncSession
) -> None:
    await make_user(session, settings)
    limited = settings.model_copy(update={"token_rate_limit": 2})
    app = create_app(limited, database=database, keyring=keyring)
    async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
        before = await scrape(client)
        assert (await login(client, client_id="web-app")).status_code == 401  # unregistered
        response = await login(client)
        assert response.status_code == 200
        refreshed = await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"]},
        )
        assert refreshed.status_code == 200
        assert (await login(client, password="wrong password")).status_code == 429
        after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("idp_tokens_issued_total", grant="password", client_id="idp") == 1
    assert delta("idp_tokens_issued_total", grant="refresh_token", client_id="idp") == 1
    assert "web-app" not in after  # an unregistered client's id never becomes a label
    assert delta("idp_logins_total", outcome="rate_limited") == 1
    assert delta("idp_logins_total", outcome="invalid_client") == 1


async def test_docs_routes_have_their_own_labels(
    app_client: tuple[FastAPI, AsyncClient],
) -> None:
    _, client = app_client
    before = await scrape(client)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert (await client.get(path)).status_code == 200
    after = await scrape(client)
    for route in ("/docs", "/openapi.json", "/redoc"):
        labels = {"method": "GET", "route": route, "status": "200"}
        assert (
            value(after, "idp_http_requests_total", **labels)
            - value(before, "idp_http_requests_total", **labels)
            == 1
        ), route
    unmatched = {"method": "GET", "route": metrics.UNMATCHED_ROUTE, "status": "200"}
    assert value(after, "idp_http_requests_total", **unmatched) == 0


async def test_build_info_and_database_pool(settings: Settings, keyring: KeyRing) -> None:
    pooled = settings.model_copy(update={"db_pool_size": 3, "db_max_overflow": 2})
    database = Database(pooled)
    app = create_app(pooled, database=database, keyring=keyring)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url=ISSUER) as client:
            idle = await scrape(client)
            held = [await database.engine.connect() for _ in range(4)]  # one beyond the pool
            busy = await scrape(client)
            for connection in held:
                await connection.close()
    finally:
        await database.dispose()
    assert value(idle, "idp_build_info", version=importlib.metadata.version("idp")) == 1
    assert value(idle, "idp_db_pool_size") == 3
    assert value(idle, "idp_db_pool_overflow") == 0
    assert value(busy, "idp_db_pool_checked_out") == 4
    assert value(busy, "idp_db_pool_overflow") == 1


def test_key_reloads_are_counted(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, None, jwks_max_age=0, retire_grace=60)
    store.init()
    ring = KeyRing(store)

    def reloads(result: str) -> float:
        return metrics.KEY_RELOADS.labels(result=result)._value.get()

    success, failure = reloads("success"), reloads("failure")
    assert ring.reload_if_changed() is False  # nothing changed: no reload counted
    store.rotate(force=True)
    assert ring.reload_if_changed() is True
    assert reloads("success") == success + 1
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 99}))
    assert ring.reload_if_changed() is False
    assert ring.reload_if_changed() is False  # the same broken manifest counts once
    assert reloads("failure") == failure + 1
