"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from idp.configuration.migrations import SchemaHead, SchemaState
from idp.dependencies.database import DatabaseDep
from idp.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """200 while the process runs."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "database unreachable or not migrated to head, or no signing key",
        }
    },
)
async def readyz(request: Request, response: Response, database: DatabaseDep) -> Readiness:
    """200 when the database answers at the schema's head revision (or a newer one, during a
    rolling upgrade) and a signing key is loaded, else 503."""
    probe = await database.probe()
    head: SchemaHead = request.app.state.schema_head
    schema_ok = probe.reachable and head.state(probe.revision) is not SchemaState.BEHIND
    key_ok = getattr(request.app.state, "keyring", None) is not None
    ready = schema_ok and key_ok
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(
        status="ready" if ready else "unavailable",
        database=probe.reachable,
        migrated=schema_ok,
        signing_key=key_ok,
    )
