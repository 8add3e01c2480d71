"""Prometheus metrics: the metric objects every layer may count on, and rendering for /metrics.

A leaf module, so services import the counters without depending on the HTTP layer. Labels are
bounded on purpose: routes are templates (`/admin/users/{user_id}`), unknown paths share one
label, unknown methods are `other`, outcomes come from a fixed list.

With `idp serve --workers N` each worker is a process with its own counters. When
`PROMETHEUS_MULTIPROC_DIR` names a directory (`idp serve` sets one up for N > 1), the counters
live in files there and any worker's `/metrics` reports the sum over all workers.
"""

from __future__ import annotations

import importlib.metadata
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
# Every outcome a grant can have: each is exported as 0 from the start, so an alert on
# `rate(idp_logins_total{outcome="unavailable"}[5m])` fires on the very first failure.
OAUTH_ERRORS: Final = (
    "invalid_request",
    "invalid_grant",
    "invalid_scope",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_target",
)
LOGIN_OUTCOMES: Final = (SUCCESS, *OAUTH_ERRORS, RATE_LIMITED, UNAVAILABLE, ERROR)
REFRESH_OUTCOMES: Final = (SUCCESS, *OAUTH_ERRORS, RATE_LIMITED, UNAVAILABLE, ERROR)
# The grants of POST /token. The `client_id` label is a registered client's id (the registry
# bounds the series); the built-in client's is exported from the start.
GRANTS: Final = ("password", "refresh_token", "client_credentials", "authorization_code")
CLIENT_AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "private_key_jwt")

LOGINS = Counter(
    "idp_logins",
    "Password-grant logins by outcome: success, an RFC 6749 error code (invalid_grant, "
    "invalid_request, ...), rate_limited, unavailable, error.",
    ["outcome"],
)
REFRESHES = Counter(
    "idp_refreshes",
    "Refresh-token grants by outcome: success, an RFC 6749 error code (invalid_grant: expired, "
    "revoked or reused), unavailable, error.",
    ["outcome"],
)
CLIENT_CREDENTIALS = Counter(
    "idp_client_credentials_grants",
    "client_credentials grants by outcome: success, an RFC 6749 error code, rate_limited, "
    "unavailable, error.",
    ["outcome"],
)
CODE_EXCHANGES = Counter(
    "idp_authorization_code_grants",
    "authorization_code grants by outcome: success, an RFC 6749 error code, rate_limited, "
    "unavailable, error.",
    ["outcome"],
)
TOKENS_ISSUED = Counter(
    "idp_tokens_issued",
    "Access tokens issued, by grant and registered client.",
    ["grant", "client_id"],
)
CLIENT_AUTH_FAILURES = Counter(
    "idp_client_authentication_failures",
    "Failed client authentications at /token, /revoke and /introspect, by method.",
    ["method"],
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
for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(outcome=_outcome)
for _outcome in REFRESH_OUTCOMES:
    REFRESHES.labels(outcome=_outcome)
for _outcome in REFRESH_OUTCOMES:
    CLIENT_CREDENTIALS.labels(outcome=_outcome)
    CODE_EXCHANGES.labels(outcome=_outcome)
for _grant in ("password", "refresh_token"):
    TOKENS_ISSUED.labels(grant=_grant, client_id="idp")
for _method in CLIENT_AUTH_METHODS:
    CLIENT_AUTH_FAILURES.labels(method=_method)
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


def count_issued(grant: str, client_id: str) -> None:
    """Count one access token issued by `grant` (one of GRANTS) to a registered client."""
    TOKENS_ISSUED.labels(grant=grant, client_id=client_id).inc()


def build_version() -> str:
    """The installed idp distribution's version."""
    try:
        return importlib.metadata.version("idp")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare tree
        return "unknown"


@dataclass(frozen=True, slots=True)
class SigningKeyStatus:
    """What /metrics says about the keys: read from the serving process's key ring."""

    kid: str
    alg: str
    active_since: datetime
    published: int
    next_since: datetime | None = None  # when the `next` key was published
    retired_removable_after: datetime | None = None  # the earliest among retired keys


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """This process's database connection pool, read at scrape time."""

    size: int
    checked_out: int
    overflow: int


class ScrapeTimeCollector(Collector):
    """Build info, key ages and pool use, computed at scrape time so they are always current.

    These describe the process that answers the scrape (per worker with `--workers N`).
    """

    def __init__(
        self,
        keys: SigningKeyStatus | None,
        pool: PoolStatus | None = None,
        now: datetime | None = None,
    ) -> None:
        self._keys = keys
        self._pool = pool
        self._now = now

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            "idp_build_info", "The running idp (value 1), by version.", labels=["version"]
        )
        build.add_metric([build_version()], 1)
        yield build
        if self._pool is not None:
            yield from self._pool_metrics(self._pool)
        if self._keys is not None:
            yield from self._key_metrics(self._keys, self._now or datetime.now(UTC))

    @staticmethod
    def _pool_metrics(pool: PoolStatus) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "idp_db_pool_size", "Connections the pool keeps (IDP_DB_POOL_SIZE).", value=pool.size
        )
        yield GaugeMetricFamily(
            "idp_db_pool_checked_out",
            "Connections in use by requests now.",
            value=pool.checked_out,
        )
        yield GaugeMetricFamily(
            "idp_db_pool_overflow",
            "Connections open beyond the pool size now (at most IDP_DB_MAX_OVERFLOW).",
            value=pool.overflow,
        )

    @staticmethod
    def _key_metrics(status: SigningKeyStatus, now: datetime) -> Iterable[Metric]:
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
        yield from (info, age, published)
        if status.next_since is not None:
            yield GaugeMetricFamily(
                "idp_signing_key_next_age_seconds",
                "Seconds since the next key was published; `idp keys rotate` promotes it once "
                "this reaches IDP_JWKS_MAX_AGE.",
                value=max(0.0, (now - status.next_since).total_seconds()),
            )
        if status.retired_removable_after is not None:
            yield GaugeMetricFamily(
                "idp_signing_key_retired_removable_in_seconds",
                "Seconds until the oldest retired key may be pruned; negative: overdue for "
                "`idp keys prune`. Absent without retired keys.",
                value=(status.retired_removable_after - now).total_seconds(),
            )


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render(keys: SigningKeyStatus | None, pool: PoolStatus | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric, and its content type."""
    extra = CollectorRegistry(auto_describe=False)
    extra.register(ScrapeTimeCollector(keys, pool))
    if multiprocess_dir():
        shared = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
        body = generate_latest(shared)
    else:
        body = generate_latest(REGISTRY)
    return body + generate_latest(extra), CONTENT_TYPE
