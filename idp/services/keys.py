"""The signing keystore on disk, and the in-memory key ring that servers sign and publish from.

One directory, shared by the CLI and every replica:

    manifest.json   the keys and their states; replaced atomically on every change
    <kid>.pem       one PKCS#8 private key per key, mode 0600, encrypted if a passphrase is set
    .lock           held for the whole read-modify-write of every change, across processes

A key is `next` (published, not signing), then `active` (signs; exactly one), then `retired`
(published until `removable_after`, so its last tokens still verify), then pruned. Readers
never take the lock: a key file is written before the manifest names it and deleted only after
the manifest stops naming it, and `load` re-reads when the manifest changed under it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeGuard

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from filelock import FileLock, Timeout
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from idp.configuration import metrics
from idp.configuration.exceptions import KeystoreError, NotFoundError, ValidationFailedError
from idp.configuration.settings import Settings

logger = logging.getLogger(__name__)

ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
RSA_BITS: Final = (2048, 3072, 4096)
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 (a media type, not a secret)

_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1
_LOCK_TIMEOUT = 60.0
_LOAD_ATTEMPTS = 5
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PUBLIC_MEMBERS = frozenset({"kty", "kid", "use", "alg", "n", "e", "crv", "x", "y"})

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
JoseKey: TypeAlias = RSAKey | ECKey | OKPKey
Fingerprint: TypeAlias = tuple[int, int, int]

_UNSET: Final = object()


class RotationTooEarlyError(KeystoreError):
    """The next key has not been published long enough for every JWKS cache to hold it."""

    status_code = 409
    default_message = "rotation refused: the next key was published too recently"

    def __init__(self, wait_seconds: int, message: str | None = None) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"


_STATE_ORDER = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the manifest describes it; every time is tz-aware UTC."""

    kid: str
    alg: str
    state: KeyState
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    removable_after: datetime | None = None


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

    def sign(self, claims: Mapping[str, Any], header_extra: Mapping[str, Any] | None = None) -> str:
        """A compact JWS of `claims` by the active key; `alg`, `typ`, `kid` cannot be overridden."""
        header = {
            **(header_extra or {}),
            "alg": self.active_alg,
            "typ": ACCESS_TOKEN_TYPE,
            "kid": self.active_kid,
        }
        return jwt.encode(header, dict(claims), self.active_key, registry=self._registry)

    def public_key(self, kid: str) -> JoseKey | None:
        """The published public key with this `kid`, if any; `kid` is only a lookup key."""
        return self.public_keys.get(kid)


