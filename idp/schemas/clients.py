"""OAuth clients on the wire: what the admin API and the CLI accept and show."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,99}$"
# RFC 6749 section 3.3 scope-token.
SCOPE_PATTERN = r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$"

ClientType = Literal["confidential", "public"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
GrantType = Literal["authorization_code", "client_credentials", "password", "refresh_token"]
ScopeToken = Annotated[str, StringConstraints(pattern=SCOPE_PATTERN)]
Audience = Annotated[str, StringConstraints(min_length=1, max_length=500)]
RedirectUri = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Lifetime = Annotated[int, Field(ge=5, le=86_400 * 365)]


class ClientFields(BaseModel):
    """What create and update have in common; every field optional for an update."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, examples=["Orders service"])
    token_endpoint_auth_method: AuthMethod | None = Field(
        None, description="Defaults: client_secret_basic (confidential), none (public)."
    )
    grant_types: list[GrantType] | None = Field(
        None,
        max_length=4,
        description="Defaults: client_credentials (confidential), authorization_code and "
        "refresh_token (public). `password` is an explicit opt-in (RFC 9700 section 2.4).",
        examples=[["client_credentials"]],
    )
    scopes: list[ScopeToken] | None = Field(None, max_length=100, examples=[["orders:read"]])
    audiences: list[Audience] | None = Field(
        None,
        max_length=50,
        description="The `aud` values the client may ask for (RFC 8707 `resource`); default: "
        "the configured IDP_AUDIENCE.",
        examples=[["orders"]],
    )
    default_audience: Audience | None = Field(
        None, description="The `aud` of a request naming none; default: every allowed one."
    )
    admin_api: bool | None = Field(
        None, description="May request tokens for idp's own admin API (IDP_ADMIN_AUDIENCE)."
    )
    redirect_uris: list[RedirectUri] | None = Field(None, max_length=50)
    jwks: dict[str, Any] | None = Field(
        None, description="private_key_jwt: the client's public keys (RFC 7517 key set)."
    )
    jwks_uri: str | None = Field(
        None, max_length=2000, description="private_key_jwt: where the client's keys are."
    )
    access_token_ttl: Lifetime | None = Field(
        None, description="Seconds; at most IDP_ACCESS_TOKEN_TTL (default: that)."
    )
    refresh_token_ttl: Lifetime | None = Field(
        None, description="Seconds; at most IDP_REFRESH_TOKEN_TTL (default: that)."
    )
    first_party: bool | None = Field(None, description="The operator's own application.")
    enabled: bool | None = None


class ClientCreate(ClientFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_id": "orders",
                    "name": "Orders service",
                    "client_type": "confidential",
                    "grant_types": ["client_credentials"],
                    "scopes": ["orders:read"],
                }
            ]
        },
    )

    client_id: str | None = Field(
        None,
        pattern=CLIENT_ID_PATTERN,
        description="Chosen id; default: generated.",
        examples=["orders"],
    )
    client_type: ClientType = Field("confidential", examples=["confidential"])


class ClientUpdate(ClientFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Orders service v2", "scopes": ["orders:read", "orders:write"]}]
        },
    )


class ClientSecretOut(BaseModel):
    id: str
    hint: str = Field(description="The secret's last four characters.")
    created_at: datetime
    expires_at: datetime | None


class ClientOut(BaseModel):
    client_id: str
    name: str
    client_type: ClientType
    token_endpoint_auth_method: AuthMethod
    grant_types: list[str]
    scopes: list[str]
    audiences: list[str] | None
    default_audience: str | None
    admin_api: bool
    redirect_uris: list[str]
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    access_token_ttl: int | None
    refresh_token_ttl: int | None
    first_party: bool
    enabled: bool
    roles: list[str]
    secrets: list[ClientSecretOut]
    created_at: datetime
    updated_at: datetime


class ClientCreated(ClientOut):
    client_secret: str | None = Field(
        None, description="Shown once: only its keyed hash is stored."
    )


class SecretRotated(BaseModel):
    client_id: str
    client_secret: str = Field(description="Shown once: only its keyed hash is stored.")
    previous_expire_at: datetime | None = Field(
        None, description="When the secrets it replaces stop working."
    )
