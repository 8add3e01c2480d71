"""The cached key set: when to fetch it, how to discover and read it, what a failure leaves.

The fetching logic is written once, without I/O, as a generator that yields the HTTP requests
it needs and receives their responses (or the exception the request raised). The async and the
sync verifier each drive it with their own httpx client, so both follow exactly the same rules.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from idp_verifier.errors import JWKSUnavailableError, UnknownKeyError, shorten
from idp_verifier.keys import VerificationKey, parse_jwks

logger = logging.getLogger("idp_verifier")

#: A key set or metadata document larger than this is refused (a JWKS is a few kB).
MAX_DOCUMENT_SIZE = 1024 * 1024

_WEB_SCHEMES = ("https", "http")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: plain http there never leaves the machine.
    (Not ``*.localhost``: a resolver is not bound to keep those on the machine.)"""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_transport(url: str, *, allow_http: bool) -> str | None:
    """Why the verifier may not fetch keys from ``url``, or ``None`` when it may.

    https always; plain http only to a loopback host, or anywhere with ``allow_http`` (a
    private network the operator trusts): a key set read over the open network can be
    replaced in transit, and then any token verifies.
    """
    parts = urlsplit(url)
    if parts.scheme not in _WEB_SCHEMES or not parts.hostname:
        return f"{shorten(url, 200)} is not an http(s) URL with a host"
    if parts.scheme == "http" and not (allow_http or is_loopback(parts.hostname)):
        return (
            f"{shorten(url, 200)} is plain http to a host that is not loopback; use https "
            "(or pass allow_http=True for a private network you trust)"
        )
    return None


#: Cache lifetime when the JWKS response names none, before the min/max bounds apply.
DEFAULT_CACHE_TTL = 300.0


USER_AGENT = "idp-verifier"


