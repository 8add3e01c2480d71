"""The error bodies of the admin and `/me` API, as `controllers/errors.py` writes them and
the OpenAPI document describes them (OAuth endpoints use RFC 6749's shape instead)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """401, 403, 404, 409, 503 and a refusal of the password policy (422): one message."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "user not found"}]},
    )

    detail: str = Field(description="What went wrong, safe to show")


class ValidationIssue(BaseModel):
    """One invalid input; the input itself is never echoed (it may be a password)."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int] = Field(
        description="Where: `body`, `query` or `path`, then the field", examples=[["body", "email"]]
    )
    msg: str = Field(examples=["value is not a valid email address"])
    type: str = Field(examples=["value_error"])


class ValidationErrorBody(BaseModel):
    """422: the invalid fields of a request that does not match the schema, or one message
    when a rule refused valid-looking values (the password policy, for example)."""

    model_config = ConfigDict(extra="forbid")

    detail: list[ValidationIssue] | str
