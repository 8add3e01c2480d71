"""Pure ASGI middleware around every request: request id, access log, metrics.

A plain ASGI callable rather than `BaseHTTPMiddleware`, which would add a task and a stream
copy to every request; this costs a few dictionary look-ups and one log call.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.configuration import metrics
from idp.observability.logging import request_id_var

access_logger = logging.getLogger("idp.access")

REQUEST_ID_HEADER: Final = b"x-request-id"
# An incoming id is kept only if it cannot break a log line or a header: short, plain characters.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's path template with every include prefix, or one shared label.

    FastAPI resolves included routers lazily: `scope["route"]` holds the route as its own
    router declared it (without the prefixes it was included under), while the effective route
    context holds the full template. Older FastAPI versions put the full route in `route`.
    """
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    template = (
        getattr(context, "path_format", None)
        or getattr(scope.get("route"), "path", None)
        or _plain_route_path(scope)
    )
    return template if isinstance(template, str) and template else metrics.UNMATCHED_ROUTE


def _plain_route_path(scope: Scope) -> str | None:
    """Plain Starlette routes (the docs pages) leave only their endpoint in the scope: the path
    of the app's route with that endpoint."""
    endpoint = scope.get("endpoint")
    router = getattr(scope.get("app"), "router", None)
    if endpoint is None or router is None:
        return None
    return next((r.path for r in router.routes if getattr(r, "endpoint", None) is endpoint), None)


class RequestContextMiddleware:
    """Give each request an id (kept from `X-Request-ID` when sane), echo it in the response,
    count and time the request by route template, and write one access log line.

    The log line names the method, route template, status, duration and client address; never
    headers, bodies or query strings, which may carry passwords or tokens.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        reset_token = request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the client sees if the app raises before responding

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        started = time.perf_counter()
        metrics.REQUESTS_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            metrics.REQUESTS_IN_PROGRESS.dec()
            route = route_template(scope)
            method = metrics.method_label(scope["method"])
            metrics.observe_request(method, route, status, duration)
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_logger.info(
                    "%s %s %d %.1fms %s",
                    method,
                    route,
                    status,
                    duration * 1000,
                    client[0] if client else "-",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
            request_id_var.reset(reset_token)
