"""The one module that turns exceptions into HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from idp.configuration.database import is_unavailable
from idp.configuration.exceptions import (
    AuthenticationError,
    IdpError,
    OAuthError,
    ServiceUnavailableError,
    TooManyRequestsError,
)

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def error_response(exc: IdpError) -> JSONResponse:
    """RFC 6749 shape for OAuth errors, `{"detail": ...}` for everything else."""
    headers: dict[str, str] = {}
    if isinstance(exc, OAuthError):
        body: dict[str, object] = {"error": exc.error, "error_description": exc.message}
        headers.update(NO_STORE)
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Basic realm="idp"'
    else:
        body = {"detail": exc.message}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = getattr(exc, "www_authenticate", None) or (
            f'Bearer error="invalid_token", error_description="{exc.message}"'
            if exc.message != AuthenticationError.default_message
            else "Bearer"
        )
    if isinstance(exc, TooManyRequestsError):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _idp_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdpError)
    if isinstance(exc, ServiceUnavailableError):
        # The cause's type only: a driver's message may quote statement parameters. The
        # request id on the line ties it to the request's access line.
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "-"
        logger.warning("%s (%s)", exc.message, cause)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may hold a password.
    details = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": details}, status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        logger.warning("database unavailable during %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "service temporarily unavailable"}, status_code=503)
    logger.exception("unhandled error during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IdpError, _idp_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
