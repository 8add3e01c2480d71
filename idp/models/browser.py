"""Browser sign-in (OpenID Connect): sessions behind the login cookie, authorization codes,
and the consent a user gave a third-party client."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class BrowserSession(Base):
    """A signed-in browser: the cookie holds a random token, this row its SHA-256. Its id is
    the `sid` of the ID tokens issued in it (OpenID Connect front-channel identity)."""

    __tablename__ = "browser_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # When the user last proved who they are (OIDC `auth_time`), and how (`amr`).
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AuthorizationCode(Base):
    """RFC 6749 section 4.1 codes: stored hashed, single use, short-lived. A second use ends
    the session its first use started (RFC 6749 section 4.1.2)."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("clients.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    browser_session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("browser_sessions.id", ondelete="CASCADE")
    )
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(Text, default=None)
    audience: Mapped[list[str]] = mapped_column(JSON)
    nonce: Mapped[str | None] = mapped_column(String(500), default=None)
    code_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The refresh-token family its exchange started: revoked if the code comes back.
    family_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)


class Consent(Base):
    """The scopes a user let a third-party client have; asked again only for new ones."""

    __tablename__ = "consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    scopes: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
