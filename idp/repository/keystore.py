"""The keystore directory: the only code that reads or writes its files.

    manifest.json   the keys and their states; replaced atomically on every change
    <kid>.pem       one PKCS#8 private key per key, mode 0600, encrypted if a passphrase is set
    .lock           held for the whole read-modify-write of every change, across processes

Readers never take the lock: a key file is written before the manifest names it and deleted
only after the manifest stops naming it, and `snapshot` re-reads when the manifest changed
under it. What a change decides (which key to create, promote, retire) is the service's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeGuard

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from filelock import FileLock, Timeout

from idp.configuration.exceptions import KeystoreError

logger = logging.getLogger(__name__)

ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
RSA_BITS: Final = (2048, 3072, 4096)

MANIFEST: Final = "manifest.json"
# The key of the client secrets' HMAC (services/clients.py), beside the signing keys it is
# as secret as; every replica shares it with the keystore.
PEPPER: Final = "client-secret-pepper"
_PEPPER_BYTES = 32
_MANIFEST_VERSION = 1
_LOCK_TIMEOUT = 60.0
_SNAPSHOT_ATTEMPTS = 5
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
Fingerprint: TypeAlias = tuple[int, int, int]


class KeystoreMissingError(KeystoreError):
    """The directory holds no keystore: most likely a wrong IDP_KEYS_DIR."""


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"


_STATE_ORDER = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the manifest describes it; every time is tz-aware UTC.

    `bits` is the key size (the RSA modulus; 256 for ES256 and EdDSA); None for an RSA key of
    a manifest written before sizes were stored, until the next change fills it in.
    """

    kid: str
    alg: str
    state: KeyState
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    removable_after: datetime | None = None
    bits: int | None = None


@dataclass(slots=True)
class Change:
    """The manifest being edited under the lock, and the key files created so far."""

    records: list[KeyRecord]
    created: list[str] = field(default_factory=list)


