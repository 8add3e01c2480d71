"""Prometheus metrics: the metric objects every layer may count on, and rendering for /metrics.

A leaf module, so services import the counters without depending on the HTTP layer. Labels are
bounded on purpose: routes are templates (`/admin/users/{user_id}`), unknown paths share one
label, unknown methods are `other`, outcomes come from a fixed list.

With `idp serve --workers N` each worker is a process with its own counters. When
`PROMETHEUS_MULTIPROC_DIR` names a directory (`idp serve` sets one up for N > 1), the counters
live in files there and any worker's `/metrics` reports the sum over all workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from idp.configuration.database import is_unavailable
from idp.configuration.exceptions import IdpError, OAuthError, TooManyRequestsError

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE: Final = "<unmatched>"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Outcome labels of LOGINS and REFRESHES, besides the OAuth error codes of RFC 6749 section 5.2.
SUCCESS: Final = "success"
RATE_LIMITED: Final = "rate_limited"
UNAVAILABLE: Final = "unavailable"
ERROR: Final = "error"

# `_created` timestamps would double the series for no use on a dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "idp_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
REQUEST_DURATION = Histogram(
    "idp_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
)
REQUESTS_IN_PROGRESS = Gauge(
    "idp_http_requests_in_progress",
    "HTTP requests being handled now.",
    multiprocess_mode="livesum",
)
LOGINS = Counter(
    "idp_logins",
    "Password-grant logins by outcome: success, invalid_grant, invalid_request, rate_limited, "
    "unavailable, error.",
    ["outcome"],
)
REFRESHES = Counter(
    "idp_refreshes",
    "Refresh-token grants by outcome: success, invalid_grant (expired, revoked or reused), "
    "invalid_request, unavailable, error.",
    ["outcome"],
)
REFRESH_REUSES = Counter(
    "idp_refresh_token_reuses",
    "Replays of an already used refresh token; each one ends its token family.",
)
LOCKOUTS = Counter(
    "idp_lockouts",
    "Accounts locked after too many failed logins.",
)
KEY_RELOADS = Counter(
    "idp_keys_reloads",
    "Reloads of the signing keys after the keystore changed, by result (success, failure).",
    ["result"],
)


# Zero rather than absent for the outcomes a dashboard plots, from the first scrape on.
for _outcome in (SUCCESS, "invalid_grant", "invalid_request"):
    LOGINS.labels(outcome=_outcome)
    REFRESHES.labels(outcome=_outcome)
for _result in ("success", "failure"):
    KEY_RELOADS.labels(result=_result)


# The labelled children of REQUESTS and REQUEST_DURATION, by (method, route, status): looked up
# once, since `labels()` validates and locks on every call. Bounded like the labels themselves.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, duration: float) -> None:
    """Count one answered request and observe its duration (labels already bounded)."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(method, route, str(status)),
            REQUEST_DURATION.labels(method, route),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(duration)


def method_label(method: str) -> str:
    """The method as a label; anything unusual is `other`, so clients cannot mint labels."""
    return method if method in METHODS else "other"


@contextmanager
def count_outcome(counter: Counter) -> Iterator[None]:
    """Count one grant in `counter`: `success`, the OAuth error code, or the kind of failure."""
    try:
        yield
    except OAuthError as exc:
        counter.labels(outcome=exc.error).inc()
        raise
    except TooManyRequestsError:
        counter.labels(outcome=RATE_LIMITED).inc()
        raise
    except IdpError as exc:
        counter.labels(outcome=UNAVAILABLE if exc.status_code == 503 else ERROR).inc()
        raise
    except Exception as exc:
        # A database error reaches here raw; the session turns it into a 503 afterwards.
        counter.labels(outcome=UNAVAILABLE if is_unavailable(exc) else ERROR).inc()
        raise
    counter.labels(outcome=SUCCESS).inc()


@dataclass(frozen=True, slots=True)
class SigningKeyStatus:
    """What /metrics says about the keys: read from the serving process's key ring."""

    kid: str
    alg: str
    active_since: datetime
    published: int


class SigningKeyCollector(Collector):
    """The active key's id and age, computed at scrape time so the age is always current."""

    def __init__(self, status: SigningKeyStatus, now: datetime | None = None) -> None:
        self._status = status
        self._now = now

    def collect(self) -> Iterable[Metric]:
        status = self._status
        now = self._now or datetime.now(UTC)
        info = GaugeMetricFamily(
            "idp_signing_key_info",
            "The key that signs new tokens (value 1), by kid and algorithm.",
            labels=["kid", "alg"],
        )
        info.add_metric([status.kid, status.alg], 1)
        age = GaugeMetricFamily(
            "idp_signing_key_age_seconds",
            "Seconds since the active signing key started signing.",
            value=max(0.0, (now - status.active_since).total_seconds()),
        )
        published = GaugeMetricFamily(
            "idp_signing_keys_published",
            "Keys published in the JWKS (next, active and retired).",
            value=status.published,
        )
        return [info, age, published]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render(keys: SigningKeyStatus | None) -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric, and its content type."""
    extra = CollectorRegistry(auto_describe=False)
    if keys is not None:
        extra.register(SigningKeyCollector(keys))
    if multiprocess_dir():
        shared = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
        body = generate_latest(shared)
    else:
        body = generate_latest(REGISTRY)
    return body + generate_latest(extra), CONTENT_TYPE
