"""The keys that requests use: an immutable `KeySet` (signing key, public keys, JWKS bytes)
and the `KeyRing` that swaps it when the keystore changes, so readers never lock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from idp.configuration import metrics
from idp.configuration.exceptions import KeystoreError
from idp.repository.keystore import (
    Fingerprint,
    KeyRecord,
    KeyState,
    KeystoreFiles,
    PrivateKey,
)

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 (a media type, not a secret)
_PUBLIC_MEMBERS = frozenset({"kty", "kid", "use", "alg", "n", "e", "crv", "x", "y"})

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
JoseKey: TypeAlias = RSAKey | ECKey | OKPKey

_UNSET: Final = object()


@dataclass(frozen=True, slots=True, eq=False)
class KeySet:
    """An immutable snapshot of the keystore: the key that signs and the keys that verify.

    The JWKS document and its ETag are computed once here, so serving them costs nothing.
    """

    active_kid: str
    active_alg: str
    active_key: JoseKey = field(repr=False)
    public_keys: Mapping[str, JoseKey] = field(repr=False)
    algorithms: frozenset[str]
    jwks_json: bytes = field(repr=False)
    etag: str
    fingerprint: Fingerprint | None
    active_created_at: datetime
    active_activated_at: datetime | None
    records: tuple[KeyRecord, ...]
    _registry: JWSRegistry = field(repr=False)

    def sign(
        self,
        claims: Mapping[str, Any],
        header_extra: Mapping[str, Any] | None = None,
        *,
        typ: str = ACCESS_TOKEN_TYPE,
    ) -> str:
        """A compact JWS of `claims` by the active key; `alg`, `typ`, `kid` cannot be overridden
        (`typ` is an access token's unless an ID token's `JWT` is asked for)."""
        header = {
            **(header_extra or {}),
            "alg": self.active_alg,
            "typ": typ,
            "kid": self.active_kid,
        }
        return jwt.encode(header, dict(claims), self.active_key, registry=self._registry)

    def public_key(self, kid: str) -> JoseKey | None:
        """The published public key with this `kid`, if any; `kid` is only a lookup key."""
        return self.public_keys.get(kid)


def load_keyset(files: KeystoreFiles) -> KeySet:
    """Read the keystore into a `KeySet`; KeystoreError if it is missing or nothing can sign."""
    records, natives, fingerprint = files.snapshot()
    active = next((r for r in records if r.state is KeyState.ACTIVE), None)
    if active is None:
        raise KeystoreError(f"no active signing key in {files.directory}: run `idp keys init`")
    public_keys = {r.kid: _jose_key(natives[r.kid].public_key(), r.kid, r.alg) for r in records}
    jwks = {
        "keys": [
            {k: v for k, v in public_keys[r.kid].as_dict().items() if k in _PUBLIC_MEMBERS}
            for r in records
        ]
    }
    # Sorted and compact, so every replica serves byte-identical JWKS with the same ETag.
    jwks_json = json.dumps(jwks, sort_keys=True, separators=(",", ":")).encode()
    return KeySet(
        active_kid=active.kid,
        active_alg=active.alg,
        active_key=_jose_key(natives[active.kid], active.kid, active.alg),
        public_keys=MappingProxyType(public_keys),
        algorithms=frozenset(r.alg for r in records),
        jwks_json=jwks_json,
        etag=f'"{hashlib.sha256(jwks_json).hexdigest()[:32]}"',
        fingerprint=fingerprint,
        active_created_at=active.created_at,
        active_activated_at=active.activated_at,
        records=tuple(records),
        # Only the active key's algorithm signs; the header is ours, so extra names may pass.
        _registry=JWSRegistry(algorithms=[active.alg], strict_check_header=False),
    )


class KeySource(Protocol):
    """Where a key ring reads its keys from: the keystore service or a test's stand-in."""

    def fingerprint(self) -> Fingerprint | None: ...

    def load(self) -> KeySet: ...


class KeyRing:
    """The current `KeySet` of a server; replaced by one assignment, so readers never lock."""

    def __init__(self, source: KeySource) -> None:
        self._source = source
        self._current = source.load()
        self._failed: object = _UNSET

    @property
    def current(self) -> KeySet:
        return self._current

    def reload_if_changed(self) -> bool:
        """Load the keystore again if its manifest changed; True if the key set was replaced.

        A keystore that fails to load keeps the current keys: serving yesterday's keys beats
        serving none. The warning is logged once per broken manifest, not on every poll.
        """
        fingerprint: object = _UNSET
        try:
            fingerprint = self._source.fingerprint()
            if fingerprint == self._current.fingerprint:
                return False
            keyset = self._source.load()
        except (KeystoreError, OSError) as exc:
            if fingerprint != self._failed:
                logger.warning("keystore reload failed, keeping the current keys: %s", exc)
                metrics.KEY_RELOADS.labels(result="failure").inc()
            self._failed = fingerprint
            return False
        self._current = keyset
        self._failed = _UNSET
        metrics.KEY_RELOADS.labels(result="success").inc()
        logger.info(
            "signing keys reloaded: active %s, %d published", keyset.active_kid, len(keyset.records)
        )
        return True

    async def watch(self, interval: float) -> None:
        """Every `interval` seconds, reload in a worker thread if the keystore changed."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:
                logger.exception("keystore watcher failed; it keeps watching")


def _jose_key(key: PrivateKey | PublicKey, kid: str, alg: str) -> JoseKey:
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSAKey.import_key(key, parameters)
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ECKey.import_key(key, parameters)
    return OKPKey.import_key(key, parameters)
