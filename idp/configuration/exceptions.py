"""One typed hierarchy for every error the service raises on purpose.

Each class carries its HTTP status and headers; `controllers/errors.py` only chooses the body
shape, and the CLI prints the message as one line.
"""

from __future__ import annotations

from typing import Final

# Token responses and OAuth errors must not be cached (RFC 6749 sections 5.1 and 5.2).
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class IdpError(Exception):
    """Base of all deliberate errors: a message safe to show, and an HTTP status."""

    status_code: int = 500
    default_message: str = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error requires."""
        return {}


class NotFoundError(IdpError):
    status_code = 404
    default_message = "not found"


class ConflictError(IdpError):
    status_code = 409
    default_message = "already exists"


class ValidationFailedError(IdpError):
    status_code = 422
    default_message = "invalid input"


class AuthenticationError(IdpError):
    """No valid bearer token: 401 with `WWW-Authenticate: Bearer`."""

    status_code = 401
    default_message = "not authenticated"

    @property
    def headers(self) -> dict[str, str]:
        """RFC 6750 section 3: a bare challenge without a token, the reason with a bad one."""
        if self.message == AuthenticationError.default_message:
            return {"WWW-Authenticate": "Bearer"}
        challenge = f'Bearer error="invalid_token", error_description="{self.message}"'
        return {"WWW-Authenticate": challenge}


class PermissionDeniedError(IdpError):
    status_code = 403
    default_message = "permission denied"


class ServiceUnavailableError(IdpError):
    status_code = 503
    default_message = "service temporarily unavailable"


class TooManyRequestsError(IdpError):
    status_code = 429
    default_message = "too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class KeystoreError(IdpError):
    """The keystore is missing, unreadable or refuses an operation (e.g. a too-early rotation)."""

    status_code = 503
    default_message = "keystore error"


class OAuthError(IdpError):
    """An RFC 6749 section 5.2 error: `{"error": ..., "error_description": ...}`."""

    status_code = 400
    error: str = "invalid_request"
    default_message = "the request is missing a parameter or is otherwise malformed"

    @property
    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)


class InvalidRequestError(OAuthError):
    error = "invalid_request"


class InvalidClientError(OAuthError):
    """RFC 6749 section 5.2: client authentication failed (unknown client, no or wrong
    credentials, a method it is not registered for). 401; with `WWW-Authenticate: Basic`
    when the client tried HTTP Basic."""

    status_code = 401
    error = "invalid_client"
    default_message = "client authentication failed"

    def __init__(self, message: str | None = None, *, basic: bool = False) -> None:
        super().__init__(message)
        self.basic = basic

    @property
    def headers(self) -> dict[str, str]:
        headers = dict(NO_STORE)
        if self.basic:
            headers["WWW-Authenticate"] = 'Basic realm="idp", charset="UTF-8"'
        return headers


class UnauthorizedClientError(OAuthError):
    """The authenticated client may not use this grant type (or endpoint)."""

    error = "unauthorized_client"
    default_message = "the client is not allowed to do this"


class InvalidGrantError(OAuthError):
    error = "invalid_grant"
    default_message = "invalid credentials or grant"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"
    default_message = "the requested scope exceeds the scope originally granted"


class InvalidTargetError(OAuthError):
    """RFC 8707 section 2: a `resource` this server does not issue tokens for."""

    error = "invalid_target"
    default_message = "the requested resource is not one this server issues tokens for"


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"
    default_message = "the grant type is not supported"


class InvalidTokenError(AuthenticationError):
    """A bearer token that is missing, malformed, expired or not ours."""

    default_message = "invalid token"
