"""Roles and permissions in and out of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from idp.schemas.users import ROLE_NAME_PATTERN, RoleName

PERMISSION_CODE_PATTERN = ROLE_NAME_PATTERN
PermissionCode = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=PERMISSION_CODE_PATTERN),
    Field(examples=["users:read"]),
]
# Newlines and tabs are fine in a description; NUL is not storable in PostgreSQL text.
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]


class RoleCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "support",
                    "description": "Answers customers; reads user accounts",
                    "permissions": ["users:read"],
                }
            ]
        },
    )

    name: RoleName
    description: Description = ""
    permissions: list[PermissionCode] = Field(default_factory=list, max_length=100)


class RoleUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "helpdesk", "description": "Answers customers"}]},
    )

    name: RoleName | None = None
    description: Description | None = None


class PermissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    description: str


class RoleOut(BaseModel):
    name: str
    description: str
    permissions: list[str]
    created_at: datetime


class PermissionGrant(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"permission": "users:read"}]}
    )

    permission: PermissionCode


class RoleGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "support"}]})

    role: RoleName
