"""The one module that turns exceptions into HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from idp.configuration.exceptions import IdpError, OAuthError, ServiceUnavailableError
from idp.schemas.errors import ErrorBody, ValidationErrorBody, ValidationIssue

logger = logging.getLogger(__name__)


def error_response(exc: IdpError) -> JSONResponse:
    """RFC 6749 shape for OAuth errors, `{"detail": ...}` for everything else; the status and
    headers are the error's own."""
    if isinstance(exc, OAuthError):
        body: dict[str, object] = {"error": exc.error, "error_description": exc.message}
    else:
        body = ErrorBody(detail=exc.message).model_dump()
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


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
    # Never echo the input back: it may hold a password. The documented shape, built by it.
    body = ValidationErrorBody(
        detail=[
            ValidationIssue(
                loc=list(error.get("loc", ())),
                msg=error.get("msg", ""),
                type=error.get("type", ""),
            )
            for error in exc.errors()
        ]
    )
    return JSONResponse(body.model_dump(), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Database errors arrive translated (`Database.session`): what reaches here is a bug.
    logger.exception("unhandled error during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IdpError, _idp_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
