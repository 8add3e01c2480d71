"""OAuth 2.0 endpoints: `/token` (RFC 6749), `/revoke` (RFC 7009), `/introspect` (RFC 7662).

Their bodies are `application/x-www-form-urlencoded`, parsed here rather than by FastAPI's
`Form()`: the rules are the RFC's (one value per parameter but `resource` and `audience`,
strict UTF-8) and it is the hot path of every grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from idp.configuration import metrics
from idp.configuration.clock import Clock
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    NO_STORE,
    InvalidClientError,
    InvalidRequestError,
    PermissionDeniedError,
    UnsupportedGrantTypeError,
)
from idp.configuration.settings import Settings
from idp.controllers.forms import FORM_TYPE, form_pairs, split_values
from idp.dependencies.authentication import KeySetDep, get_caller, get_token_claims
from idp.dependencies.client import ClientAddressDep
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import SessionDep, SettingsDep
from idp.schemas.oauth import IntrospectionResponse, OAuthErrorBody, TokenResponse
from idp.services import clients, oauth
from idp.services import permissions as permissions_service
from idp.services.client_auth import ClientAuthenticator, credentials_from
from idp.services.keyring import KeySet
from idp.services.ratelimit import TOO_MANY_LOGINS, RateLimiter

router = APIRouter(tags=["oauth"])

MAX_FIELDS: Final = 100
# RFC 8707 `resource` and the `audience` many clients send instead may repeat.
REPEATABLE: Final = frozenset({"resource", "audience"})
GRANTS: Final = {
    "password": metrics.LOGINS,
    "refresh_token": metrics.REFRESHES,
    "client_credentials": metrics.CLIENT_CREDENTIALS,
    "authorization_code": metrics.CODE_EXCHANGES,
}


@dataclass(frozen=True, slots=True)
class OAuthForm:
    single: dict[str, str]
    repeated: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        return self.single.get(name) or None

    def resources(self) -> list[str] | None:
        values = self.repeated.get("resource", []) + self.repeated.get("audience", [])
        return values or None


async def read_form(request: Request) -> OAuthForm:
    """The request's form; `invalid_request` for another media type, bad UTF-8, too many
    fields, or a parameter sent twice (RFC 6749 section 3.1)."""
    single, repeated = split_values(await form_pairs(request, max_fields=MAX_FIELDS), REPEATABLE)
    # The docs page's token URL carries `resource` in its query (see idp.main).
    if "resource" not in repeated and (query := request.query_params.getlist("resource")):
        repeated["resource"] = query
    return OAuthForm(single, repeated)


FormDep = Annotated[OAuthForm, Depends(read_form)]


async def get_client_auth(request: Request) -> ClientAuthenticator:
    authenticator: ClientAuthenticator = request.app.state.client_auth
    return authenticator


ClientAuthDep = Annotated[ClientAuthenticator, Depends(get_client_auth)]


def _form_body(*fields: str) -> dict[str, Any]:
    """OpenAPI for a form body parsed by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                FORM_TYPE: {
                    "schema": {
                        "type": "object",
                        "properties": {name: {"type": "string"} for name in fields},
                    }
                }
            },
        }
    }