def key_bits(key: PrivateKey) -> int:
    """The size a key record stores: the RSA modulus, else the curve's size."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.key_size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.curve.key_size
    return 256  # Ed25519


def ordered(records: list[KeyRecord]) -> list[KeyRecord]:
    """Active first, then next, then retired keys oldest first: the order of every listing."""
    return sorted(records, key=lambda r: (_STATE_ORDER[r.state], r.created_at, r.kid))


class KeystoreFiles:
    """The files of one keystore directory; every change is locked, atomic and durable.

    `passphrase` encrypts new private keys and decrypts existing ones; empty means none.
    """

    def __init__(self, directory: Path, passphrase: str | None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase.encode() if passphrase else None
        self._manifest = self.directory / MANIFEST
        self._lock = FileLock(self.directory / ".lock", timeout=_LOCK_TIMEOUT, mode=0o600)

    def exists(self) -> bool:
        """True when the directory holds a manifest, i.e. `idp keys init` ran here."""
        return self.fingerprint() is not None

    def fingerprint(self) -> Fingerprint | None:
        """A cheap identity of manifest.json (mtime, size, inode), to notice a change without
        reading it; None when there is no manifest."""
        try:
            stat = self._manifest.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def read(self) -> list[KeyRecord]:
        """The manifest's keys, active first; KeystoreMissingError when there is none."""
        records = self._read_manifest()
        if records is None:
            raise self._missing()
        return records

    def snapshot(self) -> tuple[list[KeyRecord], dict[str, PrivateKey], Fingerprint]:
        """The keys and their private keys as of one version of the manifest."""
        for _ in range(_SNAPSHOT_ATTEMPTS):
            before = self.fingerprint()
            records = self.read()
            try:
                natives = {r.kid: self._private_key(r) for r in records}
            except FileNotFoundError as exc:
                if self.fingerprint() != before:
                    continue
                name = Path(str(exc.filename)).name
                raise KeystoreError(f"key file {name} named in the manifest is missing") from None
            if before is not None and self.fingerprint() == before:
                return records, natives, before
        raise KeystoreError(f"the keystore {self.directory} kept changing while being read")

    def private_key(self, record: KeyRecord) -> PrivateKey:
        """An existing key, decrypted; reading it also proves the passphrase right."""
        try:
            return self._private_key(record)
        except FileNotFoundError:
            raise KeystoreError(f"key file {record.kid}.pem is missing") from None

    @contextlib.contextmanager
    def change(self, *, create: bool = False) -> Iterator[Change]:
        """Lock, read the manifest, let the caller edit it, then write it if it changed.

        Only with `create` may the directory and its manifest be new; otherwise a directory
        without a manifest is KeystoreMissingError and nothing is written. Key files created
        by a change that fails are removed; files of keys the new manifest no longer names are
        deleted once it is in place.
        """
        if create:
            self._ensure_directory()
        elif not self.exists():
            raise self._missing()
        try:
            self._lock.acquire()
        except Timeout:
            raise KeystoreError(
                f"the keystore {self.directory} is locked by another process; try again"
            ) from None
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing() from None
        try:
            before = self._read_manifest()
            if before is None and not create:
                raise self._missing()  # removed between the check and the lock
            # Sizes missing from an older manifest are read from the key files and written back.
            change = Change(records=[self._with_bits(r) for r in before or []])
            committed = False
            try:
                yield change
                after = ordered(change.records)
                if after != before:
                    if change.created:
                        self._fsync_directory()  # new key files are durable before named
                    self._write_manifest(after)
                committed = True
            finally:
                if not committed:
                    for kid in change.created:
                        self._key_path(kid).unlink(missing_ok=True)
            gone = {r.kid for r in before or []} - {r.kid for r in change.records}
            for kid in gone:
                self._key_path(kid).unlink(missing_ok=True)
            self._fsync_directory()
        finally:
            self._lock.release()

    def add_key(self, change: Change, key: PrivateKey) -> str:
        """Write a new key's file under a fresh kid; the caller adds its record to `change`."""
        taken = {r.kid for r in change.records} | set(change.created)
        kid = secrets.token_urlsafe(16)
        # Never a leading "-": `idp keys revoke -Ab…` would read the kid as an option.
        while kid in taken or kid.startswith("-") or self._key_path(kid).exists():
            kid = secrets.token_urlsafe(16)
        self._write_private_key(kid, key)
        change.created.append(kid)
        return kid

    def remove_orphans(self, named: set[str]) -> None:
        """Delete key files no manifest names: left by a change that died before naming them.

        Call inside `change`, so no change in progress is creating one.
        """
        for path in self.directory.glob("*.pem"):
            if path.stem not in named and _KID.fullmatch(path.stem):
                path.unlink(missing_ok=True)
                logger.info("removed orphan key file %s", path.name)

    def pepper(self) -> bytes:
        """The client-secret pepper, created (0600, 256 random bits) on first use in an
        existing keystore; KeystoreMissingError without one."""
        path = self.directory / PEPPER
        try:
            return self._read_pepper(path)
        except FileNotFoundError:
            pass
        if not self.exists():
            raise self._missing()
        # Written aside, then linked into place: a reader sees no file or a whole one, and of
        # two processes creating it at once the first link wins.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".pepper-")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(_PEPPER_BYTES))
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
        self._fsync_directory()
        return self._read_pepper(path)

    @staticmethod
    def _read_pepper(path: Path) -> bytes:
        value = path.read_text(encoding="ascii").strip()
        if len(value) < 2 * _PEPPER_BYTES:  # a half-written file from a crash is not a key
            raise KeystoreError(f"{path} is shorter than {2 * _PEPPER_BYTES} hex characters")
        return value.encode("ascii")

    # Files

    def _missing(self) -> KeystoreMissingError:
        return KeystoreMissingError(
            f"no keystore in {self.directory} (no {MANIFEST}): check IDP_KEYS_DIR, "
            "or create one with `idp keys init`"
        )

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

    def _read_manifest(self) -> list[KeyRecord] | None:
        """The manifest's keys, or None when there is no manifest."""
        try:
            raw = self._manifest.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
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
        return ordered(records)

    def _write_manifest(self, records: list[KeyRecord]) -> None:
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

    def _with_bits(self, record: KeyRecord) -> KeyRecord:
        """The record with its size, read from its key file for a manifest without sizes."""
        if record.bits is not None:
            return record
        try:
            return replace(record, bits=key_bits(self._private_key(record)))
        except (KeystoreError, OSError):
            return record  # a size is worth no failed change; the next one tries again

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


# Helpers


def _fits(key: object, alg: str) -> TypeGuard[PrivateKey]:
    if alg == "RS256":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    return alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey)


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


def _record_to_json(record: KeyRecord) -> dict[str, str | int | None]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "kid": record.kid,
        "alg": record.alg,
        "bits": record.bits,
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
    # Manifests written before sizes were stored have no `bits`; only RSA sizes vary.
    bits = item.get("bits")
    if bits is None and alg != "RS256":
        bits = 256
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0):
        raise ValueError("bad bits")
    return KeyRecord(
        kid=kid,
        alg=alg,
        state=KeyState(item["state"]),
        created_at=created_at,
        activated_at=stamp(item.get("activated_at")),
        retired_at=stamp(item.get("retired_at")),
        removable_after=stamp(item.get("removable_after")),
        bits=bits,
    )
