"""``TokenVerifier``: verify idp access tokens from asyncio code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    RefreshFlow,
    RefreshReason,
)

logger = logging.getLogger("idp_verifier")


class TokenVerifier(VerifierInfo):
    """Verifies idp access tokens locally against the issuer's published keys.

    One instance per process (or per issuer/audience pair), shared by every request: it holds
    the key set and the verified-token cache. Use it as an async context manager, or call
    ``start()`` and ``aclose()`` yourself; without ``start()`` the keys are fetched on first
    use. Once keys are held, the scheduled refetch runs in the background: ``verify()`` keeps
    using the cached keys until it completes (a token with an unknown kid waits for it).
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
        http_client: httpx.AsyncClient | None = None,
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
        self._client = http_client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._inflight: asyncio.Task[None] | None = None

    async def verify(self, token: str) -> Claims:
        """Verify ``token`` and return its claims; raise a ``TokenError`` subclass otherwise."""
        core = self._core
        now = core.clock()
        if now >= core.keys.refresh_at:
            if core.keys.loaded:
                # A slow issuer must not stall requests: the cached keys serve meanwhile.
                self._refresh_in_background()
            else:
                await self._refresh(RefreshReason.SCHEDULED)
                now = core.clock()
        claims = core.cached(token, now)
        if claims is not None:
            return claims
        compact = core.split(token)
        key = core.keys.keys.get(compact.header.kid)
        if key is None:
            if self._inflight is not None or core.keys.should_fetch(RefreshReason.UNKNOWN_KID, now):
                await self._refresh(RefreshReason.UNKNOWN_KID)
                now = core.clock()
            key = core.keys.key(compact.header.kid)
        return core.finish(token, compact, key, now)

    async def start(self, *, require_keys: bool = True) -> None:
        """Fetch the key set now rather than on the first token.

        Raises ``JWKSUnavailableError`` when no key could be fetched, unless ``require_keys``
        is false (the verifier then keeps trying, at most once per cooldown, as tokens come).
        """
        await self._refresh(RefreshReason.SCHEDULED)
        if require_keys and not self._core.keys.loaded:
            raise JWKSUnavailableError(f"could not fetch the JWKS of {self.issuer}")

    async def wait_for_refresh(self) -> None:
        """Wait until the key-set fetch in flight, if any, has finished."""
        task = self._inflight
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        """Stop a fetch in flight and close the HTTP client if this verifier created it."""
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _refresh(self, reason: RefreshReason) -> None:
        """Join the fetch in flight, or start one if ``reason`` allows it now.

        Single flight: every caller awaits the same task, so a burst of tokens with an
        unknown kid costs one request. ``shield`` keeps a cancelled caller from cancelling
        the fetch the others are waiting for.
        """
        task = self._inflight
        if task is None:
            if not self._core.keys.should_fetch(reason, self._core.clock()):
                return
            task = asyncio.create_task(self._run(self._core.refresh(reason)))
            self._inflight = task
        await asyncio.shield(task)

    def _refresh_in_background(self) -> None:
        """Start the scheduled fetch, unless one is in flight, and return at once."""
        if self._inflight is None and self._core.keys.should_fetch(
            RefreshReason.SCHEDULED, self._core.clock()
        ):
            self._inflight = asyncio.create_task(
                self._run(self._core.refresh(RefreshReason.SCHEDULED))
            )

    async def _run(self, flow: RefreshFlow) -> None:
        try:
            request = next(flow)
            while True:
                result: HttpResponse | Exception
                try:
                    result = await self._get(request)
                except Exception as exc:
                    result = exc
                request = flow.send(result)
        except StopIteration:
            pass
        except Exception:
            logger.exception("Unexpected error while refreshing the JWKS of %s", self.issuer)
        finally:
            self._inflight = None

    async def _get(self, request: HttpRequest) -> HttpResponse:
        # httpx's timeout bounds each read; asyncio.timeout bounds the whole exchange.
        async with (
            asyncio.timeout(self._timeout),
            self._client.stream(
                "GET",
                request.url,
                headers=dict(request.headers),
                timeout=self._timeout,
                follow_redirects=False,
            ) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_SIZE:
                    raise DocumentTooLargeError(f"more than {MAX_DOCUMENT_SIZE} bytes")
            return HttpResponse(response.status_code, response.headers, bytes(body))
