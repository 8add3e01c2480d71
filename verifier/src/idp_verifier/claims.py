"""The verified identity a service receives, and the claim checks that produce it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from idp_verifier.errors import (
    InvalidAudienceError,
    InvalidIssuerError,
    MalformedTokenError,
    MissingClaimError,
    TokenExpiredError,
    TokenNotYetValidError,
    shorten,
)

#: idp names a client acting on its own behalf (client_credentials) ``client:<client_id>``:
#: a namespace no user id (a UUID) can take.
CLIENT_SUBJECT_PREFIX: Final = "client:"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says about its bearer.

    ``username`` and ``email`` are ``None`` only for a token without them: idp always sets
    them for a user, never for a client's own token (see ``is_client``); ``raw`` is the whole
    payload, read-only, for any other claim. ``scopes`` are those idp granted the client
    within the scopes it is registered for: a service may rely on them.
    """

    subject: str
    username: str | None
    email: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    client_id: str
    expires_at: int
    issued_at: int
    token_id: str
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def is_client(self) -> bool:
        """True for a client's own token (the client_credentials grant): its subject is
        ``client:`` + its ``client_id`` and it names no user. False for a user's token, which
        a client obtained on the user's behalf (``client_id`` names that client)."""
        return (
            self.subject == CLIENT_SUBJECT_PREFIX + self.client_id
            and self.username is None
            and self.email is None
        )


def check_claims(
    payload: dict[str, Any], *, issuer: str, audience: str, leeway: float, now: float
) -> Claims:
    """Apply the RFC 9068 claim rules to a payload whose signature has been verified."""
    iss = payload.get("iss")
    if iss is None:
        raise MissingClaimError("iss")
    if iss != issuer:
        raise InvalidIssuerError(f"issuer {shorten(str(iss))} is not {issuer!r}")

    aud = payload.get("aud")
    if aud is None:
        raise MissingClaimError("aud")
    if isinstance(aud, str):
        if aud != audience:
            raise InvalidAudienceError(f"audience {shorten(aud)} is not {audience!r}")
    elif isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        if audience not in aud:
            raise InvalidAudienceError(f"{audience!r} is not among the token's audiences")
    else:
        raise MalformedTokenError("claim 'aud' is neither a string nor a list of strings")

    exp = _required_time(payload, "exp")
    if now >= exp + leeway:
        raise TokenExpiredError("the token expired")
    nbf = _optional_time(payload, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenNotYetValidError("the token is not valid before its nbf")
    iat = _required_time(payload, "iat")
    if iat > now + leeway:
        raise TokenNotYetValidError("the token was issued in the future")

    roles = payload.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise MalformedTokenError("claim 'roles' is not a list of strings")
    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise MalformedTokenError("claim 'scope' is not a string")

    return Claims(
        subject=_required_string(payload, "sub"),
        username=_optional_string(payload, "username"),
        email=_optional_string(payload, "email"),
        roles=frozenset(roles),
        scopes=frozenset(scope.split()),
        client_id=_required_string(payload, "client_id"),
        expires_at=math.floor(exp),
        issued_at=math.floor(iat),
        token_id=_required_string(payload, "jti"),
        raw=MappingProxyType(payload),
    )


def _required_time(payload: dict[str, Any], name: str) -> float:
    value = _optional_time(payload, name)
    if value is None:
        raise MissingClaimError(name)
    return value


def _optional_time(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    # bool is an int to Python, and 1e400 parses as infinity: neither is a NumericDate.
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise MalformedTokenError(f"claim {name!r} is not a NumericDate")


def _required_string(payload: dict[str, Any], name: str) -> str:
    value = _optional_string(payload, name)
    if value is None:
        raise MissingClaimError(name)
    return value


def _optional_string(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedTokenError(f"claim {name!r} is not a string")
