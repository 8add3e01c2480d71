"""The audit log of administrative changes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from idp.configuration.constants import MAX_PAGE_OFFSET
from idp.dependencies.database import SessionDep
from idp.dependencies.permissions import ADMIN_RESPONSES, AuditRead, PermissionRoute
from idp.schemas.audit import AuditPage
from idp.schemas.users import NO_CONTROL_PATTERN
from idp.services import audit as audit_service

router = APIRouter(
    prefix="/admin",
    tags=["admin: audit"],
    route_class=PermissionRoute,
    responses=ADMIN_RESPONSES,
)


@router.get("/audit", response_model=AuditPage)
async def list_audit_events(
    _actor: AuditRead,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
    action: Annotated[
        str | None, Query(max_length=64, pattern=NO_CONTROL_PATTERN, examples=["user.create"])
    ] = None,
    actor_id: Annotated[uuid.UUID | None, Query(description="who made the change")] = None,
    target_id: Annotated[
        str | None,
        Query(max_length=150, pattern=NO_CONTROL_PATTERN, description="a user id or role name"),
    ] = None,
) -> AuditPage:
    """Administrative changes, newest first: who, what, which target, when, from where."""
    events, total = await audit_service.list_events(
        session, limit=limit, offset=offset, action=action, actor_id=actor_id, target_id=target_id
    )
    return AuditPage(
        items=[audit_service.to_out(event) for event in events],
        total=total,
        limit=limit,
        offset=offset,
    )