@dataclass(slots=True)
class _Change:
    """The manifest being edited under the lock, and the key files created so far."""

    records: list[KeyRecord]
    now: datetime
    created: list[str] = field(default_factory=list)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KeyStore:
    """The keystore directory: every change is locked, atomic and durable.

    Synchronous and file-based, so the CLI and a server thread use it alike. `passphrase`
    encrypts new private keys and decrypts existing ones; an empty string means none.
    `retire_grace` is how long a retired key stays published (token lifetime, JWKS cache age
    and clock leeway); `jwks_max_age` is how long a next key must be published before it signs.
    """

    def __init__(
        self,
        directory: Path,
        passphrase: str | None,
        *,
        jwks_max_age: int,
        retire_grace: int,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase.encode() if passphrase else None
        self.jwks_max_age = jwks_max_age
        self.retire_grace = retire_grace
        self._clock = clock
        self._manifest = self.directory / _MANIFEST
        self._lock = FileLock(self.directory / ".lock", timeout=_LOCK_TIMEOUT, mode=0o600)

    # Public operations

    def init(self, alg: str = "RS256", rsa_bits: int = 2048) -> list[KeyRecord]:
        """Make sure there is an active key and a next key; keys already there are kept."""
        _check_algorithm(alg, rsa_bits)
        with self._change() as change:
            active = _find(change.records, KeyState.ACTIVE)
            upcoming = _find(change.records, KeyState.NEXT)
            if active is not None and upcoming is not None:
                return list(change.records)
            if change.records:
                self._existing_key(active or upcoming or change.records[0])
            self._fill(change, alg, rsa_bits)
            return _ordered(change.records)

    def rotate(
        self, *, force: bool = False, alg: str | None = None, rsa_bits: int | None = None
    ) -> list[KeyRecord]:
        """Promote next to active, retire the old active key and publish a new next key.

        Refused while the next key is younger than `jwks_max_age`, since a consumer holding an
        older JWKS would not know it yet, unless `force`. The new next key uses `alg` or the
        promoted key's algorithm, and `rsa_bits` or the promoted RSA key's size. An empty
        keystore is initialised instead.
        """
        if alg is not None or rsa_bits is not None:
            _check_algorithm(alg or "RS256", rsa_bits or RSA_BITS[0])
        with self._change() as change:
            now = change.now
            active = _find(change.records, KeyState.ACTIVE)
            upcoming = _find(change.records, KeyState.NEXT)
            if active is None:
                if upcoming is not None:
                    raise KeystoreError("the keystore has no active key: run `idp keys init`")
                self._fill(change, alg or "RS256", rsa_bits or RSA_BITS[0])
                return _ordered(change.records)

            if upcoming is None:
                if not force:
                    raise RotationTooEarlyError(
                        self.jwks_max_age,
                        "there is no next key to promote: run `idp keys init` to publish one "
                        f"and rotate in {self.jwks_max_age}s, or use --force",
                    )
                template = self._existing_key(active)
                promoted = self._new_key(
                    change, alg or active.alg, _bits(rsa_bits, template), KeyState.ACTIVE
                )
            else:
                wait = self.jwks_max_age - (now - upcoming.created_at).total_seconds()
                if not force and wait > 0:
                    seconds = math.ceil(wait)
                    raise RotationTooEarlyError(
                        seconds,
                        f"the next key {upcoming.kid} was published less than "
                        f"{self.jwks_max_age}s ago: wait {seconds}s or use --force",
                    )
                template = self._existing_key(upcoming)
                promoted = replace(upcoming, state=KeyState.ACTIVE, activated_at=now)

            retired = replace(
                active,
                state=KeyState.RETIRED,
                retired_at=now,
                removable_after=now + timedelta(seconds=self.retire_grace),
            )
            keep = [r for r in change.records if r.kid not in {active.kid, promoted.kid}]
            new_alg = alg or promoted.alg
            new_next = self._new_key(change, new_alg, _bits(rsa_bits, template), KeyState.NEXT)
            change.records = [*keep, retired, promoted, new_next]
            logger.info(
                "keys rotated: %s is active, %s retired, %s next",
                promoted.kid,
                retired.kid,
                new_next.kid,
            )
            return _ordered(change.records)

    # Named after the CLI verb; below it, `builtins.list` spells the type inside this class.
    def list(self) -> list[KeyRecord]:
        """The keys of the manifest, active first; empty if there is no keystore yet."""
        return self._read_manifest()

    def revoke(self, kid: str) -> KeyRecord:
        """Remove a key from the manifest and delete its file at once; return what it was.

        There is always an active and a next key afterwards: revoking the active key promotes
        the next key immediately, with no `jwks_max_age` wait, since a compromised key must
        stop signing now (verifiers refetch the JWKS on an unknown kid); revoking the next key
        publishes a new one. Either way a new next key is created.
        """
        with self._change() as change:
            revoked = next((r for r in change.records if r.kid == kid), None)
            if revoked is None:
                raise NotFoundError(f"no key with kid {kid[:100]!r}")
            change.records = [r for r in change.records if r.kid != kid]
            if revoked.state is not KeyState.RETIRED:
                self._replace_revoked(change, revoked)
            logger.warning("key %s (%s, %s) revoked", revoked.kid, revoked.alg, revoked.state)
            return revoked

    def prune(self) -> builtins.list[str]:
        """Remove retired keys past `removable_after`, and key files the manifest no longer names.

        Returns the kids removed from the manifest.
        """
        with self._change() as change:
            expired = [
                r.kid
                for r in change.records
                if r.state is KeyState.RETIRED
                and r.removable_after is not None
                and r.removable_after <= change.now
            ]
            change.records = [r for r in change.records if r.kid not in expired]
            named = {r.kid for r in change.records} | set(expired)
            for path in self.directory.glob("*.pem"):
                if path.stem not in named and _KID.fullmatch(path.stem):
                    # Left by a change that died between writing the key and the manifest.
                    path.unlink(missing_ok=True)
                    logger.info("removed orphan key file %s", path.name)
            for kid in expired:
                logger.info("retired key %s pruned", kid)
            return expired

    def fingerprint(self) -> Fingerprint | None:
        """A cheap identity of manifest.json (mtime, size, inode), to notice a change without
        reading it; None when there is no manifest."""
        try:
            stat = self._manifest.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def load(self) -> KeySet:
        """Read the manifest and its keys into a `KeySet`; KeystoreError if nothing can sign."""
        for _ in range(_LOAD_ATTEMPTS):
            before = self.fingerprint()
            records = self._read_manifest()
            try:
                natives = {r.kid: self._private_key(r) for r in records}
            except FileNotFoundError as exc:
                if self.fingerprint() != before:
                    continue
                name = Path(str(exc.filename)).name
                raise KeystoreError(f"key file {name} named in the manifest is missing") from None
            if self.fingerprint() == before:
                return _build_keyset(records, natives, before, self.directory)
        raise KeystoreError(f"the keystore {self.directory} kept changing while being read")

    # Changes

    @contextlib.contextmanager
    def _change(self) -> Iterator[_Change]:
        """Lock, read the manifest, let the caller edit it, then write it if it changed.

        Key files created by a change that fails are removed; files of keys the new manifest
        no longer names are deleted once it is in place.
        """
        self._ensure_directory()
        try:
            self._lock.acquire()
        except Timeout:
            raise KeystoreError(
                f"the keystore {self.directory} is locked by another process; try again"
            ) from None
        try:
            before = self._read_manifest()
            change = _Change(records=list(before), now=self._now())
            committed = False
            try:
                yield change
                if _ordered(change.records) != before:
                    if change.created:
                        self._fsync_directory()  # new key files are durable before named
                    self._write_manifest(_ordered(change.records))
                committed = True
            finally:
                if not committed:
                    for kid in change.created:
                        self._key_path(kid).unlink(missing_ok=True)
            gone = {r.kid for r in before} - {r.kid for r in change.records}
            for kid in gone:
                self._key_path(kid).unlink(missing_ok=True)
            self._fsync_directory()
        finally:
            self._lock.release()

    def _fill(self, change: _Change, alg: str, rsa_bits: int) -> None:
        """Create whichever of the active and the next key is missing."""
        for state in (KeyState.ACTIVE, KeyState.NEXT):
            if _find(change.records, state) is None:
                change.records.append(self._new_key(change, alg, rsa_bits, state))

    def _replace_revoked(self, change: _Change, revoked: KeyRecord) -> None:
        """Restore an active and a next key after `revoked` left the manifest."""
        active = _find(change.records, KeyState.ACTIVE)
        upcoming = _find(change.records, KeyState.NEXT)
        survivor = active or upcoming
        template = self._existing_key(survivor) if survivor is not None else None
        if active is None:
            if upcoming is not None:
                promoted = replace(upcoming, state=KeyState.ACTIVE, activated_at=change.now)
                change.records = [r for r in change.records if r.kid != upcoming.kid]
                change.records.append(promoted)
                logger.warning("key %s promoted to active without waiting", promoted.kid)
            else:
                promoted = self._new_key(
                    change, revoked.alg, _bits(None, template), KeyState.ACTIVE
                )
                change.records.append(promoted)
            alg = promoted.alg
        else:
            alg = revoked.alg
        change.records.append(self._new_key(change, alg, _bits(None, template), KeyState.NEXT))

    def _new_key(self, change: _Change, alg: str, rsa_bits: int, state: KeyState) -> KeyRecord:
        """Generate a key, write its file, and return its record (not yet in the manifest)."""
        _check_algorithm(alg, rsa_bits)
        taken = {r.kid for r in change.records} | set(change.created)
        kid = secrets.token_urlsafe(16)
        while kid in taken or self._key_path(kid).exists():
            kid = secrets.token_urlsafe(16)
        self._write_private_key(kid, _generate(alg, rsa_bits))
        change.created.append(kid)
        logger.info("key %s (%s) created as %s", kid, alg, state)
        return KeyRecord(
            kid=kid,
            alg=alg,
            state=state,
            created_at=change.now,
            activated_at=change.now if state is KeyState.ACTIVE else None,
        )

    # Files

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _key_path(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            logger.info("keystore %s created", self.directory)
        elif (info := self.directory.stat()).st_mode & 0o077:
            if info.st_uid == os.geteuid():  # ours (e.g. the repository's keys/): tighten it
                self.directory.chmod(0o700)
                logger.info("keystore %s made private (0700)", self.directory)
            else:
                logger.warning("keystore %s is accessible to other users; use 0700", self.directory)

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_manifest(self) -> builtins.list[KeyRecord]:
        try:
            raw = self._manifest.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise KeystoreError(f"cannot read {self._manifest}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("version") != _MANIFEST_VERSION:
                raise ValueError("unknown version")
            records = [_record_from_json(item) for item in data["keys"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeystoreError(f"{self._manifest} is not a valid keystore manifest") from exc
        _check_consistent(records, self._manifest)
        return _ordered(records)

    def _write_manifest(self, records: builtins.list[KeyRecord]) -> None:
        """Replace manifest.json atomically: a reader sees the old or the new one, whole."""
        document = {"version": _MANIFEST_VERSION, "keys": [_record_to_json(r) for r in records]}
        payload = json.dumps(document, indent=2).encode() + b"\n"
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".manifest.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._manifest)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _write_private_key(self, kid: str, key: PrivateKey) -> None:
        """Write a PKCS#8 PEM created 0600 (never wider, not even for a moment)."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        path = self._key_path(kid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _private_key(self, record: KeyRecord) -> PrivateKey:
        """Read and decrypt a key file; FileNotFoundError is left to the caller."""
        data = self._key_path(record.kid).read_bytes()
        encrypted = b"ENCRYPTED" in data
        if encrypted and not self._passphrase:
            raise KeystoreError(f"key {record.kid} is encrypted: set IDP_KEYS_PASSPHRASE")
        try:
            key = serialization.load_pem_private_key(
                data, password=self._passphrase if encrypted else None
            )
        except (ValueError, TypeError):
            raise KeystoreError(
                f"cannot decrypt key {record.kid}: wrong passphrase or damaged key file"
            ) from None
        if self._passphrase and not encrypted:
            logger.warning("key %s is not encrypted although a passphrase is set", record.kid)
        if not _fits(key, record.alg):
            raise KeystoreError(f"key {record.kid} does not match its algorithm {record.alg}")
        return key

    def _existing_key(self, record: KeyRecord) -> PrivateKey:
        """An existing key that new keys follow; reading it also proves the passphrase right."""
        try:
            return self._private_key(record)
        except FileNotFoundError:
            raise KeystoreError(f"key file {record.kid}.pem is missing") from None


class KeyRing:
    """The current `KeySet` of a server; replaced by one assignment, so readers never lock."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._current = store.load()
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
            fingerprint = self._store.fingerprint()
            if fingerprint == self._current.fingerprint:
                return False
            keyset = self._store.load()
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


def ensure_keystore(store: KeyStore) -> None:
    """Create the first keys on a server's first start; a keystore that can sign is left alone
    (and not even locked, so it may be mounted read-only)."""
    if _find(store.list(), KeyState.ACTIVE) is None:
        store.init()


# Helpers


def _check_algorithm(alg: str, rsa_bits: int) -> None:
    if alg not in ALGORITHMS:
        raise ValidationFailedError(f"unsupported algorithm {alg!r}: use {', '.join(ALGORITHMS)}")
    if alg == "RS256" and rsa_bits not in RSA_BITS:
        raise ValidationFailedError(
            f"unsupported RSA size {rsa_bits}: use {', '.join(map(str, RSA_BITS))}"
        )


def _generate(alg: str, rsa_bits: int) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _fits(key: object, alg: str) -> TypeGuard[PrivateKey]:
    if alg == "RS256":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    return alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey)


def _bits(requested: int | None, template: PrivateKey | None) -> int:
    """The RSA size for a new key: as asked, else that of the key it follows, else 2048."""
    if requested is not None:
        return requested
    if isinstance(template, rsa.RSAPrivateKey) and template.key_size in RSA_BITS:
        return template.key_size
    return RSA_BITS[0]


def _jose_key(key: PrivateKey | PublicKey, kid: str, alg: str) -> JoseKey:
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSAKey.import_key(key, parameters)
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ECKey.import_key(key, parameters)
    return OKPKey.import_key(key, parameters)


def _build_keyset(
    records: list[KeyRecord],
    natives: Mapping[str, PrivateKey],
    fingerprint: Fingerprint | None,
    directory: Path,
) -> KeySet:
    active = _find(records, KeyState.ACTIVE)
    if active is None:
        raise KeystoreError(f"no active signing key in {directory}: run `idp keys init`")
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


def _find(records: list[KeyRecord], state: KeyState) -> KeyRecord | None:
    return next((r for r in records if r.state is state), None)


def _ordered(records: list[KeyRecord]) -> list[KeyRecord]:
    return sorted(records, key=lambda r: (_STATE_ORDER[r.state], r.created_at, r.kid))


def _check_consistent(records: list[KeyRecord], manifest: Path) -> None:
    kids = [r.kid for r in records]
    problems = []
    if len(set(kids)) != len(kids):
        problems.append("duplicate kid")
    for state in (KeyState.ACTIVE, KeyState.NEXT):
        if sum(r.state is state for r in records) > 1:
            problems.append(f"more than one {state} key")
    if problems:
        raise KeystoreError(f"{manifest} is inconsistent: {', '.join(problems)}")


def _record_to_json(record: KeyRecord) -> dict[str, str | None]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "kid": record.kid,
        "alg": record.alg,
        "state": record.state.value,
        "created_at": stamp(record.created_at),
        "activated_at": stamp(record.activated_at),
        "retired_at": stamp(record.retired_at),
        "removable_after": stamp(record.removable_after),
    }


def _record_from_json(item: Mapping[str, Any]) -> KeyRecord:
    def stamp(value: object) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(str(value))
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        return parsed.astimezone(UTC)

    kid, alg = item["kid"], item["alg"]
    # The kid names a file: a tampered manifest must not reach outside the directory.
    if not isinstance(kid, str) or not _KID.fullmatch(kid) or alg not in ALGORITHMS:
        raise ValueError("bad kid or alg")
    created_at = stamp(item["created_at"])
    if created_at is None:
        raise ValueError("created_at is required")
    return KeyRecord(
        kid=kid,
        alg=alg,
        state=KeyState(item["state"]),
        created_at=created_at,
        activated_at=stamp(item.get("activated_at")),
        retired_at=stamp(item.get("retired_at")),
        removable_after=stamp(item.get("removable_after")),
    )


def keystore_for(settings: Settings) -> KeyStore:
    """The keystore the settings name (IDP_KEYS_DIR, IDP_KEYS_PASSPHRASE, lifetimes)."""
    passphrase = settings.keys_passphrase.get_secret_value() if settings.keys_passphrase else None
    return KeyStore(
        settings.keys_dir,
        passphrase,
        jwks_max_age=settings.jwks_max_age,
        retire_grace=settings.key_retire_grace,
    )
