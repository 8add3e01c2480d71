"""Queries on refresh tokens and their families.

Consumption is one conditional UPDATE: of N concurrent refreshes with one token, the database
lets exactly one change `consumed_at` from NULL; the others match no row. On PostgreSQL the
losers wait for the winner's row lock and then re-check the condition on the committed row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.models import RefreshFamily, RefreshToken, User


async def add_family(session: AsyncSession, family: RefreshFamily) -> RefreshFamily:
    session.add(family)
    await session.flush()
    return family


async def add_token(session: AsyncSession, token: RefreshToken) -> RefreshToken:
    session.add(token)
    await session.flush()
    return token


async def consume(
    session: AsyncSession, token_hash: str, *, now: datetime, client_id: str | None = None
) -> uuid.UUID | None:
    """Mark the token consumed if it is unconsumed and its family is live (and, when
    `client_id` is given, issued to that client); its family id, else None."""
    live_families = select(RefreshFamily.id).where(
        RefreshFamily.revoked_at.is_(None), RefreshFamily.idle_expires_at > now
    )
    if client_id is not None:
        live_families = live_families.where(RefreshFamily.client_id == client_id)
    result = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.consumed_at.is_(None),
            RefreshToken.family_id.in_(live_families),
        )
        .values(consumed_at=now)
        .returning(RefreshToken.family_id)
    )
    return result.scalar_one_or_none()


async def extend_family(
    session: AsyncSession, family_id: uuid.UUID, *, idle_expires_at: datetime
) -> RefreshFamily | None:
    """Move the family's idle expiry (capped by its absolute expiry) unless it was revoked
    meanwhile; the family, else None. Waits for a concurrent revocation's row lock, so a
    revocation that commits first is always seen."""
    capped = case(
        (RefreshFamily.expires_at < idle_expires_at, RefreshFamily.expires_at),
        else_=idle_expires_at,
    )
    result = await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
        .values(idle_expires_at=capped)
        .returning(RefreshFamily),
        # No family of this session is loaded yet: nothing in the identity map to refresh.
        execution_options={"synchronize_session": False},
    )
    return result.scalar_one_or_none()


async def find(
    session: AsyncSession, token_hash: str
) -> tuple[RefreshToken, RefreshFamily, User] | None:
    """The token with its family and user (one statement through the unique hash index)."""
    result = await session.execute(
        select(RefreshToken, RefreshFamily, User)
        .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
        .join(User, User.id == RefreshFamily.user_id)
        .where(RefreshToken.token_hash == token_hash)
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def get_family(session: AsyncSession, family_id: uuid.UUID) -> RefreshFamily | None:
    return await session.get(RefreshFamily, family_id)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, *, now: datetime) -> bool:
    """End one family; False when it was already revoked or does not exist."""
    result = await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_user_families(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    now: datetime,
    keep: uuid.UUID | None = None,
) -> int:
    """End every family of the user except `keep`; how many were ended."""
    query = update(RefreshFamily).where(
        RefreshFamily.user_id == user_id, RefreshFamily.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(RefreshFamily.id != keep)
    result = await session.execute(query.values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def ended_family_ids(
    session: AsyncSession, *, before: datetime, limit: int
) -> Sequence[uuid.UUID]:
    """Families revoked or expired before `before` (both conditions are indexed)."""
    result = await session.execute(
        select(RefreshFamily.id)
        .where((RefreshFamily.idle_expires_at < before) | (RefreshFamily.revoked_at < before))
        .limit(limit)
    )
    return result.scalars().all()


async def delete_families(
    session: AsyncSession, family_ids: Sequence[uuid.UUID]
) -> tuple[int, int]:
    """Delete the families and their tokens; (families, tokens) deleted."""
    if not family_ids:
        return 0, 0
    tokens = await session.execute(
        delete(RefreshToken).where(RefreshToken.family_id.in_(family_ids))
    )
    families = await session.execute(delete(RefreshFamily).where(RefreshFamily.id.in_(family_ids)))
    return int(families.rowcount), int(tokens.rowcount)  # type: ignore[attr-defined]
