"""Verify idp access tokens locally, in any Python microservice.

    from idp_verifier import TokenVerifier

    async with TokenVerifier("https://idp.example.com", "orders") as verifier:
        claims = await verifier.verify(token)

The FastAPI integration lives in ``idp_verifier.fastapi`` (the ``fastapi`` extra).
"""

from idp_verifier.claims import Claims
from idp_verifier.errors import (
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTypeError,
    JWKSUnavailableError,
    MalformedTokenError,
    MissingClaimError,
    TokenError,
    TokenExpiredError,
    TokenNotYetValidError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from idp_verifier.permissions import Permissions
from idp_verifier.sync import SyncTokenVerifier
from idp_verifier.verifier import TokenVerifier

__all__ = [
    "Claims",
    "InvalidAudienceError",
    "InvalidIssuerError",
    "InvalidSignatureError",
    "InvalidTypeError",
    "JWKSUnavailableError",
    "MalformedTokenError",
    "MissingClaimError",
    "Permissions",
    "SyncTokenVerifier",
    "TokenError",
    "TokenExpiredError",
    "TokenNotYetValidError",
    "TokenVerifier",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
]
