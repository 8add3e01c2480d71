"""Prometheus metrics of this process (or of all workers, in multiprocess mode)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from idp.configuration import metrics
from idp.configuration.database import Database
from idp.services.keyring import KeyRing
from idp.services.keys import KeyState

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus"}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Request counts and latency by route, grant outcomes, tokens issued, lockouts, keys
    (active kid and age, next key age, retired keys' removal), reloads, pool use, build."""
    keyring: KeyRing | None = getattr(request.app.state, "keyring", None)
    status = None
    if keyring is not None:
        keyset = keyring.current
        next_key = [r.created_at for r in keyset.records if r.state is KeyState.NEXT]
        removable = [
            r.removable_after
            for r in keyset.records
            if r.state is KeyState.RETIRED and r.removable_after is not None
        ]
        status = metrics.SigningKeyStatus(
            kid=keyset.active_kid,
            alg=keyset.active_alg,
            active_since=keyset.active_activated_at or keyset.active_created_at,
            published=len(keyset.records),
            next_since=min(next_key, default=None),
            retired_removable_after=min(removable, default=None),
        )
    database: Database = request.app.state.database
    counts = database.pool_status()
    pool = metrics.PoolStatus(*counts) if counts is not None else None
    # Off the event loop: in multiprocess mode rendering reads every worker's files.
    body, content_type = await asyncio.to_thread(metrics.render, status, pool)
    return Response(body, media_type=content_type)
