"""Queries on browser sessions, authorization codes and consents."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.models import AuthorizationCode, BrowserSession, Consent, RefreshFamily, User


async def add(session: AsyncSession, row: BrowserSession | AuthorizationCode) -> None:
    session.add(row)
    await session.flush()


async def live_session(
    session: AsyncSession, token_hash: str, *, now: datetime
) -> tuple[BrowserSession, User] | None:
    """The unended, unexpired session of this cookie and its active user, else None."""
    result = await session.execute(
        select(BrowserSession, User)
        .join(User, User.id == BrowserSession.user_id)
        .where(
            BrowserSession.token_hash == token_hash,
            BrowserSession.ended_at.is_(None),
            BrowserSession.expires_at > now,
            User.is_active.is_(True),
        )
    )
    row = result.first()
    return None if row is None else (row[0], row[1])


async def end_session(session: AsyncSession, session_id: uuid.UUID, *, now: datetime) -> None:
    """End the browser session and every refresh-token family started in it."""
    await session.execute(
        update(BrowserSession)
        .where(BrowserSession.id == session_id, BrowserSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.browser_session_id == session_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def consume_code(
    session: AsyncSession, code_hash: str, *, now: datetime
) -> AuthorizationCode | None:
    """Mark the code used if it is unused and unexpired; the code, else None."""
    result = await session.execute(
        update(AuthorizationCode)
        .where(
            AuthorizationCode.code_hash == code_hash,
            AuthorizationCode.consumed_at.is_(None),
            AuthorizationCode.expires_at > now,
        )
        .values(consumed_at=now)
        .returning(AuthorizationCode)
    )
    return result.scalar_one_or_none()


async def get_code(session: AsyncSession, code_hash: str) -> AuthorizationCode | None:
    return await session.get(AuthorizationCode, code_hash)


async def set_code_family(session: AsyncSession, code_hash: str, family_id: uuid.UUID) -> None:
    await session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == code_hash)
        .values(family_id=family_id)
    )


async def consented_scopes(
    session: AsyncSession, user_id: uuid.UUID, client_id: str
) -> set[str] | None:
    """The scopes the user let the client have; None when they never consented to it."""
    consent = await session.get(Consent, (user_id, client_id))
    return set(consent.scopes) if consent is not None else None


async def remember_consent(
    session: AsyncSession, user_id: uuid.UUID, client_id: str, scopes: list[str]
) -> None:
    consent = await session.get(Consent, (user_id, client_id))
    if consent is None:
        session.add(Consent(user_id=user_id, client_id=client_id, scopes=scopes))
    else:
        consent.scopes = sorted(set(consent.scopes) | set(scopes))
    await session.flush()
