"""Queries on the audit log: append and read, newest first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.models import AuditEvent


async def add(session: AsyncSession, event: AuditEvent) -> AuditEvent:
    session.add(event)
    await session.flush()
    return event


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    action: str | None = None,
    actor_id: uuid.UUID | None = None,
    target_id: str | None = None,
) -> tuple[Sequence[AuditEvent], int]:
    """One page of events, newest first (by id: the order they were written), and the total."""
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor_id:
        query = query.where(AuditEvent.actor_id == actor_id)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    page = await session.execute(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
    return page.scalars().all(), total or 0
