"""The signing keys' lifecycle: which key to create, promote, retire, revoke or prune, and when.

A key is `next` (published, not signing), then `active` (signs; exactly one), then `retired`
(published until `removable_after`, so its last tokens still verify), then pruned. The files
live in `idp.repository.keystore`; the keys requests use, in `idp.services.keyring`.

Only `init` creates a keystore: every other operation on a directory without one fails with
a message naming it, so a mistyped IDP_KEYS_DIR is never silently a new, empty keystore.
"""

from __future__ import annotations

import builtins
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import KeystoreError, NotFoundError, ValidationFailedError
from idp.configuration.settings import Settings
from idp.repository.keystore import (
    ALGORITHMS,
    RSA_BITS,
    Change,
    Fingerprint,
    KeystoreFiles,
    PrivateKey,
    key_bits,
    ordered,
)
from idp.repository.keystore import (
    KeyRecord as KeyRecord,
)
from idp.repository.keystore import (
    KeyState as KeyState,
)
from idp.services import audit
from idp.services.keyring import KeySet, load_keyset
from idp.services.permissions import Actor

logger = logging.getLogger(__name__)


class RotationTooEarlyError(KeystoreError):
    """The next key has not been published long enough for every JWKS cache to hold it."""

    status_code = 409
    default_message = "rotation refused: the next key was published too recently"

    def __init__(self, wait_seconds: int, message: str | None = None) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KeyStore:
    """The keystore's rules over its files. Synchronous, so the CLI and a server thread use it
    alike.

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
        self.files = KeystoreFiles(directory, passphrase)
        self.directory = self.files.directory
        self.jwks_max_age = jwks_max_age
        self.retire_grace = retire_grace
        self._clock = clock
        # Told before and after each key generation (RSA-4096 takes seconds): the CLI's progress.
        self.progress: Callable[[str], None] | None = None

    def init(self, alg: str | None = None, rsa_bits: int | None = None) -> list[KeyRecord]:
        """Create the keystore, or complete it with an active and a next key; keys already
        there are kept. New keys follow the existing ones unless `alg`/`rsa_bits` say else."""
        if alg is not None or rsa_bits is not None:
            _check_algorithm(alg or "RS256", rsa_bits or RSA_BITS[0])
        with self.files.change(create=True) as change:
            active = _find(change.records, KeyState.ACTIVE)
            upcoming = _find(change.records, KeyState.NEXT)
            if active is not None and upcoming is not None:
                return list(change.records)
            follow = active or upcoming or (change.records[0] if change.records else None)
            template = self.files.private_key(follow) if follow is not None else None
            new_alg = alg or (follow.alg if follow is not None else "RS256")
            now = self._now()
            for state in (KeyState.ACTIVE, KeyState.NEXT):
                if _find(change.records, state) is None:
                    bits = _bits(rsa_bits, template)
                    change.records.append(self._new_key(change, now, new_alg, bits, state))
            return ordered(change.records)

    def rotate(
        self, *, force: bool = False, alg: str | None = None, rsa_bits: int | None = None
    ) -> list[KeyRecord]:
        """Promote next to active, retire the old active key and publish a new next key.

        Refused while the next key is younger than `jwks_max_age`, since a consumer holding an
        older JWKS would not know it yet, unless `force`. The new next key uses `alg` or the
        promoted key's algorithm, and `rsa_bits` or the promoted RSA key's size.
        """
        if alg is not None or rsa_bits is not None:
            _check_algorithm(alg or "RS256", rsa_bits or RSA_BITS[0])
        with self.files.change() as change:
            now = self._now()
            active = _find(change.records, KeyState.ACTIVE)
            upcoming = _find(change.records, KeyState.NEXT)
            if active is None:
                raise KeystoreError("the keystore has no active key: run `idp keys init`")

            if upcoming is None:
                if not force:
                    raise RotationTooEarlyError(
                        self.jwks_max_age,
                        "there is no next key to promote: run `idp keys init` to publish one "
                        f"and rotate in {self.jwks_max_age}s, or use --force",
                    )
                template = self.files.private_key(active)
                promoted = self._new_key(
                    change, now, alg or active.alg, _bits(rsa_bits, template), KeyState.ACTIVE
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
                template = self.files.private_key(upcoming)
                promoted = replace(upcoming, state=KeyState.ACTIVE, activated_at=now)

            retired = replace(
                active,
                state=KeyState.RETIRED,
                retired_at=now,
                removable_after=now + timedelta(seconds=self.retire_grace),
            )
            keep = [r for r in change.records if r.kid not in {active.kid, promoted.kid}]
            new_alg = alg or promoted.alg
            new_next = self._new_key(change, now, new_alg, _bits(rsa_bits, template), KeyState.NEXT)
            change.records = [*keep, retired, promoted, new_next]
            logger.info(
                "keys rotated: %s is active, %s retired, %s next",
                promoted.kid,
                retired.kid,
                new_next.kid,
            )
            return ordered(change.records)

    # Named after the CLI verb; below it, `builtins.list` spells the type inside this class.
    def list(self) -> list[KeyRecord]:
        """The keys of the manifest, active first; KeystoreError when there is no keystore."""
        return self.files.read()

    def exists(self) -> bool:
        return self.files.exists()

    def revoke(self, kid: str) -> KeyRecord:
        """Remove a key from the manifest and delete its file at once; return what it was.

        There is always an active and a next key afterwards: revoking the active key promotes
        the next key immediately, with no `jwks_max_age` wait, since a compromised key must
        stop signing now (verifiers refetch the JWKS on an unknown kid); revoking the next key
        publishes a new one. Either way a new next key is created.
        """
        with self.files.change() as change:
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
        with self.files.change() as change:
            now = self._now()
            expired = [
                r.kid
                for r in change.records
                if r.state is KeyState.RETIRED
                and r.removable_after is not None
                and r.removable_after <= now
            ]
            change.records = [r for r in change.records if r.kid not in expired]
            self.files.remove_orphans({r.kid for r in change.records} | set(expired))
            for kid in expired:
                logger.info("retired key %s pruned", kid)
            return expired

    def fingerprint(self) -> Fingerprint | None:
        return self.files.fingerprint()

    def load(self) -> KeySet:
        """The keys requests use; KeystoreError if there is no keystore or nothing can sign."""
        return load_keyset(self.files)

    # Changes

    def _replace_revoked(self, change: Change, revoked: KeyRecord) -> None:
        """Restore an active and a next key after `revoked` left the manifest."""
        now = self._now()
        active = _find(change.records, KeyState.ACTIVE)
        upcoming = _find(change.records, KeyState.NEXT)
        survivor = active or upcoming
        template = self.files.private_key(survivor) if survivor is not None else None
        if active is None:
            if upcoming is not None:
                promoted = replace(upcoming, state=KeyState.ACTIVE, activated_at=now)
                change.records = [r for r in change.records if r.kid != upcoming.kid]
                change.records.append(promoted)
                logger.warning("key %s promoted to active without waiting", promoted.kid)
            else:
                promoted = self._new_key(
                    change, now, revoked.alg, _bits(None, template), KeyState.ACTIVE
                )
                change.records.append(promoted)
            alg = promoted.alg
        else:
            alg = revoked.alg
        change.records.append(self._new_key(change, now, alg, _bits(None, template), KeyState.NEXT))

    def _new_key(
        self, change: Change, now: datetime, alg: str, rsa_bits: int, state: KeyState
    ) -> KeyRecord:
        """Generate a key, write its file, and return its record (not yet in the manifest)."""
        _check_algorithm(alg, rsa_bits)
        if self.progress is not None:
            self.progress(f"generating {key_label(alg, rsa_bits)} key ({state.value})…")
        started = time.monotonic()
        key = _generate(alg, rsa_bits)
        if self.progress is not None:
            self.progress(f"done in {time.monotonic() - started:.1f} s")
        kid = self.files.add_key(change, key)
        logger.info("key %s (%s) created as %s", kid, alg, state)
        return KeyRecord(
            kid=kid,
            alg=alg,
            state=state,
            created_at=now,
            activated_at=now if state is KeyState.ACTIVE else None,
            bits=key_bits(key),
        )

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)


def ensure_keystore(store: KeyStore) -> None:
    """Create the first keys on the first start of the development server (`serve
    --init-keys`); a keystore that can sign is left alone (and not even locked, so it may be
    mounted read-only)."""
    if not store.exists() or _find(store.list(), KeyState.ACTIVE) is None:
        store.init()


# The audit log: changes an operator makes to the keys, when a database is configured.


async def record_rotation(
    session: AsyncSession, actor: Actor, records: builtins.list[KeyRecord], *, forced: bool
) -> None:
    """Audit a rotation from the keystore it left: the new active key, the next key after it,
    and the key it retired (the one retired last)."""
    active = _find(records, KeyState.ACTIVE)
    upcoming = _find(records, KeyState.NEXT)
    retired = [r for r in records if r.state is KeyState.RETIRED and r.retired_at is not None]
    if active is None or upcoming is None:
        return
    await _record(
        session,
        actor,
        "key.rotate",
        active,
        retired=max(retired, key=lambda r: r.retired_at or r.created_at).kid if retired else None,
        next=upcoming.kid,
        next_alg=upcoming.alg,
        next_bits=upcoming.bits,
        forced=forced,
    )


async def record_revocation(session: AsyncSession, actor: Actor, revoked: KeyRecord) -> None:
    await _record(session, actor, "key.revoke", revoked, state=revoked.state.value)


async def record_prune(session: AsyncSession, actor: Actor, kids: builtins.list[str]) -> None:
    for kid in kids:
        await audit.record(session, actor, "key.prune", target_type="key", target_id=kid)


async def _record(
    session: AsyncSession, actor: Actor, action: str, key: KeyRecord, **details: Any
) -> None:
    await audit.record(
        session,
        actor,
        action,
        target_type="key",
        target_id=key.kid,
        details={"alg": key.alg, "bits": key.bits, **details},
    )


# Helpers


def _check_algorithm(alg: str, rsa_bits: int) -> None:
    if alg not in ALGORITHMS:
        raise ValidationFailedError(f"unsupported algorithm {alg!r}: use {', '.join(ALGORITHMS)}")
    if alg == "RS256" and rsa_bits not in RSA_BITS:
        raise ValidationFailedError(
            f"unsupported RSA size {rsa_bits}: use {', '.join(map(str, RSA_BITS))}"
        )


def key_label(alg: str, rsa_bits: int) -> str:
    """`RSA-4096`, `ES256` or `EdDSA`: what an operator waits for."""
    return f"RSA-{rsa_bits}" if alg == "RS256" else alg


def _generate(alg: str, rsa_bits: int) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _bits(requested: int | None, template: PrivateKey | None) -> int:
    """The RSA size for a new key: as asked, else that of the key it follows, else 2048."""
    if requested is not None:
        return requested
    if isinstance(template, rsa.RSAPrivateKey) and template.key_size in RSA_BITS:
        return template.key_size
    return RSA_BITS[0]


def _find(records: builtins.list[KeyRecord], state: KeyState) -> KeyRecord | None:
    return next((r for r in records if r.state is state), None)


def keystore_for(settings: Settings) -> KeyStore:
    """The keystore the settings name (IDP_KEYS_DIR, IDP_KEYS_PASSPHRASE, lifetimes)."""
    passphrase = settings.keys_passphrase.get_secret_value() if settings.keys_passphrase else None
    return KeyStore(
        settings.keys_dir,
        passphrase,
        jwks_max_age=settings.jwks_max_age,
        retire_grace=settings.key_retire_grace,
    )