CLIENT_FIELDS: Final = ("client_id", "client_secret", "client_assertion_type", "client_assertion")
CLIENT_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": OAuthErrorBody},
    401: {"model": OAuthErrorBody, "description": "invalid_client"},
    429: {"description": "too many failed attempts from this address; see Retry-After"},
}


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=CLIENT_ERRORS,
    openapi_extra=_form_body(
        "grant_type",
        "username",
        "password",
        "refresh_token",
        "code",
        "redirect_uri",
        "code_verifier",
        "scope",
        "resource",
        "audience",
        *CLIENT_FIELDS,
    ),
)
async def token(request: Request, form: FormDep, client_address: ClientAddressDep) -> JSONResponse:
    """Issue tokens: `password` (for clients that opted in), `refresh_token` and
    `client_credentials` (confidential clients).

    Clients authenticate with HTTP Basic, `client_secret` in the form, or `private_key_jwt`;
    a public client sends its `client_id` (none: the built-in `idp` client). Every refresh
    rotates: the presented refresh token is consumed and a new one returned; presenting a
    consumed one ends its whole session. `resource` (RFC 8707, or `audience`) selects the
    audience among the client's (idp's admin audience alone, for clients allowed it); else
    `invalid_target`. `scope` must be within the client's scopes, else `invalid_scope`.
    """
    # The hot path of every grant: what other routes get as dependencies is read here, and a
    # database session is opened only by the grants that use one.
    state = request.app.state
    settings: Settings = state.settings
    database: Database = state.database
    keyset: KeySet = state.keyring.current
    authenticator: ClientAuthenticator = state.client_auth
    clock: Clock = state.clock
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequestError("grant_type is required")
    counter = GRANTS.get(grant_type)
    if counter is None:
        raise UnsupportedGrantTypeError(f"grant_type {grant_type[:40]!r} is not supported")
    now = clock.now()
    with metrics.count_outcome(counter):
        if grant_type == "password":
            # IDP_TOKEN_RATE_LIMIT password checks per address and minute, before any bcrypt.
            rate_limiter: RateLimiter = state.token_rate_limiter
            rate_limiter.spend(client_address, TOO_MANY_LOGINS)
        credentials = credentials_from(request.headers.get("authorization"), form.single)
        client = await authenticator.authenticate(
            credentials, address=client_address, endpoint=f"{settings.issuer}/token", now=now
        )
        if grant_type == "password":
            client = client or await authenticator.public_client(settings.default_client_id)
            username, password = form.get("username"), form.single.get("password")
            if not username or not password:
                raise InvalidRequestError("username and password are required")
            async with database.session() as session:
                result = await oauth.password_grant(
                    session,
                    settings,
                    keyset,
                    client,
                    username=username,
                    password=password,
                    scope=form.get("scope"),
                    now=now,
                    database=database,
                    client_address=client_address,
                    resources=form.resources(),
                )
        elif grant_type == "refresh_token":
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                raise InvalidRequestError("refresh_token is required")
            result = await oauth.refresh_grant(
                database,
                settings,
                keyset,
                client,
                refresh_token=refresh_token,
                scope=form.get("scope"),
                now=now,
                resources=form.resources(),
                lookup=authenticator.public_client,
            )
        elif grant_type == "authorization_code":
            if client is None:
                raise InvalidClientError("client_id or client authentication is required")
            result = await oauth.code_grant(
                database,
                settings,
                keyset,
                client,
                code=form.get("code") or "",
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
                now=now,
            )
        else:
            if client is None:
                raise InvalidClientError("client authentication is required")
            result = oauth.client_credentials_grant(
                settings,
                keyset,
                client,
                scope=form.get("scope"),
                now=now,
                resources=form.resources(),
            )
    return JSONResponse(result.model_dump(exclude_none=True), headers=NO_STORE)


@router.post(
    "/revoke",
    responses={
        200: {"content": None, "description": "revoked, or unknown (RFC 7009 section 2.2)"},
        **CLIENT_ERRORS,
    },
    openapi_extra=_form_body("token", "token_type_hint", *CLIENT_FIELDS),
)
async def revoke(
    request: Request,
    form: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    client_address: ClientAddressDep,
    authenticator: ClientAuthDep,
) -> Response:
    """Logout (RFC 7009): end the session of a refresh token, or of one of our access tokens.
    The client authenticates as at `/token`; a token issued to another client is
    `unauthorized_client`. 200 with an empty body whether or not the token was known.
    `token_type_hint` is accepted and not needed: a token's shape says its type."""
    token = form.get("token")
    if not token:
        raise InvalidRequestError("token is required")
    now = clock.now()
    credentials = credentials_from(request.headers.get("authorization"), form.single)
    client = await authenticator.authenticate(
        credentials, address=client_address, endpoint=f"{settings.issuer}/revoke", now=now
    )
    client = client or await authenticator.public_client(settings.default_client_id)
    await oauth.revoke(session, settings, keyset, token, client=client, now=now)
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/introspect",
    response_model=IntrospectionResponse,
    response_model_exclude_none=True,
    responses={
        **CLIENT_ERRORS,
        403: {"description": "the caller lacks the tokens:introspect permission"},
    },
    openapi_extra=_form_body("token", "token_type_hint", *CLIENT_FIELDS),
)
async def introspect(
    request: Request,
    form: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    client_address: ClientAddressDep,
    authenticator: ClientAuthDep,
) -> JSONResponse:
    """RFC 7662: `{"active": false}` for anything not active, else the token's standard
    members. The caller is a confidential client authenticating as at `/token`, or a user's
    bearer token (`Authorization: Bearer`); either must hold `tokens:introspect` through its
    roles."""
    token = form.get("token")
    now = clock.now()
    authorization = request.headers.get("authorization")
    if authorization is not None and authorization[:7].lower() == "bearer ":
        claims = await get_token_claims(authorization[7:].strip(), keyset, settings, clock)
        caller = await get_caller(claims, session)
        await permissions_service.authorize(session, caller.user, "tokens:introspect")
    else:
        credentials = credentials_from(authorization, form.single)
        client = await authenticator.authenticate(
            credentials, address=client_address, endpoint=f"{settings.issuer}/introspect", now=now
        )
        if client is None or not client.confidential:
            # A challenge for the client's Basic credentials, the usual ones here.
            raise InvalidClientError("introspection needs client authentication", basic=True)
        if not await clients.holds_permission(session, client.id, "tokens:introspect"):
            raise PermissionDeniedError("this needs the 'tokens:introspect' permission")
    if not token:
        raise InvalidRequestError("token is required")
    result = await oauth.introspect(
        session, settings, keyset, token, now=now, enabled_client=authenticator.client
    )
    return JSONResponse(result.model_dump(exclude_none=True), headers=NO_STORE)
