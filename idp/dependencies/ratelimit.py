"""The per-address rate limit of password logins, applied before any bcrypt work."""

from __future__ import annotations

from fastapi import Request

from idp.configuration import metrics
from idp.configuration.exceptions import TooManyRequestsError
from idp.dependencies.client import ClientAddressDep
from idp.services.ratelimit import TOO_MANY_LOGINS, RateLimiter


async def limit_password_check(request: Request, client_address: ClientAddressDep) -> None:
    """The same per-address budget for a signed-in user's password check (a password
    change), so a stolen access token does not buy unlimited guesses."""
    _take(request, client_address)


def _take(request: Request, client_address: str) -> None:
    limiter: RateLimiter = request.app.state.token_rate_limiter
    try:
        limiter.spend(client_address, TOO_MANY_LOGINS)
    except TooManyRequestsError:
        metrics.LOGINS.labels(outcome=metrics.RATE_LIMITED).inc()
        raise
