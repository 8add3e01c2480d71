"""Browser sign-in: `/authorize`, the hosted login and consent pages, `/logout` (OpenID
Connect RP-initiated logout) and `/userinfo`.

Pages are server-rendered (Jinja2) and work without JavaScript. Every form carries a CSRF token
(double submit: a cookie and a hidden field) and its POST must come from our own origin; every
POST answers 303. The session cookie is HttpOnly, SameSite=Lax, and Secure with the `__Host-`
prefix whenever the issuer is https (plain http is accepted only on a loopback issuer, for
development).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from idp.configuration.exceptions import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidTokenError,
)
from idp.configuration.settings import Settings
from idp.controllers.forms import form_pairs, split_values
from idp.controllers.oauth import ClientAuthDep
from idp.dependencies.authentication import KeySetDep
from idp.dependencies.client import ClientAddressDep
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import DatabaseDep, SessionDep, SettingsDep
from idp.models import BrowserSession, User
from idp.services import authentication, browser, oidc
from idp.services.oidc import AuthorizationRequest, RedirectError, UnsafeRequestError
from idp.services.ratelimit import RateLimiter

router = APIRouter(tags=["browser sign-in"])

TEMPLATES: Final = Path(__file__).resolve().parent.parent / "templates"
_jinja = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False
)
_CSS: Final = (TEMPLATES / "idp.css").read_bytes()
MAX_FORM_FIELDS: Final = 60
# The form fields of our own pages, never part of the authorization request they carry.
_PAGE_FIELDS: Final = frozenset({"csrf", "username", "password", "decision"})
LOGIN_FAILED: Final = "Invalid username or password."
PAGE_REFERRER_POLICY: Final = "same-origin"


def _secure(settings: Settings) -> bool:
    return settings.issuer.startswith("https://")


def _cookie(settings: Settings, name: str) -> str:
    return f"__Host-idp_{name}" if _secure(settings) else f"idp_{name}"


def _loopback_issuer(settings: Settings) -> bool:
    return urlsplit(settings.issuer).hostname in ("127.0.0.1", "::1", "localhost")


def _policy(settings: Settings, request: AuthorizationRequest | None) -> str:
    """The pages' CSP: our stylesheet, forms to us, and (browsers check redirects after a
    form) to the client's redirect origins; never framed."""
    targets = {_origin(settings.issuer)}
    if request is not None:
        targets |= {_origin(uri) for uri in (*request.client.redirect_uris, request.redirect_uri)}
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {' '.join(sorted(targets))}; frame-ancestors 'none'; base-uri 'none'"
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _page(
    settings: Settings,
    template: str,
    *,
    status: int = 200,
    request: AuthorizationRequest | None = None,
    csrf: str | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _jinja.get_template(template).render(
        issuer=settings.issuer,
        csrf=csrf or "",
        params=request.params if request is not None else context.pop("params", {}),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = _policy(settings, request)
    response.headers["Cache-Control"] = "no-store"
    # Not the API's no-referrer: under it a browser sends `Origin: null` with the page's own
    # form POST, which the CSRF check refuses. Other origins still get no Referer.
    response.headers["Referrer-Policy"] = PAGE_REFERRER_POLICY
    if csrf is not None:
        _set_cookie(response, settings, "csrf", csrf, max_age=3600)
    return response


def _error_page(settings: Settings, message: str, status: int = 400) -> HTMLResponse:
    return _page(settings, "error.html", status=status, message=message)


def _set_cookie(
    response: Response, settings: Settings, name: str, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        _cookie(settings, name),
        value,
        max_age=max_age,
        path="/",
        secure=_secure(settings),
        httponly=True,
        samesite="lax",
    )


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


async def _params(request: Request) -> dict[str, str] | None:
    """A GET's query or a POST's form as single values; None if malformed or a parameter
    repeats."""
    try:
        if request.method == "POST":
            pairs = await form_pairs(request, max_fields=MAX_FORM_FIELDS)
        else:
            pairs = request.query_params.multi_items()
        return split_values(pairs)[0]
    except InvalidRequestError:
        return None


def _same_origin_post(request: Request, settings: Settings, form: dict[str, str]) -> bool:
    """The CSRF checks of a form POST: the hidden token equals the cookie's, and the browser's
    Origin (when it sends one) is ours."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _origin(settings.issuer):
        return False
    cookie = request.cookies.get(_cookie(settings, "csrf"), "")
    return bool(cookie) and hmac.compare_digest(cookie, form.get("csrf", ""))


def _new_csrf(request: Request, settings: Settings) -> str:
    return request.cookies.get(_cookie(settings, "csrf")) or secrets.token_urlsafe(24)


async def _signed_in(
    request: Request, session: SessionDep, settings: Settings, now: datetime
) -> tuple[BrowserSession, User] | None:
    cookie = request.cookies.get(_cookie(settings, "session"))
    return await browser.current(session, cookie, now=now)


# /authorize ---------------------------------------------------------------------------------


# GET and POST are one operation each in OpenAPI (unique operationIds), one function here.
@router.get("/authorize", response_class=HTMLResponse, operation_id="authorize_get")
@router.post("/authorize", response_class=HTMLResponse, operation_id="authorize_post")
async def authorize(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    authenticator: ClientAuthDep,
) -> Response:
    """The authorization endpoint (RFC 6749 section 3.1, OpenID Connect Core 3.1.2): signs the
    user in (or reuses their browser session), asks a third-party client's consent, then
    redirects to the client with a code. `response_type=code` only, PKCE S256."""
    params = await _params(request)
    if params is None:
        return _error_page(settings, "The request is malformed or repeats a parameter.")
    auth_request = await _parsed(params, settings, authenticator)
    if isinstance(auth_request, Response):
        return auth_request
    if not _secure(settings) and not _loopback_issuer(settings):
        return _error_page(settings, "Browser sign-in needs an https issuer (IDP_ISSUER).")
    return await _continue(request, session, settings, keyset, auth_request, clock.now())


async def _continue(
    request: Request,
    session: SessionDep,
    settings: Settings,
    keyset: KeySetDep,
    auth_request: AuthorizationRequest,
    now: datetime,
) -> Response:
    """Login if needed, consent if needed, else the code."""
    found = await _signed_in(request, session, settings, now)
    signed_in, user = found if found is not None else (None, None)
    login_needed = oidc.needs_login(auth_request, signed_in, now) or (
        user is not None and not oidc.hint_matches(keyset, settings, auth_request, user)
    )
    if login_needed:
        if "none" in auth_request.prompt:
            return _see_other(
                auth_request.redirect(
                    {"error": "login_required", "error_description": "the user must sign in"}
                )
            )
        return _login_page(request, settings, auth_request)
    assert signed_in is not None and user is not None
    client = auth_request.client
    if "consent" in auth_request.prompt or await browser.needs_consent(
        session, user, client.id, auth_request.scopes, first_party=client.first_party
    ):
        if "none" in auth_request.prompt:
            return _see_other(
                auth_request.redirect(
                    {"error": "consent_required", "error_description": "the user must consent"}
                )
            )
        return _page(
            settings,
            "consent.html",
            request=auth_request,
            csrf=_new_csrf(request, settings),
            client_name=client.name,
            username=user.username,
            scopes=auth_request.scopes,
        )
    code = await oidc.issue_code(session, auth_request, signed_in, now=now)
    return _see_other(auth_request.redirect({"code": code}))


def _login_page(
    request: Request,
    settings: Settings,
    auth_request: AuthorizationRequest,
    *,
    error: str | None = None,
    username: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return _page(
        settings,
        "login.html",
        status=status,
        request=auth_request,
        csrf=_new_csrf(request, settings),
        client_name=auth_request.client.name,
        username=username or auth_request.login_hint or "",
        error=error,
    )


async def _posted_request(
    request: Request, settings: Settings, authenticator: ClientAuthDep
) -> tuple[dict[str, str], AuthorizationRequest] | Response:
    """The form of one of our pages and the authorization request it carries, or the page
    that refuses it."""
    form = await _params(request)
    if form is None or not _same_origin_post(request, settings, form):
        return _error_page(settings, "The form expired or came from elsewhere; start again.", 403)
    params = {name: value for name, value in form.items() if name not in _PAGE_FIELDS}
    auth_request = await _parsed(params, settings, authenticator)
    if isinstance(auth_request, Response):
        return auth_request
    return form, auth_request


async def _parsed(
    params: dict[str, str], settings: Settings, authenticator: ClientAuthDep
) -> AuthorizationRequest | Response:
    """The checked authorization request, or the error page or redirect that refuses it."""
    try:
        return await oidc.parse_request(params, settings, authenticator.client)
    except UnsafeRequestError as exc:
        return _error_page(settings, exc.message)
    except RedirectError as exc:
        return _see_other(exc.location)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: ClockDep,
    client_address: ClientAddressDep,
    authenticator: ClientAuthDep,
) -> Response:
    """The login form's POST: the same lockout, rate limit and one message for every failure
    as the password grant; on success a browser session, then back to `/authorize`."""
    posted = await _posted_request(request, settings, authenticator)
    if isinstance(posted, Response):
        return posted
    form, auth_request = posted
    username = form.get("username", "")[:150]
    limiter: RateLimiter = request.app.state.token_rate_limiter
    if limiter.hit(client_address) is not None:
        return _login_page(
            request,
            settings,
            auth_request,
            error="Too many attempts from your address; wait a minute.",
            username=username,
            status=429,
        )
    now = clock.now()
    try:
        user = await authentication.authenticate(
            database,
            session,
            settings,
            username,
            form.get("password", ""),
            client_address=client_address,
            now=now,
        )
    except (InvalidGrantError, InvalidRequestError):
        return _login_page(
            request, settings, auth_request, error=LOGIN_FAILED, username=username, status=401
        )
    previous = await _signed_in(request, session, settings, now)
    if previous is not None:
        await browser.end(session, previous[0].id, now=now)
    token, _row = await browser.start(session, settings, user, now=now)
    done = auth_request.without_prompt("login")
    response = _see_other(f"{settings.issuer}/authorize?{urlencode(done.params)}")
    _set_cookie(response, settings, "session", token, max_age=settings.browser_session_ttl)
    return response


@router.post("/consent", response_class=HTMLResponse)
async def consent(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    authenticator: ClientAuthDep,
) -> Response:
    """The consent form's POST: remember an approval and redirect with a code, or redirect
    with `access_denied`."""
    posted = await _posted_request(request, settings, authenticator)
    if isinstance(posted, Response):
        return posted
    form, auth_request = posted
    now = clock.now()
    found = await _signed_in(request, session, settings, now)
    if found is None:
        return _login_page(request, settings, auth_request)
    signed_in, user = found
    if form.get("decision") != "allow":
        return _see_other(
            auth_request.redirect(
                {"error": "access_denied", "error_description": "the user denied access"}
            )
        )
    await browser.remember_consent(session, user, auth_request.client.id, auth_request.scopes)
    code = await oidc.issue_code(session, auth_request, signed_in, now=now)
    return _see_other(auth_request.redirect({"code": code}))


# /logout -------------------------------------------------------------------------------------


@router.get("/logout", response_class=HTMLResponse, operation_id="logout_get")
@router.post("/logout", response_class=HTMLResponse, operation_id="logout_post")
async def logout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
    authenticator: ClientAuthDep,
) -> Response:
    """OpenID Connect RP-initiated logout. With an `id_token_hint` of the signed-in user the
    session ends at once; otherwise the user confirms (a CSRF-checked POST). Afterwards the
    browser goes to `post_logout_redirect_uri` if the client registered it, else a page."""
    form = await _params(request)
    if form is None:
        return _error_page(settings, "The request is malformed or repeats a parameter.")
    confirmed = request.method == "POST" and _same_origin_post(request, settings, form)
    params = {name: value for name, value in form.items() if name not in _PAGE_FIELDS}
    hint = params.get("id_token_hint")
    claims = oidc.id_token_claims(keyset, settings, hint) if hint else None
    if hint and claims is None:
        return _error_page(settings, "The id_token_hint is not an ID token of this server.")
    client_id = params.get("client_id") or (claims or {}).get("aud")
    target = params.get("post_logout_redirect_uri")
    if target is not None:
        client = await authenticator.client(client_id) if isinstance(client_id, str) else None
        if client is None or target not in client.post_logout_redirect_uris:
            return _error_page(settings, "The post_logout_redirect_uri is not registered.")
    now = clock.now()
    found = await _signed_in(request, session, settings, now)
    user: User | None = found[1] if found is not None else None
    hinted = claims is not None and user is not None and claims.get("sub") == str(user.id)
    if found is not None and not (confirmed or hinted):
        return _page(
            settings,
            "logout.html",
            csrf=_new_csrf(request, settings),
            params=params,
            username=user.username if user else None,
        )
    if found is not None:
        await browser.end(session, found[0].id, now=now)
    if target is not None:
        query = {"state": params["state"]} if params.get("state") else {}
        separator = "&" if urlsplit(target).query else "?"
        location = target + (separator + urlencode(query) if query else "")
        response: Response = _see_other(location)
    else:
        response = _page(settings, "logout.html", done=True)
    response.delete_cookie(
        _cookie(settings, "session"), path="/", secure=_secure(settings), httponly=True
    )
    return response


USERINFO_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"description": "no valid access token with the openid scope"}
}


# /userinfo -----------------------------------------------------------------------------------


@router.get("/userinfo", responses=USERINFO_ERRORS, operation_id="userinfo_get")
@router.post("/userinfo", responses=USERINFO_ERRORS, operation_id="userinfo_post")
async def userinfo(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    keyset: KeySetDep,
    clock: ClockDep,
) -> JSONResponse:
    """OpenID Connect Core 5.3: the signed-in user's claims, by the token's scope (`profile`,
    `email`). Refuses tokens whose session ended."""
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() != "bearer ":
        raise InvalidTokenError()
    claims = await oidc.userinfo(
        session, settings, keyset, authorization[7:].strip(), now=clock.now()
    )
    return JSONResponse(claims, headers={"Cache-Control": "no-store"})


@router.get("/assets/idp.css", include_in_schema=False)
async def stylesheet() -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
