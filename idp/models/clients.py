"""OAuth clients (RFC 6749 section 2), their secrets, their roles and used assertion ids.

A client's `id` is its `client_id`. Secrets are stored only as HMAC-SHA256 under the server's
pepper; several may be live at once so a secret rotates without downtime.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # `confidential` clients authenticate (secret or private_key_jwt); `public` ones cannot.
    client_type: Mapped[str] = mapped_column(String(20))
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Allowed `aud` values; None: the configured IDP_AUDIENCE (the built-in client).
    audiences: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # The `aud` of a request naming no resource; None: every allowed audience.
    default_audience: Mapped[str | None] = mapped_column(String(500), default=None)
    # May ask for idp's own admin audience (IDP_ADMIN_AUDIENCE).
    admin_api: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    # OpenID Connect RP-initiated logout: where the browser may be sent afterwards.
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    # private_key_jwt: the client's public keys, inline or by URL (one of them).
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    # Per-client lifetimes in seconds; None: the server's IDP_*_TTL.
    access_token_ttl: Mapped[int | None] = mapped_column(Integer, default=None)
    refresh_token_ttl: Mapped[int | None] = mapped_column(Integer, default=None)
    # First-party clients are the operator's own applications (no consent screen).
    first_party: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class ClientSecret(Base):
    __tablename__ = "client_secrets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    # Hex HMAC-SHA256 of the secret under the server's pepper.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The secret's last four characters, so an operator can tell secrets apart.
    hint: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    # Set when a newer secret replaces this one: it works until then (rotation overlap).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ClientRole(Base):
    __tablename__ = "client_roles"

    client_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class UsedAssertion(Base):
    """The `jti` of each accepted client assertion (RFC 7523), until it expires: a replay
    collides on the primary key."""

    __tablename__ = "used_client_assertions"

    client_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    # SHA-256 of the jti: its length is the client's choice, the key's is not.
    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
