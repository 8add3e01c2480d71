"""Refresh tokens: one family per login, rotation at every use, reuse ends the family.

Reuse detection is strict (RFC 9700 section 4.14.2): presenting a consumed token revokes its
whole family, whoever presents it, so a thief and the legitimate client cannot both continue.
A consequence: two concurrent refreshes with one token (a retry, two tabs) end the session;
at most one gets new tokens, and those die with the family a moment later.

Tokens are 256 random bits; only their SHA-256 is stored (no salt or slow hash is needed for
that much entropy), and neither the token nor its hash is ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration import metrics
from idp.configuration.clock import Clock
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    InvalidGrantError,
    ServiceUnavailableError,
    UnauthorizedClientError,
)
from idp.configuration.settings import Settings
from idp.models import RefreshFamily, RefreshToken
from idp.repository import refresh_tokens as refresh_repo
from idp.repository.refresh_tokens import FamilySnapshot, TokenHolder
from idp.services.clients import purge_used_assertions

logger = logging.getLogger(__name__)

TOKEN_BYTES: Final = 32
# token_urlsafe(32) is 43 characters; anything much longer is not ours and is not hashed.
MAX_TOKEN_LENGTH: Final = 256
PURGE_BATCH: Final = 1000


class ReusedRefreshTokenError(InvalidGrantError):
    """A consumed refresh token presented again: the same `invalid_grant` for the client, and
    its family must end."""

    def __init__(self, family_id: uuid.UUID, user_id: uuid.UUID) -> None:
        super().__init__()
        self.family_id = family_id
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    token: str
    family: RefreshFamily


@dataclass(frozen=True, slots=True)
class RotatedRefreshToken:
    """A rotation's successor token, with the family and the user's role names as they are."""

    token: str
    family: FamilySnapshot
    user: TokenHolder
    roles: list[str]


@dataclass(frozen=True, slots=True)
class ActiveRefreshToken:
    """What introspection may tell about a live refresh token."""

    user_id: uuid.UUID
    username: str
    client_id: str
    scope: str | None
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PurgeResult:
    families: int = 0
    tokens: int = 0
    assertions: int = 0


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _plausible(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_LENGTH


async def _issue(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> str:
    token = new_token()
    await refresh_repo.add_token(
        session, RefreshToken(family_id=family_id, token_hash=hash_token(token), created_at=now)
    )
    return token


async def start_family(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    client_id: str,
    scope: str | None,
    now: datetime,
    audience: list[str] | None = None,
    ttl: int | None = None,
    browser_session_id: uuid.UUID | None = None,
    auth_time: datetime | None = None,
) -> IssuedRefreshToken:
    """A new login session and its first refresh token; `audience` stays the session's.
    `ttl` (the client's) may shorten IDP_REFRESH_TOKEN_TTL."""
    lifetime = min(ttl or settings.refresh_token_ttl, settings.refresh_token_ttl)
    expires_at = now + timedelta(seconds=lifetime)
    family = RefreshFamily(
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        audience=audience,
        browser_session_id=browser_session_id,
        auth_time=auth_time,
        created_at=now,
        expires_at=expires_at,
        idle_expires_at=min(now + timedelta(seconds=settings.refresh_token_idle_ttl), expires_at),
    )
    await refresh_repo.add_family(session, family)
    return IssuedRefreshToken(await _issue(session, family.id, now), family)


async def rotate(
    session: AsyncSession,
    settings: Settings,
    token: str,
    *,
    client_id: str | None,
    now: datetime,
    allowed_audiences: Sequence[str] | None = None,
    final: bool = False,
) -> RotatedRefreshToken:
    """Consume `token` and issue its successor in the same family; give back the family, its
    user and their role names, read in the same statement (one round trip on PostgreSQL).

    Unknown, expired, revoked, or another client's token: `InvalidGrantError`. An already
    consumed token: `ReusedRefreshTokenError`, whose family the caller ends with
    `end_reused_family` once this unit of work has rolled back. An inactive user, or a family
    with an audience outside `allowed_audiences` (when given: the client's): `InvalidGrantError`
    on PostgreSQL, or the caller refuses it and rolling back leaves the token unconsumed.

    `final`: the caller refuses nothing after this (no narrower scope or audience asked for),
    so on PostgreSQL the rotation may commit on its own, sparing the BEGIN and COMMIT round
    trips. Only in a unit of work that has done nothing else.
    """
    if not _plausible(token):
        raise InvalidGrantError()
    token_hash = hash_token(token)
    successor = new_token()
    rotation = await refresh_repo.rotate(
        session,
        token_hash,
        hash_token(successor),
        now=now,
        idle_expires_at=now + timedelta(seconds=settings.refresh_token_idle_ttl),
        allowed_audiences=allowed_audiences,
        client_id=client_id,
        autocommit=final,
    )
    if rotation is None:
        await _refuse(session, token_hash)
    if isinstance(rotation, refresh_repo.FamilyRevokedMeanwhile):
        raise InvalidGrantError()
    return RotatedRefreshToken(successor, rotation.family, rotation.user, rotation.roles)


async def _refuse(session: AsyncSession, token_hash: str) -> NoReturn:
    found = await refresh_repo.find(session, token_hash)
    if found is None or found[0].consumed_at is None:
        raise InvalidGrantError()
    _token, family, user = found
    raise ReusedRefreshTokenError(family.id, user.id)


async def end_reused_family(
    database: Database, reused: ReusedRefreshTokenError, now: datetime
) -> None:
    """Revoke the family of a reused token in a unit of work of its own: it must stand
    although the request that detected the reuse fails."""
    metrics.REFRESH_REUSES.inc()
    async with database.session() as session:
        revoked = await refresh_repo.revoke_family(session, reused.family_id, now=now)
    if revoked:
        logger.warning(
            "refresh token reused: its session is revoked",
            extra={"family_id": str(reused.family_id), "user_id": str(reused.user_id)},
        )


async def revoke(session: AsyncSession, token: str, *, client_id: str, now: datetime) -> bool:
    """End the family of refresh token `token` (RFC 7009); False when the token is unknown.
    A token issued to another client than `client_id` is `UnauthorizedClientError`."""
    if not _plausible(token):
        return False
    found = await refresh_repo.find(session, hash_token(token))
    if found is None:
        return False
    family = found[1]
    if family.client_id != client_id:
        raise UnauthorizedClientError("the token was issued to another client")
    await revoke_family(session, family.id, now=now)
    return True


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, *, now: datetime) -> bool:
    revoked = await refresh_repo.revoke_family(session, family_id, now=now)
    if revoked:
        logger.info("session revoked", extra={"family_id": str(family_id)})
    return revoked


