"""Roles and permissions in and out of the admin API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from idp.schemas.users import RoleName


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RoleName
    description: str = Field("", max_length=500)
    permissions: list[str] = Field(default_factory=list, max_length=100)


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RoleName | None = None
    description: str | None = Field(None, max_length=500)


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
    model_config = ConfigDict(extra="forbid")

    permission: str = Field(min_length=1, max_length=100)


class RoleGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
