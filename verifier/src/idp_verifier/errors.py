"""The exceptions the verifier raises: every one means "do not trust this token"."""

from __future__ import annotations

from typing import ClassVar


def shorten(text: str, limit: int = 40) -> str:
    """A log-safe rendering of an untrusted string (a `kid` may be 10 kB of anything)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


class TokenError(Exception):
    """Base of every verification failure.

    ``description`` is a fixed, client-safe sentence (it never echoes the token), suitable for
    an ``error_description`` in a ``WWW-Authenticate`` header; ``str(error)`` has the details
    for logs.
    """

    description: ClassVar[str] = "The access token is invalid."


class MalformedTokenError(TokenError):
    """Not a JWS compact token we accept: too long, bad encoding, bad JSON, a `crit` header."""

    description = "The access token is malformed."


class InvalidSignatureError(TokenError):
    """The signature does not verify with the key named by `kid` (or is empty or truncated)."""

    description = "The access token signature is invalid."


class UnsupportedAlgorithmError(TokenError):
    """`alg` is not one the issuer's keys use (`none`, HMAC, ...) or not the key's own `alg`."""

    description = "The access token algorithm is not accepted."


class UnknownKeyError(TokenError):
    """No published key has the token's `kid`, even after the refetch the cooldown allows."""

    description = "The access token was signed by an unknown key."


class TokenExpiredError(TokenError):
    """`exp` is in the past, beyond the leeway."""

    description = "The access token expired."


class TokenNotYetValidError(TokenError):
    """`nbf` or `iat` lies in the future, beyond the leeway."""

    description = "The access token is not valid yet."


class InvalidIssuerError(TokenError):
    """`iss` is not exactly the configured issuer."""

    description = "The access token was issued by another issuer."


class InvalidAudienceError(TokenError):
    """`aud` does not contain this service's audience."""

    description = "The access token is not meant for this service."


class InvalidTypeError(TokenError):
    """The `typ` header is missing or is not `at+jwt` (RFC 9068): an ID token, for instance."""

    description = "The token is not an access token."


class MissingClaimError(TokenError):
    """A claim the access-token profile (RFC 9068) requires is absent; ``claim`` names it."""

    description = "The access token lacks a required claim."

    def __init__(self, claim: str) -> None:
        super().__init__(f"the token has no {claim!r} claim")
        self.claim = claim


class JWKSUnavailableError(TokenError):
    """No key set has ever been fetched, so nothing can be verified (the issuer is unreachable).

    Not the token's fault: a web service should answer 503 rather than 401.
    """

    description = "The issuer's keys are not available."