async def end_login_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    keep: uuid.UUID | None = None,
    now: datetime,
) -> int:
    """End all the user's refresh-token families but `keep`; how many were ended."""
    ended = await refresh_repo.revoke_user_families(session, user_id, now=now, keep=keep)
    if ended:
        logger.info("%d session(s) ended", ended, extra={"user_id": str(user_id)})
    return ended


async def family_is_revoked(session: AsyncSession, family_id: uuid.UUID) -> bool:
    """True when the family was revoked or no longer exists (it was purged after ending)."""
    family = await refresh_repo.get_family(session, family_id)
    return family is None or family.revoked_at is not None


async def describe(
    session: AsyncSession, token: str, *, now: datetime
) -> ActiveRefreshToken | None:
    """The token's details if it is active now: unconsumed, family live, user active."""
    if not _plausible(token):
        return None
    found = await refresh_repo.find(session, hash_token(token))
    if found is None:
        return None
    row, family, user = found
    if (
        row.consumed_at is not None
        or family.revoked_at is not None
        or family.idle_expires_at <= now
        or not user.is_active
    ):
        return None
    return ActiveRefreshToken(
        user_id=user.id,
        username=user.username,
        client_id=family.client_id,
        scope=family.scope,
        issued_at=row.created_at,
        expires_at=family.idle_expires_at,
    )


async def purge(
    database: Database, *, now: datetime, retention: int, batch_size: int = PURGE_BATCH
) -> PurgeResult:
    """Delete families (and their tokens) that ended more than `retention` seconds ago.

    A consumed token stays as long as its family lives, so a late replay is still recognised
    as reuse. Batches commit separately so no statement runs long or holds many locks. The
    ids of expired client assertions go too (they are kept only until the assertion's `exp`).
    """
    before = now - timedelta(seconds=retention)
    families = tokens = 0
    while True:
        async with database.session() as session:
            ids = await refresh_repo.ended_family_ids(session, before=before, limit=batch_size)
            deleted_families, deleted_tokens = await refresh_repo.delete_families(session, ids)
        families += deleted_families
        tokens += deleted_tokens
        if len(ids) < batch_size:
            break
    assertions = await purge_used_assertions(database, now=now)
    return PurgeResult(families, tokens, assertions)


async def purge_periodically(database: Database, settings: Settings, clock: Clock) -> None:
    """Purge every IDP_REFRESH_PURGE_INTERVAL seconds, jittered so replicas spread out.

    Never raises (except cancellation): a failed run is logged and the next one tries again.
    """
    interval = settings.refresh_purge_interval
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only
        try:
            result = await purge(
                database, now=clock.now(), retention=settings.refresh_purge_retention
            )
        except ServiceUnavailableError:
            logger.warning("refresh-token purge skipped: database unavailable")
            continue
        except Exception:
            logger.exception("refresh-token purge failed")
            continue
        if result.families or result.assertions:
            logger.info(
                "purged %d ended session(s), %d refresh token(s), %d used client assertion(s)",
                result.families,
                result.tokens,
                result.assertions,
            )
