"""OAuth 2.0 wire formats: token and introspection responses, RFC 8414 metadata."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None
    id_token: str | None = None


class OAuthErrorBody(BaseModel):
    error: str = Field(examples=["invalid_grant"])
    error_description: str | None = None


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str
    introspection_endpoint: str
    grant_types_supported: list[str]
    response_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    id_token_signing_alg_values_supported: list[str] | None = None
    token_endpoint_auth_signing_alg_values_supported: list[str] | None = None
    revocation_endpoint_auth_signing_alg_values_supported: list[str] | None = None
    introspection_endpoint_auth_signing_alg_values_supported: list[str] | None = None
    scopes_supported: list[str] | None = None
    subject_types_supported: list[str] | None = None
    code_challenge_methods_supported: list[str] | None = None
    response_modes_supported: list[str] | None = None
    authorization_response_iss_parameter_supported: bool | None = None
    # OpenID Connect Discovery 1.0 (only at /.well-known/openid-configuration)
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    claims_supported: list[str] | None = None
    prompt_values_supported: list[str] | None = None
    service_documentation: str | None = None


class IntrospectionResponse(BaseModel):
    """RFC 7662 section 2.2. An inactive token is `{"active": false}` and nothing else."""

    active: bool
    token_type: str | None = Field(None, examples=["access_token", "refresh_token"])
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    iss: str | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    jti: str | None = None
