"""Errors carry their own status and headers; the handler only picks the body shape."""

from __future__ import annotations

import json

import pytest

from idp.configuration.exceptions import (
    AuthenticationError,
    IdpError,
    InvalidGrantError,
    InvalidTokenError,
    NotFoundError,
    TooManyRequestsError,
)
from idp.controllers.errors import error_response


@pytest.mark.parametrize(
    ("error", "status", "headers", "body"),
    [
        (
            AuthenticationError(),
            401,
            {"www-authenticate": "Bearer"},
            {"detail": "not authenticated"},
        ),
        (
            InvalidTokenError("token expired"),
            401,
            {"www-authenticate": 'Bearer error="invalid_token", error_description="token expired"'},
            {"detail": "token expired"},
        ),
        (TooManyRequestsError(7), 429, {"retry-after": "7"}, {"detail": "too many requests"}),
        (
            InvalidGrantError(),
            400,
            {"cache-control": "no-store", "pragma": "no-cache"},
            {"error": "invalid_grant", "error_description": "invalid credentials or grant"},
        ),
        (NotFoundError("user not found"), 404, {}, {"detail": "user not found"}),
    ],
)
def test_an_error_answers_with_its_own_status_and_headers(
    error: IdpError, status: int, headers: dict[str, str], body: dict[str, str]
) -> None:
    assert error.status_code == status
    assert {name.lower(): value for name, value in error.headers.items()} == headers
    response = error_response(error)
    assert response.status_code == status
    assert {name: response.headers[name] for name in headers} == headers
    assert json.loads(bytes(response.body)) == body