class DocumentTooLargeError(Exception):
    """The issuer sent more than ``MAX_DOCUMENT_SIZE`` bytes for a metadata or key document."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A GET the key store wants made."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back; ``headers`` must look names up case-insensitively (``httpx.Headers``)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


RefreshFlow = Generator[HttpRequest, HttpResponse | Exception, frozenset[str]]


class RefreshReason(Enum):
    #: The cached key set is older than its lifetime (or there is none yet).
    SCHEDULED = "scheduled"
    #: A token names a kid the cached key set lacks.
    UNKNOWN_KID = "unknown kid"


class _RefreshError(Exception):
    """A fetch that produced no new key set; the cached one stays."""


class KeyStore:
    """The issuer's public keys and the bookkeeping of when they may be fetched again.

    - ``refresh_at``: when the cached set goes stale (its ``max-age``, clamped to the bounds);
      after a failed fetch, one cooldown later.
    - an unknown ``kid`` may cause a fetch once per cooldown, and only once a key set has
      been fetched (before that, the scheduled attempts already run once per cooldown).
    - a failed fetch keeps the keys already held, logs a warning, and starts a cooldown for
      both kinds of fetch, so an issuer that is down costs one attempt per cooldown.
    """

    def __init__(
        self,
        *,
        issuer: str,
        jwks_uri: str | None,
        min_cache_ttl: float,
        max_cache_ttl: float,
        unknown_kid_cooldown: float,
        clock: Callable[[], float],
        allow_http: bool = False,
    ) -> None:
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.allow_http = allow_http
        self.keys: dict[str, VerificationKey] = {}
        self.loaded = False
        self.refresh_at = -math.inf
        self._unknown_kid_fetch_at = -math.inf
        self._etag: str | None = None
        self._min_ttl = min_cache_ttl
        self._max_ttl = max_cache_ttl
        self._cooldown = unknown_kid_cooldown
        self._clock = clock

    def should_fetch(self, reason: RefreshReason, now: float) -> bool:
        if reason is RefreshReason.SCHEDULED:
            return now >= self.refresh_at
        return self.loaded and now - self._unknown_kid_fetch_at >= self._cooldown

    def key(self, kid: str) -> VerificationKey:
        """The key named ``kid``; raise if there is none (or no key set at all)."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        if not self.loaded:
            raise JWKSUnavailableError("no key set has been fetched from the issuer yet")
        raise UnknownKeyError(f"no published key has kid {shorten(kid)}")

    def refresh(self, reason: RefreshReason) -> RefreshFlow:
        """Fetch the key set (discovering its URL first if needed).

        Returns the kids whose key was removed or replaced, so tokens they signed can be
        forgotten. Never raises: a failure is logged and leaves the cached keys in place.
        """
        if reason is RefreshReason.UNKNOWN_KID:
            self._unknown_kid_fetch_at = self._clock()
        try:
            if self.jwks_uri is None:
                self.jwks_uri = yield from self._discover()
            headers = {"Accept": "application/jwk-set+json, application/json"}
            if self._etag is not None and self.loaded:
                headers["If-None-Match"] = self._etag
            result = yield HttpRequest(self.jwks_uri, headers)
            return self._apply(result)
        except _RefreshError as exc:
            now = self._clock()
            # Retry one cooldown from now, unless the cached set is fresh for longer than that.
            self.refresh_at = max(self.refresh_at, now + self._cooldown)
            self._unknown_kid_fetch_at = now
            if self.loaded:
                logger.warning(
                    "Refreshing the JWKS of %s failed: %s; keeping the %d cached keys",
                    self.issuer,
                    exc,
                    len(self.keys),
                )
            else:
                logger.warning(
                    "Fetching the JWKS of %s failed: %s; no keys yet, next try in %gs",
                    self.issuer,
                    exc,
                    self._cooldown,
                )
            return frozenset()

    def _discover(self) -> Generator[HttpRequest, HttpResponse | Exception, str]:
        """Read ``jwks_uri`` from the issuer's metadata (RFC 8414, then OpenID Connect)."""
        missing = []
        for url in metadata_urls(self.issuer):
            result = yield HttpRequest(url, {"Accept": "application/json"})
            if isinstance(result, Exception):
                raise _RefreshError(f"metadata request to {url} failed: {_describe(result)}")
            if result.status != 200:
                missing.append(f"{url}: HTTP {result.status}")
                continue
            document = _json_object(result.body, f"metadata at {url}")
            if document.get("issuer") != self.issuer:
                # RFC 8414 §3.3: a document naming another issuer must not be used.
                raise _RefreshError(
                    f"metadata at {url} names issuer {shorten(str(document.get('issuer')))}"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise _RefreshError(f"metadata at {url} has no usable jwks_uri")
            refused = insecure_transport(jwks_uri, allow_http=self.allow_http)
            if refused is not None:
                raise _RefreshError(f"metadata at {url}: jwks_uri {refused}")
            logger.info("Discovered the JWKS of %s at %s", self.issuer, jwks_uri)
            return jwks_uri
        raise _RefreshError("no metadata document: " + "; ".join(missing))

    def _apply(self, result: HttpResponse | Exception) -> frozenset[str]:
        if isinstance(result, Exception):
            raise _RefreshError(f"request to {self.jwks_uri} failed: {_describe(result)}")
        now = self._clock()
        if result.status == 304 and self.loaded:
            self.refresh_at = now + self._ttl(result.headers)
            return frozenset()
        if result.status != 200:
            raise _RefreshError(f"{self.jwks_uri} answered HTTP {result.status}")
        document = _json_object(result.body, f"the JWKS at {self.jwks_uri}")
        try:
            keys, problems = parse_jwks(document)
        except ValueError as exc:
            raise _RefreshError(f"{self.jwks_uri}: {exc}") from None
        for problem in problems:
            logger.warning("Ignoring a JWKS entry of %s: %s", self.issuer, problem)
        if problems and not keys:
            raise _RefreshError(f"{self.jwks_uri} has no usable key")
        gone = frozenset(kid for kid, key in self.keys.items() if keys.get(kid) != key)
        if gone:
            logger.info("Keys %s left the JWKS of %s", sorted(gone), self.issuer)
        self.keys = keys
        self.loaded = True
        self._etag = result.headers.get("etag")
        self.refresh_at = now + self._ttl(result.headers)
        return gone

    def _ttl(self, headers: Mapping[str, str]) -> float:
        max_age = cache_max_age(headers.get("cache-control"))
        ttl = DEFAULT_CACHE_TTL if max_age is None else max_age
        return min(max(ttl, self._min_ttl), self._max_ttl)


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may live, in the order they are tried."""
    base = issuer.rstrip("/")
    urls = [f"{base}/.well-known/oauth-authorization-server"]
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    if path:
        # RFC 8414 §3.1 inserts the well-known segment before an issuer's path.
        urls.append(f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}")
    urls.append(f"{base}/.well-known/openid-configuration")
    return urls


def cache_max_age(cache_control: str | None) -> float | None:
    """``max-age`` of a Cache-Control value; 0 for ``no-cache``/``no-store``; else ``None``."""
    if not cache_control:
        return None
    max_age = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                max_age = float(value)
    return max_age


def _json_object(body: bytes, what: str) -> dict[str, object]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _RefreshError(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise _RefreshError(f"{what} is not a JSON object")
    return document


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
