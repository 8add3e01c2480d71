"""Strict base64url (RFC 4648 §5, no padding), as JWS and JWK use it."""

from __future__ import annotations

import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def decode(segment: str) -> bytes:
    """Decode unpadded base64url; raise ``ValueError`` on any other character or a bad length.

    ``base64.urlsafe_b64decode`` would silently skip foreign characters, and is slower on
    this hot path; ``binascii`` is given only the checked alphabet, translated and padded.
    """
    if _ALPHABET.fullmatch(segment) is None:
        raise ValueError("not base64url")
    padded = segment + "=" * (-len(segment) % 4)
    return binascii.a2b_base64(padded.encode("ascii").translate(_TO_STANDARD))
