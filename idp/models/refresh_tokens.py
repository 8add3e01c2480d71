"""Refresh tokens and their families (one family per login: the session they keep alive).

A family is the unit of revocation: logout, reuse detection, a password change or disabling
the user set its `revoked_at` with one UPDATE, and the check at each refresh reads it, so a
token issued concurrently with the revocation is dead too. Tokens are stored only as SHA-256
hashes; at most one token of a family is unconsumed (the current one).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class RefreshFamily(Base):
    __tablename__ = "refresh_families"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str | None] = mapped_column(Text, default=None)
    # The `aud` of the session's access tokens (RFC 8707 `resource` at login); None for
    # sessions started before audiences were recorded: the configured IDP_AUDIENCE.
    audience: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Browser sign-in (OpenID Connect): the browser session it came from and its auth_time,
    # kept for the ID tokens of later refreshes; None for other grants.
    browser_session_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("browser_sessions.id", ondelete="SET NULL"), default=None, index=True
    )
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    # Absolute end of the session: login time + IDP_REFRESH_TOKEN_TTL.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Expiry of the current token: last refresh + IDP_REFRESH_TOKEN_IDLE_TTL, never after
    # `expires_at`; so "ended by time" is one indexed comparison, for checks and for the purge.
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None, index=True)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    family_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("refresh_families.id", ondelete="CASCADE"), index=True
    )
    # Hex SHA-256 of the opaque token; the unique index is the lookup path of every refresh.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    # Set once, by the conditional UPDATE that wins the refresh; a second use is reuse.
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
