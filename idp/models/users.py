"""Users. Usernames and emails are unique whatever their case (functional unique indexes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Index, Integer, String, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.models.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from idp.models.roles import Role


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(150))
    email: Mapped[str] = mapped_column(String(320))
    # None until a password is set: such a user cannot log in with the password grant.
    password_hash: Mapped[str | None] = mapped_column(String(100), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    # Brute-force protection state, updated atomically by the login service.
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_failed_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lockout_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    roles: Mapped[list[Role]] = relationship(
        secondary="user_roles", lazy="raise", order_by="Role.name", viewonly=True
    )

    __table_args__ = (
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
    )
