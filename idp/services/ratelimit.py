"""A token-bucket rate limiter per client address, in this process's memory.

Each process (uvicorn worker, replica) keeps its own buckets: with N of them behind a load
balancer an address gets up to N times the limit. It guards the CPU against bcrypt floods
cheaply; the lockout counters in the database are what every replica shares.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from idp.configuration.exceptions import TooManyRequestsError

TOO_MANY_LOGINS: Final = "too many login attempts from this address; retry later"


class RateLimiter:
    """`per_minute` requests per key and minute, in bursts of up to `per_minute`.

    Memory is bounded: past `max_keys` keys the least recently seen are dropped (they start
    again with a full bucket). No awaits inside, so one event loop needs no lock.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60
        self.max_keys = max_keys
        self.clock = clock
        # key -> (tokens, when they were counted); insertion order is recency of use.
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def spend(self, key: str, message: str) -> None:
        """`hit`, refusing with `TooManyRequestsError` (429, `Retry-After`) past the limit."""
        retry_after = self.hit(key)
        if retry_after is not None:
            raise TooManyRequestsError(retry_after, message)

    def exhausted(self, key: str) -> int | None:
        """Like `hit` without taking a token: for limits that only failures spend."""
        if not self.enabled or key not in self._buckets:
            return None
        tokens, then = self._buckets[key]
        tokens = min(self.capacity, tokens + (self.clock() - then) * self.refill_per_second)
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self.refill_per_second))

    def hit(self, key: str) -> int | None:
        """Take one token for `key`: None when allowed, else the seconds until one is back."""
        if not self.enabled:
            return None
        now = self.clock()
        tokens, then = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.refill_per_second)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        if allowed:
            return None
        return max(1, math.ceil((1 - tokens) / self.refill_per_second))
