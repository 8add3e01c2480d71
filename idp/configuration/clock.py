"""The service's notion of "now", injected so tests can move time without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """Wall-clock time in UTC. The app holds one (`app.state.clock`); tests swap in their own."""

    def now(self) -> datetime:
        return datetime.now(UTC)
