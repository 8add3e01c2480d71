"""Queries on refresh tokens and their families.

Consumption is one conditional UPDATE: of N concurrent refreshes with one token, the database
lets exactly one change `consumed_at` from NULL; the others match no row. On PostgreSQL the
losers wait for the winner's row lock and then re-check the condition on the committed row.

A refresh on PostgreSQL is one statement (`rotate`): extend the family, consume the token,
insert the successor and read the user with their role names, in data-modifying CTEs, and
commits by itself when the caller has nothing left to refuse. Elsewhere (SQLite) the same
steps run as separate statements in the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import JSON, Uuid, bindparam, case, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.selectable import TextualSelect

from idp.models import RefreshFamily, RefreshToken, User
from idp.models.base import UTCDateTime
from idp.repository import users as users_repo


@dataclass(frozen=True, slots=True)
class FamilySnapshot:
    """What a refresh needs of its family, as the rotation left it."""

    id: uuid.UUID
    user_id: uuid.UUID
    client_id: str
    scope: str | None
    audience: list[str] | None


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The family's user, read in the rotation's statement."""

    id: uuid.UUID
    username: str
    email: str
    is_active: bool


@dataclass(frozen=True, slots=True)
class Rotation:
    """A consumed token's family, its user and their role names (sorted)."""

    family: FamilySnapshot
    user: TokenHolder
    roles: list[str]


class FamilyRevokedMeanwhile:
    """The token was consumed, but its family was revoked before it could be extended."""


REVOKED_MEANWHILE: Final = FamilyRevokedMeanwhile()

# `fam` extends the family (as `extend_family`) of the presented token if the token is
# unconsumed and the family live, its user active and its audience still allowed; it locks
# the family row first, so a revocation in progress is waited for and then seen (the row is
# re-checked once the revocation commits). `consumed` then consumes the token (as `consume`)
# only in a family `fam` extended: of concurrent refreshes with one token, the later ones wait
# for the winner's lock on the token row and find it consumed. `ins` inserts the successor of
# a consumed token. All CTEs see one snapshot; only RETURNING carries what they changed.
_ROTATE_SQL: Final = """
WITH fam AS (
    UPDATE refresh_families AS f SET idle_expires_at = LEAST(f.expires_at, :idle_expires_at)
    FROM refresh_tokens AS t, users AS u
    WHERE t.token_hash = :token_hash AND t.consumed_at IS NULL AND f.id = t.family_id
      AND f.revoked_at IS NULL AND f.idle_expires_at > :now{client_filter}
      AND u.id = f.user_id AND u.is_active
      AND (NOT CAST(:check_audience AS boolean) OR CASE
          WHEN json_typeof(f.audience) = 'array' THEN NOT EXISTS (
              SELECT 1 FROM json_array_elements_text(f.audience) AS aud(value)
              WHERE aud.value <> ALL (CAST(:allowed_audiences AS text[]))
          ) ELSE true END)
    RETURNING f.id, f.user_id, f.client_id, f.scope, f.audience, u.username, u.email
), consumed AS (
    UPDATE refresh_tokens AS t SET consumed_at = :now
    FROM fam
    WHERE t.token_hash = :token_hash AND t.consumed_at IS NULL AND t.family_id = fam.id
    RETURNING t.family_id
), ins AS (
    INSERT INTO refresh_tokens (id, family_id, token_hash, created_at)
    SELECT CAST(:new_id AS uuid), consumed.family_id, CAST(:new_hash AS varchar),
           CAST(:now AS timestamptz)
    FROM consumed
    RETURNING family_id
)
SELECT fam.id, fam.user_id, fam.client_id, fam.scope, fam.audience, fam.username, fam.email,
       ARRAY(
           SELECT r.name FROM user_roles AS ur JOIN roles AS r ON r.id = ur.role_id
           WHERE ur.user_id = fam.user_id ORDER BY r.name
       ) AS roles
FROM fam
JOIN consumed ON consumed.family_id = fam.id
JOIN ins ON ins.family_id = fam.id
"""


