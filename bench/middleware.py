"""What the per-request middleware costs: the JWKS and a trivial endpoint, with and without it.

    .venv/bin/python bench/middleware.py [requests-per-round]

Calls the ASGI application directly (no sockets, no HTTP client), so the numbers are the
server's own work per request. The access log line is switched off: its cost is the log
handler's (formatting, writing), not the middleware's. The variants run interleaved, round
after round, and the script prints the ratios measured side by side; it is not a test and
asserts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from idp.configuration.settings import Settings
from idp.controllers.middleware import BodySizeLimitMiddleware
from idp.main import create_app
from idp.observability.middleware import RequestContextMiddleware
from idp.services.keyring import KeyRing
from idp.services.keys import KeyStore

ROUNDS = 7


def build(keys: Path, *, middleware: bool) -> ASGIApp:
    settings = Settings(keys_dir=keys, database_url=f"sqlite+aiosqlite:///{keys}/bench.db")
    store = KeyStore(keys, None, jwks_max_age=60, retire_grace=60)
    app = create_app(settings, keyring=KeyRing(store))
    if not middleware:
        ours = {RequestContextMiddleware, BodySizeLimitMiddleware}
        app.user_middleware = [m for m in app.user_middleware if m.cls not in ours]
    return app


async def request(app: ASGIApp, path: str) -> int:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 40000),
        "server": ("bench", 80),
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def per_request(app: ASGIApp, path: str, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await request(app, path)
    return (time.perf_counter() - started) / count


async def main(count: int) -> None:
    logging.getLogger("idp.access").disabled = True
    with tempfile.TemporaryDirectory() as directory:
        keys = Path(directory)
        KeyStore(keys, None, jwks_max_age=60, retire_grace=60).init()
        apps = {"with": build(keys, middleware=True), "without": build(keys, middleware=False)}
        paths = {"healthz": "/healthz", "jwks": "/.well-known/jwks.json"}
        for app in apps.values():
            for path in paths.values():
                assert await request(app, path) == 200
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(ROUNDS):
            for variant, app in apps.items():
                for name, path in paths.items():
                    results.setdefault((variant, name), []).append(
                        await per_request(app, path, count)
                    )
    median = {key: statistics.median(values) for key, values in results.items()}
    print(f"{count} requests x {ROUNDS} rounds, median microseconds per request")
    for (variant, name), seconds in sorted(median.items()):
        print(f"  {name:8} {variant:8} {seconds * 1e6:8.1f} us")
    for name in paths:
        ratio = median[("with", name)] / median[("without", name)]
        added = (median[("with", name)] - median[("without", name)]) * 1e6
        print(f"  {name:8} with/without middleware: {ratio:.2f}x (+{added:.1f} us)")
    for variant in apps:
        ratio = median[(variant, "jwks")] / median[(variant, "healthz")]
        print(f"  jwks/healthz {variant} middleware: {ratio:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
