"""The per-address rate limit of password logins, applied before any bcrypt work."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request

from idp.configuration import metrics
from idp.configuration.exceptions import TooManyRequestsError
from idp.dependencies.client import ClientAddressDep
from idp.services.ratelimit import RateLimiter


async def limit_password_grant(
    request: Request,
    client_address: ClientAddressDep,
    grant_type: Annotated[str | None, Form()] = None,
) -> None:
    """429 with `Retry-After` when this address exceeds `IDP_TOKEN_RATE_LIMIT` password grants
    per minute in this process. Other grants cost no bcrypt and pass."""
    if grant_type != "password":
        return
    _take(request, client_address)


async def limit_password_check(request: Request, client_address: ClientAddressDep) -> None:
    """The same per-address budget for a signed-in user's password check (a password
    change), so a stolen access token does not buy unlimited guesses."""
    _take(request, client_address)


def _take(request: Request, client_address: str) -> None:
    limiter: RateLimiter = request.app.state.token_rate_limiter
    retry_after = limiter.hit(client_address)
    if retry_after is not None:
        metrics.LOGINS.labels(outcome=metrics.RATE_LIMITED).inc()
        raise TooManyRequestsError(
            retry_after, "too many login attempts from this address; retry later"
        )
