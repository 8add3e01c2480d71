"""Turning a published JWKS into ready-to-use public keys.

Each key is imported once, when the key set is fetched, into a ``cryptography`` public key
object with its padding and hash chosen up front, so verifying a token is a single call.
Entries that are not usable signature keys are skipped; one bad entry never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idp_verifier import _base64url
from idp_verifier.errors import shorten as _short

#: Every algorithm this library can verify. Symmetric (HS*) and ``none`` are deliberately absent:
#: a verifier holding only public keys must never accept them.
SUPPORTED_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)

MIN_RSA_BITS = 2048

#: Members that only a private key has; a JWKS carrying them has leaked the signing key.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}

_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}

_OKP_ALGORITHMS = {"Ed25519": ("EdDSA", "Ed25519"), "Ed448": ("EdDSA", "Ed448")}

SignatureCheck = Callable[[bytes, bytes], bool]


class UnusableKeyError(ValueError):
    """A JWKS entry that cannot serve to verify signatures."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One published public key, ready to check signatures made with its own algorithm."""

    kid: str
    #: The algorithms this key verifies: its ``alg`` (or the one its type implies), plus the
    #: RFC 9864 name of the same algorithm for an EdDSA key.
    algorithms: frozenset[str]
    #: The JWK's public members; two keys are the same key when these are equal.
    material: tuple[tuple[str, str], ...]
    check: SignatureCheck = field(compare=False, repr=False)

    def verify(self, signature: bytes, signing_input: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``signing_input``."""
        return self.check(signature, signing_input)


def parse_jwks(document: object) -> tuple[dict[str, VerificationKey], list[str]]:
    """Import the usable signature keys of a JWKS document.

    Returns the keys by ``kid`` and a description of every entry that was refused (for the
    log). Keys meant for something other than signatures are skipped without complaint.
    Raises ``ValueError`` when the document is not a key set at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('the document is not a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    problems: list[str] = []
    for index, entry in enumerate(document["keys"]):
        try:
            key = import_jwk(entry)
        except UnusableKeyError as exc:
            problems.append(f"entry {index}: {exc}")
            continue
        if key is None:
            continue
        if key.kid in keys:
            problems.append(f"entry {index}: duplicate kid {_short(key.kid)}, first one kept")
            continue
        keys[key.kid] = key
    return keys, problems


def import_jwk(jwk: object) -> VerificationKey | None:
    """Import one JWK; ``None`` for a key not meant for signatures (``use``/``key_ops``).

    Raises ``UnusableKeyError`` for anything else that cannot be used.
    """
    if not isinstance(jwk, dict):
        raise UnusableKeyError("not a JSON object")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKeyError("no kid")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise UnusableKeyError(f"kid {_short(kid)} carries private or symmetric key material")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise UnusableKeyError(f"kid {_short(kid)} has a non-string alg")
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            return _import_rsa(kid, alg, jwk)
        if kty == "EC":
            return _import_ec(kid, alg, jwk)
        if kty == "OKP":
            return _import_okp(kid, alg, jwk)
    except UnusableKeyError as exc:
        raise UnusableKeyError(f"kid {_short(kid)}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise UnusableKeyError(f"kid {_short(kid)}: invalid {kty} key ({exc})") from None
    raise UnusableKeyError(f"kid {_short(kid)}: unsupported kty {_short(str(kty))}")


def _import_rsa(kid: str, alg: str | None, jwk: Mapping[str, Any]) -> VerificationKey:
    alg = alg or "RS256"
    if alg[:2] not in ("RS", "PS") or alg not in SUPPORTED_ALGORITHMS:
        raise UnusableKeyError(f"alg {_short(alg)} does not suit an RSA key")
    n_text, e_text = _member(jwk, "n"), _member(jwk, "e")
    n = int.from_bytes(_base64url.decode(n_text), "big")
    e = int.from_bytes(_base64url.decode(e_text), "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise UnusableKeyError(f"RSA modulus of {n.bit_length()} bits is too small")
    public_key = rsa.RSAPublicNumbers(e, n).public_key()
    hash_algorithm = _HASHES[alg[2:]]
    pad: padding.AsymmetricPadding
    if alg.startswith("RS"):
        pad = padding.PKCS1v15()
    else:
        pad = padding.PSS(padding.MGF1(hash_algorithm), padding.PSS.DIGEST_LENGTH)

    def check(signature: bytes, signing_input: bytes) -> bool:
        try:
            public_key.verify(signature, signing_input, pad, hash_algorithm)
        except InvalidSignature:
            return False
        return True

    material = (("kty", "RSA"), ("n", n_text), ("e", e_text))
    return VerificationKey(kid, frozenset({alg}), material, check)


def _import_ec(kid: str, alg: str | None, jwk: Mapping[str, Any]) -> VerificationKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _EC_CURVES:
        raise UnusableKeyError(f"unsupported curve {_short(str(crv))}")
    curve, curve_alg = _EC_CURVES[crv]
    if alg is not None and alg != curve_alg:
        raise UnusableKeyError(f"alg {_short(alg)} does not suit curve {crv}")
    size = (curve.key_size + 7) // 8
    x_text, y_text = _member(jwk, "x"), _member(jwk, "y")
    x, y = _base64url.decode(x_text), _base64url.decode(y_text)
    if len(x) != size or len(y) != size:
        raise UnusableKeyError(f"coordinates of the wrong length for {crv}")
    # Raises ValueError when the point is not on the curve.
    public_key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
    ).public_key()
    ecdsa = ec.ECDSA(_HASHES[curve_alg[2:]])

    def check(signature: bytes, signing_input: bytes) -> bool:
        # JWS carries the raw r || s pair (RFC 7518 §3.4); cryptography wants DER.
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), signing_input, ecdsa)
        except InvalidSignature:
            return False
        return True

    material = (("kty", "EC"), ("crv", crv), ("x", x_text), ("y", y_text))
    return VerificationKey(kid, frozenset({curve_alg}), material, check)


def _import_okp(kid: str, alg: str | None, jwk: Mapping[str, Any]) -> VerificationKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _OKP_ALGORITHMS:
        raise UnusableKeyError(f"unsupported curve {_short(str(crv))} for signatures")
    # "EdDSA" and the curve's own name (RFC 9864) are the same algorithm on this key.
    algorithms = frozenset(_OKP_ALGORITHMS[crv])
    if alg is not None and alg not in algorithms:
        raise UnusableKeyError(f"alg {_short(alg)} does not suit curve {crv}")
    x_text = _member(jwk, "x")
    raw = _base64url.decode(x_text)
    public_key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
    if crv == "Ed25519":
        public_key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    else:
        public_key = ed448.Ed448PublicKey.from_public_bytes(raw)

    def check(signature: bytes, signing_input: bytes) -> bool:
        try:
            public_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    return VerificationKey(kid, algorithms, (("kty", "OKP"), ("crv", crv), ("x", x_text)), check)


def _member(jwk: Mapping[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise UnusableKeyError(f"member {name!r} is missing")
    return value