def _rotate_statement(client_filter: str) -> TextualSelect:
    return (
        text(_ROTATE_SQL.format(client_filter=client_filter))
        .bindparams(
            bindparam("now", type_=UTCDateTime()),
            bindparam("idle_expires_at", type_=UTCDateTime()),
            bindparam("new_id", type_=Uuid()),
        )
        .columns(audience=JSON)
    )


# Built once: SQLAlchemy caches their compiled form, so a refresh costs no SQL compilation.
_ROTATE_ANY_CLIENT: Final = _rotate_statement("")
_ROTATE_ONE_CLIENT: Final = _rotate_statement(" AND f.client_id = :client_id")


async def rotate(
    session: AsyncSession,
    token_hash: str,
    new_token_hash: str,
    *,
    now: datetime,
    idle_expires_at: datetime,
    allowed_audiences: Sequence[str] | None,
    client_id: str | None = None,
    autocommit: bool = False,
) -> Rotation | FamilyRevokedMeanwhile | None:
    """Consume the token (as `consume`), extend its family (as `extend_family`), insert the
    successor `new_token_hash`, and read the family's user and role names.

    None when the token was not consumed (unknown, consumed already, family ended, another
    client's; on PostgreSQL also: the user is inactive, or the family's audience is not among
    `allowed_audiences` when they are given); `REVOKED_MEANWHILE` when it was consumed but the
    family was revoked before it could be extended (the caller rolls back).

    On PostgreSQL this is one statement. With `autocommit` (the caller will refuse nothing
    afterwards) and a session of its own, it commits by itself: no BEGIN and COMMIT round trips.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return await _rotate_step_by_step(
            session,
            token_hash,
            new_token_hash,
            now=now,
            idle_expires_at=idle_expires_at,
            client_id=client_id,
        )
    params: dict[str, object] = {
        "token_hash": token_hash,
        "now": now,
        "idle_expires_at": idle_expires_at,
        "check_audience": allowed_audiences is not None,
        "allowed_audiences": list(allowed_audiences or ()),
        "new_id": uuid.uuid4(),
        "new_hash": new_token_hash,
    }
    statement = _ROTATE_ANY_CLIENT
    if client_id is not None:
        statement = _ROTATE_ONE_CLIENT
        params["client_id"] = client_id
    if autocommit and isinstance(session.bind, AsyncEngine) and not session.in_transaction():
        # The statement is atomic on its own; the session's commit is then a no-op.
        connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    else:
        connection = await session.connection()
    row = (await connection.execute(statement, params)).one_or_none()
    if row is None:
        return None
    family_id, user_id, client, scope, audience, username, email, roles = row
    return Rotation(
        FamilySnapshot(family_id, user_id, client, scope, audience),
        TokenHolder(user_id, username, email, is_active=True),
        list(roles),
    )


async def _rotate_step_by_step(
    session: AsyncSession,
    token_hash: str,
    new_token_hash: str,
    *,
    now: datetime,
    idle_expires_at: datetime,
    client_id: str | None,
) -> Rotation | FamilyRevokedMeanwhile | None:
    """`rotate` for databases without data-modifying CTEs: the same steps, one at a time."""
    family_id = await consume(session, token_hash, now=now, client_id=client_id)
    if family_id is None:
        return None
    family = await extend_family(session, family_id, idle_expires_at=idle_expires_at)
    if family is None:
        return REVOKED_MEANWHILE
    await session.execute(
        insert(RefreshToken).values(
            id=uuid.uuid4(), family_id=family.id, token_hash=new_token_hash, created_at=now
        )
    )
    found = await users_repo.get_with_role_names(session, family.user_id)
    if found is None:  # users own their families (ON DELETE CASCADE): not reached
        return REVOKED_MEANWHILE
    user, roles = found
    return Rotation(
        FamilySnapshot(family.id, family.user_id, family.client_id, family.scope, family.audience),
        TokenHolder(user.id, user.username, user.email, user.is_active),
        roles,
    )


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
