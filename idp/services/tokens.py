"""Access tokens (RFC 9068 profile): issuing with the active key, verifying with our own keys.

Verification is the verifier library's (`idp_verifier`), so the identity service and the
services it protects accept exactly the same tokens: RFC 8725 header rules (the algorithm is
the published key's own, the key is found by `kid` only in our key set, never `jwk`, `jku`,
`x5u`, `x5c`; `crit` is refused), `typ`, and the RFC 9068 claims `iss`, `aud`, `exp`, `nbf`,
`iat`, `sub`, `client_id`, `jti`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from idp.configuration.exceptions import InvalidRequestError, InvalidTokenError
from idp.configuration.settings import Settings
from idp.services.keyring import KeySet
from idp_verifier import jws
from idp_verifier.claims import check_claims
from idp_verifier.errors import TokenError, UnknownKeyError
from idp_verifier.keys import VerificationKey, parse_jwks

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    jti: str
    kid: str


def normalize_scope(scope: str | None) -> str | None:
    """Validate a requested `scope` and return it de-duplicated in request order (None if empty)."""
    if scope is None or not scope.strip():
        return None
    tokens = scope.split(" ")
    if len(tokens) > 50 or not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidRequestError("scope must be space-separated RFC 6749 scope tokens")
    return " ".join(dict.fromkeys(tokens))


def issue_access_token(
    keyset: KeySet,
    settings: Settings,
    *,
    subject: str,
    username: str | None,
    email: str | None,
    roles: Sequence[str],
    client_id: str,
    scope: str | None,
    sid: str | None,
    audience: Sequence[str],
    ttl: int,
    now: datetime,
) -> IssuedToken:
    """Sign an access token carrying every claim of the contract.

    `sid` (the claim of that name) is the refresh-token family the token belongs to, so
    the identity service can tell "this session" from the user's other ones. A client's own
    token (client_credentials) has no `username`, `email` or `sid`.
    """
    issued_at = int(now.timestamp())
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": _aud_claim(audience),
        "exp": issued_at + ttl,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": client_id,
    }
    if username is not None:
        claims["username"] = username
    if email is not None:
        claims["email"] = email
    claims["roles"] = list(roles)
    if scope:
        claims["scope"] = scope
    if sid:
        claims["sid"] = sid
    return IssuedToken(
        token=keyset.sign(claims),
        expires_in=ttl,
        jti=jti,
        kid=keyset.active_kid,
    )


def _aud_claim(audience: Sequence[str]) -> str | list[str]:
    """`aud` as it goes into a token: a string for one audience, else the list."""
    return audience[0] if len(audience) == 1 else list(audience)


@lru_cache(maxsize=8)
def _verification_keys(jwks_json: bytes) -> Mapping[str, VerificationKey]:
    """Our published keys as the verifier library imports them, once per key set."""
    keys, _problems = parse_jwks(json.loads(jwks_json))
    return keys


_HEADERS = jws.HeaderReader()


def verify_access_token(
    keyset: KeySet,
    token: str,
    *,
    issuer: str,
    audiences: Sequence[str] | None,
    leeway: int,
    now: datetime,
) -> dict[str, Any]:
    """The claims of `token` if it is a valid access token signed by one of our keys, by the
    rules of the verifier library other services use (`idp_verifier`), else `InvalidTokenError`
    with the library's client-safe description."""
    try:
        compact = jws.split(token, _HEADERS)
        key = _verification_keys(keyset.jwks_json).get(compact.header.kid)
        if key is None:
            raise UnknownKeyError("no published key has this kid")
        payload = jws.verify_signature(compact, key)
        claims = check_claims(
            payload,
            issuer=issuer,
            audience=_audience_of(payload, audiences),
            leeway=leeway,
            now=now.timestamp(),
        )
    except TokenError as exc:
        raise InvalidTokenError(exc.description) from None
    if not all(_is_numeric_date(claims.raw.get(name)) for name in ("exp", "nbf", "iat")):
        raise InvalidTokenError("The token's dates are not whole seconds.")
    return dict(claims.raw)


def _is_numeric_date(value: object) -> bool:
    """Our tokens' dates are integers (the contract) or absent (nbf); the verifier's finite-float
    rule is the RFC's, ours is narrower."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def has_audience(claims: Mapping[str, Any], audience: str) -> bool:
    """Whether verified `claims` name `audience` in `aud` (a string or a list)."""
    aud = claims.get("aud")
    return aud == audience or (isinstance(aud, list) and audience in aud)


def _audience_of(payload: Mapping[str, Any], audiences: Sequence[str] | None) -> str:
    """The accepted audience the token names (the verifier checks for one), else the first;
    None accepts any audience the token names."""
    aud = payload.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audiences is None:
        return next((item for item in named if isinstance(item, str)), "")
    return next((audience for audience in audiences if audience in named), audiences[0])


def verify_own_access_token(
    keyset: KeySet, settings: Settings, token: str, *, now: datetime, any_audience: bool = False
) -> dict[str, Any]:
    """`verify_access_token` with this server's issuer, audiences (the admin one included)
    and leeway. The admin API additionally requires the admin audience. `any_audience`:
    a token of ours whatever service it is for (introspection, revocation)."""
    return verify_access_token(
        keyset,
        token,
        issuer=settings.issuer,
        audiences=None if any_audience else settings.own_audiences,
        leeway=settings.clock_leeway,
        now=now,
    )
