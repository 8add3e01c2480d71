"""Access tokens (RFC 9068 profile): issuing with the active key, verifying with our own keys.

Verification follows RFC 8725: the algorithm must be one of our published keys' and that
key's own; the key is found by `kid` only in our key set (never `jwk`, `jku`, `x5u`, `x5c`);
`typ`, `iss`, `aud`, `exp`, `nbf` and `iat` are all checked, and `crit` is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from idp.configuration.exceptions import InvalidRequestError, InvalidTokenError
from idp.configuration.settings import Settings
from idp.repository.keystore import ALGORITHMS
from idp.services.keyring import KeySet

TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
MAX_TOKEN_LENGTH: Final = 8192
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
_REGISTRY = JWSRegistry(algorithms=list(ALGORITHMS))


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
    username: str,
    email: str,
    roles: Sequence[str],
    client_id: str,
    scope: str | None,
    session_id: str | None = None,
    now: int | None = None,
) -> IssuedToken:
    """Sign an access token carrying every claim of the contract.

    `session_id` becomes the `sid` claim: the refresh-token family the token belongs to, so
    the identity service can tell "this session" from the user's other ones.
    """
    issued_at = int(time.time()) if now is None else now
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": settings.token_audience,
        "exp": issued_at + settings.access_token_ttl,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": client_id,
        "username": username,
        "email": email,
        "roles": list(roles),
    }
    if scope:
        claims["scope"] = scope
    if session_id:
        claims["sid"] = session_id
    return IssuedToken(
        token=keyset.sign(claims),
        expires_in=settings.access_token_ttl,
        jti=jti,
        kid=keyset.active_kid,
    )


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def read_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, without trusting anything in it."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidTokenError("malformed token")
    try:
        header = json.loads(_b64decode(token.split(".", 1)[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidTokenError("malformed token") from None
    if not isinstance(header, dict):
        raise InvalidTokenError("malformed token")
    return header


def verify_access_token(
    keyset: KeySet,
    token: str,
    *,
    issuer: str,
    audiences: Sequence[str],
    leeway: int,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of `token` if it is a valid access token signed by one of our keys."""
    header = read_header(token)
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if "crit" in header:
        raise InvalidTokenError("unsupported critical header")
    if not isinstance(alg, str) or alg not in keyset.algorithms:
        raise InvalidTokenError("algorithm not accepted")
    if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
        raise InvalidTokenError("not an access token")
    key = keyset.public_key(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidTokenError("unknown signing key")
    if key.alg != alg:
        raise InvalidTokenError("algorithm does not match the key")
    try:
        payload = jws.deserialize_compact(token, key, algorithms=[alg], registry=_REGISTRY).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, UnicodeDecodeError):
        raise InvalidTokenError("invalid signature") from None
    if not isinstance(claims, dict):
        raise InvalidTokenError("malformed token")
    check_claims(claims, issuer=issuer, audiences=audiences, leeway=leeway, now=now)
    return claims


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Sequence[str],
    leeway: int,
    now: float | None = None,
) -> None:
    """Registered-claim checks shared by every verification: iss, aud, exp, nbf, iat, sub."""
    current = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise InvalidTokenError("wrong issuer")
    aud = claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(token_audiences, list) or not set(audiences) & {
        a for a in token_audiences if isinstance(a, str)
    }:
        raise InvalidTokenError("wrong audience")
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _is_number(exp) or exp <= current - leeway:
        raise InvalidTokenError("token expired")
    if nbf is not None and (not _is_number(nbf) or nbf > current + leeway):
        raise InvalidTokenError("token not yet valid")
    if iat is not None and (not _is_number(iat) or iat > current + leeway):
        raise InvalidTokenError("token issued in the future")
    if not isinstance(claims.get("sub"), str):
        raise InvalidTokenError("token has no subject")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_own_access_token(
    keyset: KeySet, settings: Settings, token: str, *, now: float | None = None
) -> dict[str, Any]:
    """`verify_access_token` with this server's issuer, audiences and leeway."""
    return verify_access_token(
        keyset,
        token,
        issuer=settings.issuer,
        audiences=settings.audience,
        leeway=settings.clock_leeway,
        now=now,
    )
