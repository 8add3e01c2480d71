"""Browser sessions (single sign-on across clients) and the consent users give.

The cookie holds 256 random bits; only their SHA-256 is stored. A session lasts
IDP_BROWSER_SESSION_TTL from its login; logout ends it and every refresh-token family
started in it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.settings import Settings
from idp.models import BrowserSession, User
from idp.repository import browser as browser_repo

logger = logging.getLogger(__name__)

MAX_COOKIE_LENGTH = 100


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def start(
    session: AsyncSession, settings: Settings, user: User, *, now: datetime
) -> tuple[str, BrowserSession]:
    """A new session for `user`, who just proved who they are; the cookie value and the row."""
    token = secrets.token_urlsafe(32)
    row = BrowserSession(
        token_hash=_hash(token),
        user_id=user.id,
        auth_time=now,
        amr=["pwd"],
        created_at=now,
        expires_at=now + timedelta(seconds=settings.browser_session_ttl),
    )
    await browser_repo.add(session, row)
    logger.info("browser session started", extra={"user_id": str(user.id)})
    return token, row


async def current(
    session: AsyncSession, cookie: str | None, *, now: datetime
) -> tuple[BrowserSession, User] | None:
    """The live session of this cookie and its active user, else None."""
    if not cookie or len(cookie) > MAX_COOKIE_LENGTH:
        return None
    return await browser_repo.live_session(session, _hash(cookie), now=now)


async def end(session: AsyncSession, session_id: uuid.UUID, *, now: datetime) -> None:
    await browser_repo.end_session(session, session_id, now=now)
    logger.info("browser session ended", extra={"sid": str(session_id)})


async def needs_consent(
    session: AsyncSession, user: User, client_id: str, scopes: list[str], *, first_party: bool
) -> bool:
    """Third-party clients need the user's consent for scopes not yet granted to them."""
    if first_party:
        return False
    granted = await browser_repo.consented_scopes(session, user.id, client_id)
    return granted is None or not set(scopes) <= granted


async def remember_consent(
    session: AsyncSession, user: User, client_id: str, scopes: list[str]
) -> None:
    await browser_repo.remember_consent(session, user.id, client_id, scopes)
