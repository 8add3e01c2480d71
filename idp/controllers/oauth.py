"""OAuth 2.0 endpoints: `/token` (RFC 6749), `/revoke` (RFC 7009), `/introspect` (RFC 7662)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from idp.configuration import metrics
from idp.configuration.exceptions import InvalidRequestError, UnsupportedGrantTypeError
from idp.controllers.errors import NO_STORE
from idp.dependencies.auth import KeySetDep
from idp.dependencies.database import SessionDep, SettingsDep
from idp.schemas.oauth import OAuthErrorBody, TokenResponse
from idp.services import login

router = APIRouter(tags=["oauth"])

FormField = Annotated[str | None, Form()]


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={400: {"model": OAuthErrorBody}, 401: {"model": OAuthErrorBody}},
)
async def token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    grant_type: FormField = None,
    username: FormField = None,
    password: FormField = None,
    scope: FormField = None,
    client_id: FormField = None,
    refresh_token: FormField = None,
) -> JSONResponse:
    """Issue tokens: the `password` grant (OAuth2 password form) and the `refresh_token` grant."""
    if not grant_type:
        raise InvalidRequestError("grant_type is required")
    if grant_type == "password":
        with metrics.count_outcome(metrics.LOGINS):
            if not username or password is None or password == "":
                raise InvalidRequestError("username and password are required")
            result = await login.password_grant(
                session,
                settings,
                keyset,
                username=username,
                password=password,
                client_id=client_id or settings.default_client_id,
                scope=scope,
            )
    else:
        raise UnsupportedGrantTypeError(f"grant_type {grant_type[:40]!r} is not supported")
    return JSONResponse(result.model_dump(exclude_none=True), headers=NO_STORE)
