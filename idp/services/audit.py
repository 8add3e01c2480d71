"""The audit log: every administrative change records who, what, which target, when, where.

Events are written in the change's own transaction, so a change and its event are committed
or rolled back together. Details describe the change and never carry secrets.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ValidationFailedError
from idp.models import AuditEvent
from idp.repository import audit as audit_repo
from idp.schemas.audit import AuditEventOut
from idp.services.permissions import Actor


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    return await audit_repo.add(
        session,
        AuditEvent(
            actor_id=actor.user_id,
            actor_username=actor.username,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details or {},
            client_address=actor.address,
        ),
    )


async def list_events(
    session: AsyncSession,
    *,
    limit: int = 50,
    offset: int = 0,
    action: str | None = None,
    actor_id: uuid.UUID | None = None,
    target_id: str | None = None,
) -> tuple[Sequence[AuditEvent], int]:
    if not 1 <= limit <= 500 or offset < 0:
        raise ValidationFailedError("limit must be 1..500 and offset at least 0")
    return await audit_repo.list_page(
        session,
        limit=limit,
        offset=offset,
        action=action,
        actor_id=actor_id,
        target_id=target_id,
    )


def to_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut.model_validate(event)
