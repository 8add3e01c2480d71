"""OAuth 2.0 endpoints: `/token` (RFC 6749), `/revoke` (RFC 7009), `/introspect` (RFC 7662)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse

from idp.configuration import metrics
from idp.configuration.exceptions import (
    NO_STORE,
    InvalidRequestError,
    UnsupportedGrantTypeError,
)
from idp.dependencies.authentication import KeySetDep
from idp.dependencies.client import ClientAddressDep
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import DatabaseDep, SessionDep, SettingsDep
from idp.dependencies.permissions import TokensIntrospect
from idp.dependencies.ratelimit import limit_password_grant
from idp.schemas.oauth import IntrospectionResponse, OAuthErrorBody, TokenResponse
from idp.services import oauth

router = APIRouter(tags=["oauth"])

FormField = Annotated[str | None, Form()]
# RFC 8707: repeatable; each value one of IDP_AUDIENCE, or IDP_ADMIN_AUDIENCE alone.
ResourceField = Annotated[
    list[str] | None,
    Form(description="RFC 8707 resource indicator(s): the token's audience"),
]


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={
        400: {"model": OAuthErrorBody},
        401: {"model": OAuthErrorBody},
        429: {"description": "too many password grants from this address; see Retry-After"},
    },
    dependencies=[Depends(limit_password_grant)],
)
async def token(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    client_address: ClientAddressDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    grant_type: FormField = None,
    username: FormField = None,
    password: FormField = None,
    scope: FormField = None,
    client_id: FormField = None,
    refresh_token: FormField = None,
    resource: ResourceField = None,
) -> JSONResponse:
    """Issue tokens: the `password` grant (OAuth2 password form) and the `refresh_token` grant.

    Every refresh rotates: the presented refresh token is consumed and a new one returned.
    Presenting a consumed one ends its whole session (reuse detection). `resource` (RFC 8707)
    selects the audience: one of IDP_AUDIENCE (the default), or IDP_ADMIN_AUDIENCE alone for
    a token idp's own /admin API accepts; anything else is `invalid_target`.
    """
    if not grant_type:
        raise InvalidRequestError("grant_type is required")
    # The docs page's token URL carries `resource` in its query (see idp.main).
    resource = resource or request.query_params.getlist("resource") or None
    if grant_type == "password":
        with metrics.count_outcome(metrics.LOGINS):
            if not username or password is None or password == "":
                raise InvalidRequestError("username and password are required")
            result = await oauth.password_grant(
                session,
                settings,
                keyset,
                username=username,
                password=password,
                client_id=client_id or settings.default_client_id,
                scope=scope,
                now=clock.now(),
                database=database,
                client_address=client_address,
                resources=resource,
            )
    elif grant_type == "refresh_token":
        with metrics.count_outcome(metrics.REFRESHES):
            if not refresh_token:
                raise InvalidRequestError("refresh_token is required")
            result = await oauth.refresh_grant(
                database,
                settings,
                keyset,
                refresh_token=refresh_token,
                client_id=client_id or None,
                scope=scope,
                now=clock.now(),
                resources=resource,
            )
    else:
        raise UnsupportedGrantTypeError(f"grant_type {grant_type[:40]!r} is not supported")
    metrics.count_issued(grant_type)
    return JSONResponse(result.model_dump(exclude_none=True), headers=NO_STORE)


@router.post(
    "/revoke",
    responses={
        200: {"content": None, "description": "revoked, or unknown (RFC 7009 section 2.2)"},
        400: {"model": OAuthErrorBody},
    },
)
async def revoke(
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    token: FormField = None,
    token_type_hint: FormField = None,  # accepted and not needed: a token's shape says its type
) -> Response:
    """Logout (RFC 7009): end the session of a refresh token, or of one of our access tokens.
    200 with an empty body whether or not the token was known."""
    if not token:
        raise InvalidRequestError("token is required")
    await oauth.revoke(session, settings, keyset, token, now=clock.now())
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/introspect",
    response_model=IntrospectionResponse,
    response_model_exclude_none=True,
    responses={
        400: {"model": OAuthErrorBody},
        401: {"description": "no valid bearer token"},
        403: {"description": "the caller lacks the tokens:introspect permission"},
    },
)
async def introspect(
    _caller: TokensIntrospect,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    token: FormField = None,
    token_type_hint: FormField = None,  # accepted and not needed: a token's shape says its type
) -> JSONResponse:
    """RFC 7662, for bearers holding `tokens:introspect`: `{"active": false}` for anything not
    active, else the token's standard members."""
    if not token:
        raise InvalidRequestError("token is required")
    result = await oauth.introspect(session, settings, keyset, token, now=clock.now())
    return JSONResponse(result.model_dump(exclude_none=True), headers=NO_STORE)
