"""What goes in and out of the user endpoints; the CLI validates with the same models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from idp.configuration.constants import ROLE_NAME_MAX_LENGTH, USERNAME_MAX_LENGTH

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"
ROLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
# Free text reaching the database: PostgreSQL refuses NUL in text, which must be a 422, not a 500.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"

Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=USERNAME_MAX_LENGTH,
        pattern=USERNAME_PATTERN,
    ),
    # Real examples: without them Swagger UI makes one up from the pattern, which fails it.
    Field(description="Letters, digits and . _ @ + -; unique whatever the case", examples=["jdoe"]),
]
RoleName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=ROLE_NAME_MAX_LENGTH,
        pattern=ROLE_NAME_PATTERN,
    ),
    Field(examples=["support"]),
]
# Length and the 72-byte bcrypt limit are checked by the password policy with a clear message.
Password = Annotated[str, StringConstraints(max_length=1024)]


class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "jdoe",
                    "email": "jdoe@example.com",
                    "password": "plum kettle orbit 93",
                    "roles": [],
                    "is_active": True,
                }
            ]
        },
    )

    username: Username
    email: EmailStr
    password: Password | None = Field(
        None, description="Initial password; without one the user cannot log in until it is set"
    )
    roles: list[RoleName] = Field(default_factory=list, max_length=100)
    is_active: bool = True


class UserUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "jdoe@example.org", "is_active": True}]},
    )

    email: EmailStr | None = None
    is_active: bool | None = None


class PasswordSet(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"password": "lantern fig canyon 27"}]}
    )

    password: Password


class PasswordChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "plum kettle orbit 93",
                    "new_password": "lantern fig canyon 27",
                }
            ]
        },
    )

    current_password: Password
    new_password: Password


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    is_active: bool
    roles: list[str]
    created_at: datetime
    updated_at: datetime
    locked_until: datetime | None = None


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class Profile(BaseModel):
    """`GET /me`: the caller as the identity service sees them now."""

    id: uuid.UUID
    username: str
    email: str
    roles: list[str]
    permissions: list[str]
