"""Password hashing (bcrypt, off the event loop) and the password policy."""

from __future__ import annotations

import asyncio
import functools
import gzip
import unicodedata
from importlib import resources

import bcrypt

from idp.configuration.constants import BCRYPT_MAX_BYTES
from idp.configuration.exceptions import ValidationFailedError

COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lowercase), read once per process."""
    data = resources.files("idp").joinpath("data", COMMON_PASSWORDS_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip())


def check_policy(
    password: str,
    *,
    min_length: int,
    username: str | None = None,
    email: str | None = None,
) -> None:
    """Refuse what a new password must not be, with a clear 422 (no composition rules).

    Too short, longer than bcrypt can hash whole (never truncated), not valid text, equal to
    the username or email (when they are given), or on the common-password list.
    """
    try:
        data = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. "\ud800" in JSON
        raise ValidationFailedError("the password is not valid Unicode text") from None
    if "\x00" in password:
        raise ValidationFailedError("the password must not contain NUL characters")
    # Count user-perceived characters after NFC, so composed and decomposed forms agree.
    normalized = unicodedata.normalize("NFC", password)
    if len(normalized) < min_length:
        raise ValidationFailedError(f"the password must have at least {min_length} characters")
    if len(data) > BCRYPT_MAX_BYTES:
        raise ValidationFailedError(
            f"the password is longer than {BCRYPT_MAX_BYTES} bytes in UTF-8, "
            "the most bcrypt can use"
        )
    folded = _folded(password)
    local_part = email.rpartition("@")[0] if email else None
    if folded in {_folded(value) for value in (username, email, local_part) if value}:
        raise ValidationFailedError("the password must not be the username or the email address")
    if folded in common_passwords():
        raise ValidationFailedError(
            "the password is too common: it is on a list of frequently used passwords"
        )


def _folded(text: str) -> str:
    """The form compared with the common-password list and the user's names: NFKC with case
    folding, so fullwidth, superscript or differently cased spellings of an entry match too.
    Only for comparing: the password is hashed as typed, so existing hashes stay valid."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).strip()


def is_checkable(password: str) -> bool:
    """False for what no stored password can be: over bcrypt's 72 bytes, or holding NUL."""
    return _encode(password) is not None


def _encode(password: str) -> bytes | None:
    data = password.encode("utf-8", errors="surrogatepass")
    if len(data) > BCRYPT_MAX_BYTES or b"\x00" in data:
        return None
    return data


def hash_password_sync(password: str, rounds: int) -> str:
    data = _encode(password)
    if data is None:
        raise ValidationFailedError(
            f"the password must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8 and contain no NUL"
        )
    return bcrypt.hashpw(data, bcrypt.gensalt(rounds)).decode("ascii")


def verify_password_sync(password: str, password_hash: str) -> bool:
    data = _encode(password)
    if data is None:
        return False
    try:
        return bcrypt.checkpw(data, password_hash.encode("ascii"))
    except ValueError:  # a malformed stored hash never matches
        return False


async def hash_password(password: str, rounds: int) -> str:
    """bcrypt in a worker thread: the GIL is released, the event loop keeps serving."""
    return await asyncio.to_thread(hash_password_sync, password, rounds)


async def verify_password(password: str, password_hash: str) -> bool:
    return await asyncio.to_thread(verify_password_sync, password, password_hash)


def hash_rounds(password_hash: str) -> int:
    """The cost factor stored in a `$2b$NN$...` hash (0 when unreadable)."""
    try:
        return int(password_hash.split("$")[2])
    except (IndexError, ValueError):
        return 0


def needs_rehash(password_hash: str, rounds: int) -> bool:
    return hash_rounds(password_hash) < rounds
