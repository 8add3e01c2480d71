"""Reading a JWS compact token: its three segments, its header, its signature, its payload.

Only what an access token needs is parsed, by hand: no general JOSE machinery, so nothing in
the token (``jwk``, ``jku``, ``x5u``, ``x5c``) can choose a key or cause a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from idp_verifier import _base64url
from idp_verifier.errors import (
    InvalidSignatureError,
    InvalidTypeError,
    MalformedTokenError,
    UnsupportedAlgorithmError,
    shorten,
)
from idp_verifier.keys import SUPPORTED_ALGORITHMS, VerificationKey

#: Longer tokens are refused before any decoding.
MAX_TOKEN_LENGTH = 16 * 1024

#: RFC 9068 §4: the media type, with or without its ``application/`` prefix, any case.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# NaN and Infinity are Python extensions to JSON; a timestamp must never be one.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


@dataclass(frozen=True, slots=True)
class Header:
    """The two header members that matter once the header has passed its checks."""

    alg: str
    kid: str


@dataclass(frozen=True, slots=True)
class CompactToken:
    """A token split into its parts; nothing here is trusted until ``verify_signature``."""

    header: Header
    signing_input: str
    payload_segment: str
    signature_segment: str


class HeaderReader:
    """Checks JOSE headers, remembering the results for the few distinct headers an issuer emits.

    A header segment is a pure function of its text, so its verdict can be reused; the memory
    is small and simply emptied when full (a flood of distinct headers costs only re-parsing).
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max_entries = max_entries
        self._seen: dict[str, Header] = {}

    def read(self, segment: str) -> Header:
        header = self._seen.get(segment)
        if header is None:
            header = parse_header(segment)
            if len(self._seen) >= self._max_entries:
                self._seen.clear()
            self._seen[segment] = header
        return header


def split(token: object, headers: HeaderReader) -> CompactToken:
    """Split a compact token and check its header; raise a ``TokenError`` if it is not one."""
    if not isinstance(token, str):
        raise MalformedTokenError("the token is not a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedTokenError(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedTokenError("the token is not a JWS compact serialization")
    header_segment, payload_segment, signature_segment = parts
    header = headers.read(header_segment)
    signing_input = token[: len(header_segment) + 1 + len(payload_segment)]
    return CompactToken(header, signing_input, payload_segment, signature_segment)


def parse_header(segment: str) -> Header:
    """Decode a header segment and apply every header rule of SECURITY.md."""
    header = _decode_json(segment, "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedTokenError("the token header has no alg")
    if alg not in SUPPORTED_ALGORITHMS:
        raise UnsupportedAlgorithmError(f"algorithm {shorten(alg)} is not accepted")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidTypeError(f"typ {shorten(str(typ))} is not at+jwt")
    if "crit" in header:
        # RFC 7515 §4.1.11: extensions we do not understand make the token unusable.
        raise MalformedTokenError("the token header has critical parameters")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedTokenError("the token header has no kid")
    return Header(alg, kid)


def verify_signature(token: CompactToken, key: VerificationKey) -> dict[str, Any]:
    """Check the signature with ``key``, then decode and return the payload object."""
    if token.header.alg not in key.algorithms:
        raise UnsupportedAlgorithmError(
            f"algorithm {token.header.alg} is not the one of key {shorten(key.kid)}"
        )
    try:
        signature = _base64url.decode(token.signature_segment)
        payload = _base64url.decode(token.payload_segment)
    except ValueError:
        raise MalformedTokenError("the token is not base64url") from None
    if not signature or not key.verify(signature, token.signing_input.encode("ascii")):
        raise InvalidSignatureError(f"the signature does not verify with key {shorten(key.kid)}")
    return _parse_json(payload, "payload")


def _decode_json(segment: str, part: str) -> dict[str, Any]:
    try:
        raw = _base64url.decode(segment)
    except ValueError:
        raise MalformedTokenError(f"the token {part} is not base64url") from None
    return _parse_json(raw, part)


def _parse_json(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = _JSON.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise MalformedTokenError(f"the token {part} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedTokenError(f"the token {part} is not a JSON object")
    return value
