"""Prometheus metrics of this process (or of all workers, in multiprocess mode)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from idp.configuration import metrics
from idp.services.keyring import KeyRing

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus"}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Request counts and latency by route, grant outcomes, lockouts, key id and age, reloads."""
    keyring: KeyRing | None = getattr(request.app.state, "keyring", None)
    status = None
    if keyring is not None:
        keyset = keyring.current
        status = metrics.SigningKeyStatus(
            kid=keyset.active_kid,
            alg=keyset.active_alg,
            active_since=keyset.active_activated_at or keyset.active_created_at,
            published=len(keyset.records),
        )
    # Off the event loop: in multiprocess mode rendering reads every worker's files.
    body, content_type = await asyncio.to_thread(metrics.render, status)
    return Response(body, media_type=content_type)
