"""The keystore on disk and the key ring: states, files, rotation rules, locking, reloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from idp.configuration.exceptions import KeystoreError, NotFoundError, ValidationFailedError
from idp.repository.keystore import KeyState, KeystoreMissingError
from idp.services.keyring import KeyRing
from idp.services.keys import KeyStore, RotationTooEarlyError, ensure_keystore

ROOT = Path(__file__).resolve().parents[1]
MAX_AGE = 300
GRACE = 1_000
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
PUBLIC_MEMBERS = {
    "RS256": {"kty", "kid", "use", "alg", "n", "e"},
    "ES256": {"kty", "kid", "use", "alg", "crv", "x", "y"},
    "EdDSA": {"kty", "kid", "use", "alg", "crv", "x"},
}
# joserfc flags the `EdDSA` name as deprecated by RFC 9864 once per process; it is our choice.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys"


def make_store(directory: Path, clock: Clock, passphrase: str | None = None) -> KeyStore:
    return KeyStore(directory, passphrase, jwks_max_age=MAX_AGE, retire_grace=GRACE, clock=clock)


@pytest.fixture
def store(keys_dir: Path, clock: Clock) -> KeyStore:
    return make_store(keys_dir, clock)


def by_state(store: KeyStore) -> dict[KeyState, list[str]]:
    result: dict[KeyState, list[str]] = {state: [] for state in KeyState}
    for record in store.list():
        result[record.state].append(record.kid)
    return result


def pem_files(directory: Path) -> set[str]:
    return {path.stem for path in directory.glob("*.pem")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# init


def test_init_creates_an_active_and_a_next_key_readable_by_the_owner_only(
    store: KeyStore, keys_dir: Path
) -> None:
    records = store.init(alg="ES256")

    assert [r.state for r in records] == [KeyState.ACTIVE, KeyState.NEXT]
    assert mode(keys_dir) == 0o700
    assert pem_files(keys_dir) == {r.kid for r in records}
    for record in records:
        assert mode(keys_dir / f"{record.kid}.pem") == 0o600
        assert record.created_at.tzinfo is not None
    assert records[0].activated_at is not None
    assert records[1].activated_at is None


def test_init_is_idempotent_and_restores_a_missing_next_key(store: KeyStore) -> None:
    first = store.init(alg="EdDSA")
    assert store.init(alg="EdDSA") == first

    store.revoke(first[1].kid)  # leaves a new next; drop it by hand to test init's repair
    manifest = store.directory / "manifest.json"
    document = json.loads(manifest.read_text())
    document["keys"] = [k for k in document["keys"] if k["state"] == "active"]
    manifest.write_text(json.dumps(document))

    records = store.init(alg="EdDSA")
    assert records[0].kid == first[0].kid
    assert [r.state for r in records] == [KeyState.ACTIVE, KeyState.NEXT]


def test_unsupported_algorithm_and_rsa_size_are_refused(store: KeyStore) -> None:
    with pytest.raises(ValidationFailedError):
        store.init(alg="HS256")
    with pytest.raises(ValidationFailedError):
        store.init(alg="RS256", rsa_bits=1024)
    assert not store.exists()


@pytest.mark.parametrize("make_directory", [False, True])
def test_only_init_creates_a_keystore(
    store: KeyStore, keys_dir: Path, make_directory: bool
) -> None:
    if make_directory:  # e.g. the image's empty volume: a directory is not yet a keystore
        keys_dir.mkdir(parents=True)

    for operation in (store.load, store.list, lambda: store.rotate(force=True), store.prune):
        with pytest.raises(KeystoreMissingError) as missing:
            operation()
        assert str(keys_dir) in missing.value.message
        assert "idp keys init" in missing.value.message
    with pytest.raises(KeystoreMissingError):
        store.revoke("some-kid")

    assert store.fingerprint() is None
    assert keys_dir.is_dir() is make_directory
    assert not make_directory or list(keys_dir.iterdir()) == []
    store.init()
    assert store.exists()


# JWKS


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jwks_publishes_public_members_only(store: KeyStore, alg: str) -> None:
    records = store.init(alg=alg)
    keyset = store.load()

    document = json.loads(keyset.jwks_json)
    assert [k["kid"] for k in document["keys"]] == [r.kid for r in records]
    for key in document["keys"]:
        assert set(key) == PUBLIC_MEMBERS[alg]
        assert not set(key) & PRIVATE_MEMBERS
        assert key["use"] == "sig"
        assert key["alg"] == alg
    assert keyset.algorithms == {alg}
    assert keyset.etag == f'"{hashlib.sha256(keyset.jwks_json).hexdigest()[:32]}"'
    assert keyset.active_kid == records[0].kid
    assert set(keyset.public_keys) == {r.kid for r in records}
    assert all(not key.is_private for key in keyset.public_keys.values())
    assert keyset.public_key("../../etc/passwd") is None


def test_two_loads_of_the_same_keystore_serve_identical_bytes(
    store: KeyStore, keys_dir: Path, clock: Clock
) -> None:
    store.init(alg="ES256")
    other = make_store(keys_dir, clock)

    assert other.load().jwks_json == store.load().jwks_json
    assert other.load().etag == store.load().etag


# rotate


def test_rotation_is_refused_until_the_next_key_is_published_for_max_age(
    store: KeyStore, keys_dir: Path, clock: Clock
) -> None:
    store.init(alg="EdDSA")
    before = store.list()
    clock.advance(MAX_AGE - 10)

    with pytest.raises(RotationTooEarlyError) as refused:
        store.rotate()

    assert isinstance(refused.value, KeystoreError)
    assert refused.value.wait_seconds == 10
    assert "10s" in refused.value.message
    assert "--force" in refused.value.message
    assert store.list() == before
    assert pem_files(keys_dir) == {r.kid for r in before}


def test_rotation_with_force_skips_the_wait(store: KeyStore) -> None:
    _, old_next = store.init(alg="EdDSA")

    records = store.rotate(force=True)

    assert records[0].kid == old_next.kid
    assert records[0].state is KeyState.ACTIVE


def test_rotation_promotes_next_and_retires_the_active_key(
    store: KeyStore, keys_dir: Path, clock: Clock
) -> None:
    old_active, old_next = store.init(alg="EdDSA")
    clock.advance(MAX_AGE)

    records = store.rotate()

    active, upcoming, retired = records
    assert (active.kid, active.state) == (old_next.kid, KeyState.ACTIVE)
    assert active.created_at == old_next.created_at
    assert active.activated_at == clock.now
    assert (retired.kid, retired.state) == (old_active.kid, KeyState.RETIRED)
    assert retired.retired_at == clock.now
    assert retired.removable_after == clock.now + timedelta(seconds=GRACE)
    assert upcoming.state is KeyState.NEXT
    assert upcoming.kid not in {old_active.kid, old_next.kid}
    assert upcoming.created_at == clock.now
    assert store.list() == records
    assert pem_files(keys_dir) == {r.kid for r in records}

    keyset = store.load()
    assert keyset.active_kid == old_next.kid
    assert set(keyset.public_keys) == {r.kid for r in records}


def test_rotation_can_change_the_algorithm_of_the_new_next_key(store: KeyStore) -> None:
    store.init(alg="EdDSA")

    active, upcoming, _ = store.rotate(force=True, alg="ES256")

    assert (active.alg, upcoming.alg) == ("EdDSA", "ES256")
    assert store.load().algorithms == {"EdDSA", "ES256"}


def test_new_rsa_keys_keep_the_size_of_the_key_they_follow(store: KeyStore) -> None:
    store.init(alg="RS256", rsa_bits=3072)

    store.rotate(force=True)

    keys = store.load().public_keys.values()
    assert {key.public_key.key_size for key in keys if isinstance(key, RSAKey)} == {3072}
    assert len(keys) == 3


def test_rotation_keeps_a_4096_bit_size_and_the_algorithm_unless_told(store: KeyStore) -> None:
    store.init(alg="RS256", rsa_bits=4096)

    records = store.rotate(force=True)

    assert {(r.alg, r.bits) for r in records} == {("RS256", 4096)}
    _, upcoming, *_ = store.rotate(force=True, rsa_bits=3072)
    assert (upcoming.alg, upcoming.bits) == ("RS256", 3072)
    _, upcoming, *_ = store.rotate(force=True, alg="ES256")
    assert (upcoming.alg, upcoming.bits) == ("ES256", 256)


def test_init_completes_a_keystore_with_keys_like_the_existing_ones(store: KeyStore) -> None:
    active, old_next = store.init(alg="RS256", rsa_bits=3072)
    manifest = store.directory / "manifest.json"
    document = json.loads(manifest.read_text())
    document["keys"] = [k for k in document["keys"] if k["state"] == "active"]
    manifest.write_text(json.dumps(document))

    records = store.init()

    assert records[0] == active
    assert (records[1].alg, records[1].bits) == ("RS256", 3072)
    assert records[1].kid != old_next.kid


def test_a_manifest_without_sizes_is_read_and_completed_at_the_next_change(
    store: KeyStore,
) -> None:
    store.init(alg="RS256", rsa_bits=3072)
    manifest = store.directory / "manifest.json"
    document = json.loads(manifest.read_text())
    for key in document["keys"]:
        del key["bits"]  # as written before sizes were stored
    manifest.write_text(json.dumps(document))

    assert {r.bits for r in store.list()} == {None}
    assert store.load().active_kid == store.list()[0].kid
    records = store.rotate(force=True)

    assert {r.bits for r in records} == {3072}
    assert {k["bits"] for k in json.loads(manifest.read_text())["keys"]} == {3072}


# prune and revoke


def test_prune_removes_only_retired_keys_past_their_grace(
    store: KeyStore, keys_dir: Path, clock: Clock
) -> None:
    first, _ = store.init(alg="EdDSA")
    store.rotate(force=True)
    clock.advance(GRACE / 2)
    second = store.list()[0]
    store.rotate(force=True)
    assert store.prune() == []

    clock.advance(GRACE / 2)
    assert store.prune() == [first.kid]

    states = by_state(store)
    assert states[KeyState.RETIRED] == [second.kid]
    assert first.kid not in pem_files(keys_dir)
    assert first.kid not in store.load().public_keys


def test_prune_deletes_key_files_no_manifest_names(store: KeyStore, keys_dir: Path) -> None:
    records = store.init(alg="EdDSA")
    orphan = keys_dir / "left-by-a-crash.pem"
    orphan.write_bytes(b"junk")

    store.prune()

    assert pem_files(keys_dir) == {r.kid for r in records}


def test_revoking_a_retired_key_removes_it_at_once(store: KeyStore, keys_dir: Path) -> None:
    old_active, _ = store.init(alg="EdDSA")
    store.rotate(force=True)

    revoked = store.revoke(old_active.kid)

    assert revoked.kid == old_active.kid
    assert old_active.kid not in {r.kid for r in store.list()}
    assert old_active.kid not in pem_files(keys_dir)
    assert old_active.kid.encode() not in store.load().jwks_json


def test_revoking_the_active_key_promotes_next_at_once(store: KeyStore, keys_dir: Path) -> None:
    old_active, old_next = store.init(alg="ES256")

    store.revoke(old_active.kid)

    states = by_state(store)
    assert states[KeyState.ACTIVE] == [old_next.kid]
    assert len(states[KeyState.NEXT]) == 1
    assert old_active.kid not in pem_files(keys_dir)
    assert store.load().active_kid == old_next.kid


def test_revoking_the_next_key_publishes_a_new_one(store: KeyStore) -> None:
    old_active, old_next = store.init(alg="EdDSA")

    store.revoke(old_next.kid)

    states = by_state(store)
    assert states[KeyState.ACTIVE] == [old_active.kid]
    assert len(states[KeyState.NEXT]) == 1
    assert states[KeyState.NEXT] != [old_next.kid]


@pytest.mark.parametrize("kid", ["nope", "../manifest", "manifest.json", "x" * 10_000])
def test_revoking_an_unknown_kid_is_not_found_and_touches_nothing(
    store: KeyStore, keys_dir: Path, kid: str
) -> None:
    records = store.init(alg="EdDSA")

    with pytest.raises(NotFoundError):
        store.revoke(kid)

    assert store.list() == records
    assert (keys_dir / "manifest.json").exists()


# passphrase


def test_with_a_passphrase_keys_are_encrypted_at_rest(keys_dir: Path, clock: Clock) -> None:
    store = make_store(keys_dir, clock, passphrase="correct horse")
    records = store.init(alg="ES256")

    for record in records:
        pem = (keys_dir / f"{record.kid}.pem").read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert store.load().active_kid == records[0].kid


@pytest.mark.parametrize("passphrase", ["wrong", None])
def test_a_wrong_or_missing_passphrase_is_a_clear_keystore_error(
    keys_dir: Path, clock: Clock, passphrase: str | None
) -> None:
    make_store(keys_dir, clock, passphrase="correct horse").init(alg="EdDSA")
    store = make_store(keys_dir, clock, passphrase=passphrase)

    with pytest.raises(KeystoreError) as failed:
        store.load()

    message = failed.value.message
    assert "\n" not in message
    assert "PRIVATE KEY" not in message
    assert "passphrase" in message.lower()


def test_no_keys_are_written_under_a_wrong_passphrase(keys_dir: Path, clock: Clock) -> None:
    records = make_store(keys_dir, clock, passphrase="correct horse").init(alg="EdDSA")
    store = make_store(keys_dir, clock, passphrase="wrong")

    with pytest.raises(KeystoreError):
        store.rotate(force=True)

    assert store.list() == records
    assert pem_files(keys_dir) == {r.kid for r in records}


def test_a_garbage_manifest_is_a_keystore_error(store: KeyStore) -> None:
    store.init(alg="EdDSA")
    (store.directory / "manifest.json").write_text('{"version": 1, "keys": [{"kid": "../x"}]}')

    with pytest.raises(KeystoreError, match="not a valid keystore manifest"):
        store.load()
    with pytest.raises(KeystoreError):
        store.rotate(force=True)


# Concurrency across processes

CHILD = """
import sys, time
from pathlib import Path
from idp.services.keys import KeyStore

