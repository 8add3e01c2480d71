"""``SyncTokenVerifier``: the same verification for code without an event loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import httpx

from idp_verifier.claims import Claims
from idp_verifier.core import VerifierCore, VerifierInfo
from idp_verifier.errors import JWKSUnavailableError
from idp_verifier.jwks import (
    MAX_DOCUMENT_SIZE,
    USER_AGENT,
    DocumentTooLargeError,
    HttpRequest,
    HttpResponse,
    RefreshReason,
)

logger = logging.getLogger("idp_verifier")


class SyncTokenVerifier(VerifierInfo):
    """Verifies idp access tokens from blocking code (Flask, Django, workers, scripts).

    Same checks, caches and fetch rules as ``TokenVerifier``; safe to share between threads.
    A fetch is made by one thread under a lock while the others that need it wait for it; the
    scheduled refetch of a key set already held runs in a background thread instead.
    Do not call it from a coroutine: a fetch would block the event loop.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_uri: str | None = None,
        leeway: float = 30,
        min_cache_ttl: float = 60,
        max_cache_ttl: float = 3600,
        unknown_kid_cooldown: float = 30,
        timeout: float = 5,
        verified_cache_size: int = 10_000,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        allow_http: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._core = VerifierCore(
            issuer,
            audience,
            jwks_uri=jwks_uri,
            leeway=leeway,
            min_cache_ttl=min_cache_ttl,
            max_cache_ttl=max_cache_ttl,
            unknown_kid_cooldown=unknown_kid_cooldown,
            verified_cache_size=verified_cache_size,
            clock=clock,
            allow_http=allow_http,
        )
        self._timeout = timeout
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._fetch_lock = threading.Lock()
        self._background_lock = threading.Lock()
        self._background: threading.Thread | None = None

    def verify(self, token: str) -> Claims:
        """Verify ``token`` and return its claims; raise a ``TokenError`` subclass otherwise."""
        core = self._core
        now = core.clock()
        if now >= core.keys.refresh_at:
            if core.keys.loaded:
                # A slow issuer must not stall requests: the cached keys serve meanwhile.
                self._refresh_in_background()
            else:
                self._refresh(RefreshReason.SCHEDULED)
                now = core.clock()
        claims = core.cached(token, now)
        if claims is not None:
            return claims
        compact = core.split(token)
        key = core.keys.keys.get(compact.header.kid)
        if key is None:
            # A held lock means a fetch is in flight: wait for it rather than fail early.
            if self._fetch_lock.locked() or core.keys.should_fetch(RefreshReason.UNKNOWN_KID, now):
                self._refresh(RefreshReason.UNKNOWN_KID)
                now = core.clock()
            key = core.keys.key(compact.header.kid)
        return core.finish(token, compact, key, now)

    def start(self, *, require_keys: bool = True) -> None:
        """Fetch the key set now; see ``TokenVerifier.start``."""
        self._refresh(RefreshReason.SCHEDULED)
        if require_keys and not self._core.keys.loaded:
            raise JWKSUnavailableError(f"could not fetch the JWKS of {self.issuer}")

    def wait_for_refresh(self, timeout: float | None = None) -> None:
        """Wait until the background key-set fetch, if any, has finished."""
        thread = self._background
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        """Wait for a background fetch (at most the request timeout), then close the HTTP
        client if this verifier created it."""
        self.wait_for_refresh(self._timeout)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _refresh_in_background(self) -> None:
        """Start the scheduled fetch in a daemon thread, unless one runs, and return at once."""
        with self._background_lock:
            if self._background is not None and self._background.is_alive():
                return
            if not self._core.keys.should_fetch(RefreshReason.SCHEDULED, self._core.clock()):
                return
            self._background = threading.Thread(
                target=self._refresh,
                args=(RefreshReason.SCHEDULED,),
                name="idp-verifier-jwks-refresh",
                daemon=True,
            )
            self._background.start()

    def _refresh(self, reason: RefreshReason) -> None:
        with self._fetch_lock:
            # Whoever held the lock before us may have done the fetch we came for.
            if not self._core.keys.should_fetch(reason, self._core.clock()):
                return
            flow = self._core.refresh(reason)
            try:
                request = next(flow)
                while True:
                    result: HttpResponse | Exception
                    try:
                        result = self._get(request)
                    except Exception as exc:
                        result = exc
                    request = flow.send(result)
            except StopIteration:
                pass
            except Exception:
                logger.exception("Unexpected error while refreshing the JWKS of %s", self.issuer)

    def _get(self, request: HttpRequest) -> HttpResponse:
        # httpx's timeout bounds each read; the deadline bounds the whole exchange.
        deadline = time.monotonic() + self._timeout
        with self._client.stream(
            "GET",
            request.url,
            headers=dict(request.headers),
            timeout=self._timeout,
            follow_redirects=False,
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_SIZE:
                    raise DocumentTooLargeError(f"more than {MAX_DOCUMENT_SIZE} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete answer within {self._timeout}s")
            return HttpResponse(response.status_code, response.headers, bytes(body))
