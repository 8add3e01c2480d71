"""Failed logins per account and client address: the lock that a flood from one address earns.

The account-wide counter lives on `users`; this one lets the service lock an attacking address
out of an account quickly without locking the account's owner out everywhere.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from idp.configuration.constants import CLIENT_ADDRESS_MAX_LENGTH
from idp.models.base import Base, UTCDateTime


class LoginFailure(Base):
    __tablename__ = "login_failures"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_address: Mapped[str] = mapped_column(String(CLIENT_ADDRESS_MAX_LENGTH), primary_key=True)
    failed_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lockout_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