directory, name = Path(sys.argv[1]), sys.argv[2]
(directory.parent / f"ready-{name}").touch()
while not (directory.parent / "go").exists():
    time.sleep(0.001)
KeyStore(directory, None, jwks_max_age=300, retire_grace=60).rotate(force=True)
"""


@pytest.mark.slow
def test_concurrent_rotations_in_separate_processes_serialise(
    store: KeyStore, keys_dir: Path
) -> None:
    store.init(alg="ES256")
    count = 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(keys_dir), str(i)], env=env)
        for i in range(count)
    ]
    deadline = time.monotonic() + 30
    while len(list(keys_dir.parent.glob("ready-*"))) < count:
        assert time.monotonic() < deadline, "children did not start"
        time.sleep(0.01)
    (keys_dir.parent / "go").touch()
    assert [child.wait(timeout=60) for child in children] == [0] * count

    states = by_state(store)
    assert len(states[KeyState.ACTIVE]) == 1
    assert len(states[KeyState.NEXT]) == 1
    # No rotation was lost: each one retired a distinct key.
    assert len(states[KeyState.RETIRED]) == count
    assert pem_files(keys_dir) == {r.kid for r in store.list()}
    assert store.load().active_kid == states[KeyState.ACTIVE][0]


# Signing


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_signed_tokens_verify_with_pyjwt_against_the_jwks(store: KeyStore, alg: str) -> None:
    store.init(alg=alg)
    keyset = store.load()
    claims: dict[str, Any] = {"sub": "42", "iss": "https://idp.example", "exp": 4_102_444_800}

    token = keyset.sign(claims, {"alg": "none", "kid": "forged", "x-extra": "kept"})

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["kid"] == keyset.active_kid
    assert header["alg"] == alg
    assert header["x-extra"] == "kept"
    jwks = json.loads(keyset.jwks_json)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    decoded = jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg])
    assert decoded == claims


def test_tokens_of_a_retired_key_still_verify_with_the_new_jwks(store: KeyStore) -> None:
    store.init(alg="ES256")
    token = store.load().sign({"sub": "1"})
    store.rotate(force=True)

    keyset = store.load()
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid != keyset.active_kid
    jwk = next(k for k in json.loads(keyset.jwks_json)["keys"] if k["kid"] == kid)
    assert jwt.decode(token, jwt.PyJWK(jwk), algorithms=["ES256"]) == {"sub": "1"}


# Key ring


def test_key_ring_picks_up_a_rotation_by_another_store(
    store: KeyStore, keys_dir: Path, clock: Clock
) -> None:
    _, old_next = store.init(alg="EdDSA")
    ring = KeyRing(store)
    assert ring.reload_if_changed() is False

    make_store(keys_dir, clock).rotate(force=True)

    assert ring.reload_if_changed() is True
    assert ring.current.active_kid == old_next.kid
    assert ring.current.fingerprint == store.fingerprint()
    assert ring.reload_if_changed() is False


def test_key_ring_keeps_its_keys_when_the_manifest_breaks(
    store: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.init(alg="EdDSA")
    ring = KeyRing(store)
    before = ring.current
    (store.directory / "manifest.json").write_bytes(b"\x00garbage{")

    with caplog.at_level(logging.WARNING, logger="idp.services.keyring"):
        assert ring.reload_if_changed() is False
        assert ring.reload_if_changed() is False

    assert ring.current is before
    assert len([r for r in caplog.records if "keeping the current keys" in r.message]) == 1


async def test_key_ring_watch_reloads_until_cancelled(store: KeyStore) -> None:
    store.init(alg="EdDSA")
    ring = KeyRing(store)
    before = ring.current.active_kid
    watcher = asyncio.create_task(ring.watch(0.01))
    try:
        await asyncio.to_thread(store.rotate, force=True)
        for _ in range(500):
            if ring.current.active_kid != before:
                break
            await asyncio.sleep(0.01)
        assert ring.current.active_kid != before
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def test_ensure_keystore_creates_keys_once(store: KeyStore) -> None:
    ensure_keystore(store)
    records = store.list()
    assert [r.state for r in records] == [KeyState.ACTIVE, KeyState.NEXT]

    ensure_keystore(store)

    assert store.list() == records


def test_no_kid_starts_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kid like `-ITv…` would be read as an option by `idp keys revoke`."""
    from idp.repository import keystore as keystore_module

    drawn = iter(["-starts-with-dash", "plain-kid"])
    monkeypatch.setattr(keystore_module.secrets, "token_urlsafe", lambda _n: next(drawn))
    files = keystore_module.KeystoreFiles(tmp_path, None)
    with files.change(create=True) as change:
        kid = files.add_key(change, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert kid == "plain-kid"
