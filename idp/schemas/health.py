"""Health and readiness answers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool = Field(description="the database answers")
    migrated: bool = Field(
        description="the database is migrated to this release's head revision (or newer)"
    )
    signing_key: bool = Field(description="a signing key is loaded")
