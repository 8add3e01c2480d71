"""Remembering tokens already verified, so a repeated token costs a dict lookup, not RSA."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from typing import NamedTuple

from idp_verifier.claims import Claims


class _Entry(NamedTuple):
    claims: Claims
    expires_at: float
    kid: str


class VerifiedTokenCache:
    """A bounded LRU map from the exact token string to its verified claims.

    An entry is served only while the clock is before the token's ``exp`` (the leeway is not
    extended to cached entries), and is dropped as soon as the key that signed it leaves the
    key set. A lock keeps it consistent when a ``SyncTokenVerifier`` is shared by threads.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a verified-token cache needs room for at least one entry")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Claims | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry.expires_at:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry.claims

    def put(self, token: str, claims: Claims, expires_at: float, kid: str, now: float) -> None:
        if now >= expires_at:
            return
        with self._lock:
            self._entries[token] = _Entry(claims, expires_at, kid)
            self._entries.move_to_end(token)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def evict_kids(self, kids: Collection[str]) -> int:
        """Forget every token signed by one of ``kids``; return how many were forgotten."""
        if not kids:
            return 0
        with self._lock:
            doomed = [token for token, entry in self._entries.items() if entry.kid in kids]
            for token in doomed:
                del self._entries[token]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
