"""`application/x-www-form-urlencoded` bodies, parsed by hand for the OAuth endpoints and the
sign-in pages: strict UTF-8, a bounded number of fields, each parameter at most once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl

from fastapi import Request

from idp.configuration.exceptions import InvalidRequestError

FORM_TYPE: Final = "application/x-www-form-urlencoded"


async def form_pairs(request: Request, *, max_fields: int) -> list[tuple[str, str]]:
    """The body's name-value pairs; `InvalidRequestError` for another media type, bad UTF-8
    or more than `max_fields` fields."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise InvalidRequestError(f"the body must be {FORM_TYPE}")
    body = await request.body()
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("the form is not valid UTF-8 or has too many fields") from None


def split_values(
    pairs: Iterable[tuple[str, str]], repeatable: frozenset[str] = frozenset()
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Single values by name, and the values of the `repeatable` names; any other parameter
    sent twice is `InvalidRequestError` (RFC 6749 section 3.1)."""
    single: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in repeatable:
            repeated.setdefault(name, []).append(value)
        elif name in single:
            raise InvalidRequestError(f"parameter {name[:40]!r} is repeated")
        else:
            single[name] = value
    return single, repeated
