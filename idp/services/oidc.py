"""OpenID Connect and the authorization code flow (RFC 6749 section 4.1, RFC 7636 PKCE,
RFC 9207 `iss`, OpenID Connect Core 1.0): authorization requests, codes, ID tokens, userinfo.

An authorization request is checked in two stages. Until its client and `redirect_uri` are
known good, an error is shown on idp's own page and the browser goes nowhere
(`UnsafeRequestError`): an open redirector would hand codes or users to anyone. After that,
errors go back to the client (`RedirectError`), with `state` and `iss`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import (
    IdpError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    InvalidTokenError,
)
from idp.configuration.settings import Settings
from idp.models import AuthorizationCode, BrowserSession, User
from idp.repository import browser as browser_repo
from idp.services import authentication
from idp.services.clients import RegisteredClient, select_audience, select_scope
from idp.services.keyring import KeySet
from idp.services.tokens import verify_own_access_token

CODE_TTL: Final = 60
ID_TOKEN_TYPE: Final = "JWT"  # noqa: S105 - a JOSE type, not a secret
OIDC_SCOPES: Final = ("openid", "profile", "email")
OIDC_CLAIMS: Final = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "amr",
    "azp",
    "preferred_username",
    "name",
    "updated_at",
    "email",
    "email_verified",
)
# RFC 7636 section 4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
PROMPTS: Final = frozenset({"none", "login", "consent"})


class Person(Protocol):
    """What ID tokens and userinfo say of a user (a `User`, or the refresh's snapshot)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def username(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def updated_at(self) -> datetime: ...


class UnsafeRequestError(IdpError):
    """An authorization request whose client or redirect URI cannot be trusted: shown on
    idp's own error page, never redirected."""

    status_code = 400
    default_message = "the request names an unknown client or an unregistered redirect URI"


class RedirectError(Exception):
    """An error to send back to the client's (checked) redirect URI."""

    def __init__(self, request: AuthorizationRequest, error: str, description: str) -> None:
        super().__init__(description)
        self.location = request.redirect({"error": error, "error_description": description[:200]})


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: RegisteredClient
    redirect_uri: str
    issuer: str
    state: str | None = None
    scope: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    login_hint: str | None = None
    id_token_hint: str | None = None
    audience: list[str] = field(default_factory=list)
    # The request's own parameters, to carry through the login and consent forms.
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split() if self.scope else []

    def redirect(self, values: Mapping[str, str]) -> str:
        """The redirect URI with `values`, `state` and RFC 9207 `iss` added to its query."""
        parts = urlsplit(self.redirect_uri)
        extra = dict(values)
        if self.state is not None:
            extra["state"] = self.state
        extra["iss"] = self.issuer
        query = "&".join(part for part in (parts.query, urlencode(extra)) if part)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def without_prompt(self, *values: str) -> AuthorizationRequest:
        """The request once `values` of its prompt were satisfied (after a login, a consent)."""
        prompt = self.prompt - set(values)
        params = dict(self.params)
        if prompt:
            params["prompt"] = " ".join(sorted(prompt))
        else:
            params.pop("prompt", None)
        return replace(self, prompt=frozenset(prompt), params=params)


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact match, except a loopback redirect's port (RFC 8252 section 7.3): native apps
    listen on whatever port is free."""
    if registered == requested:
        return True
    ours, theirs = urlsplit(registered), urlsplit(requested)
    if ours.scheme != "http" or theirs.scheme != "http":
        return False
    if ours.hostname not in _LOOPBACK_HOSTS or ours.hostname != theirs.hostname:
        return False
    return (ours.path, ours.query) == (theirs.path, theirs.query) and not theirs.fragment


ClientLookup = Callable[[str], Awaitable[RegisteredClient | None]]


async def parse_request(
    params: Mapping[str, str], settings: Settings, find_client: ClientLookup
) -> AuthorizationRequest:
    """Check an authorization request; `UnsafeRequestError` or `RedirectError` if it fails."""
    client_id = params.get("client_id", "")
    client = await find_client(client_id) if 0 < len(client_id) <= 100 else None
    if client is None:
        raise UnsafeRequestError("unknown or disabled client")
    requested_uri = params.get("redirect_uri")
    if requested_uri is None:
        # OpenID Connect requires it; OAuth allows leaving it out when only one is registered.
        if len(client.redirect_uris) != 1 or "openid" in params.get("scope", "").split():
            raise UnsafeRequestError("redirect_uri is required")
        redirect_uri = client.redirect_uris[0]
    elif any(redirect_uri_matches(uri, requested_uri) for uri in client.redirect_uris):
        redirect_uri = requested_uri
    else:
        raise UnsafeRequestError("the redirect URI is not registered for this client")
    request = AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        issuer=settings.issuer,
        state=params.get("state") or None,
        params={name: value for name, value in params.items() if name not in ("csrf",)},
    )
    return _checked(request, params, settings)


def _checked(
    request: AuthorizationRequest, params: Mapping[str, str], settings: Settings
) -> AuthorizationRequest:
    client = request.client

    def fail(error: str, description: str) -> RedirectError:
        return RedirectError(request, error, description)

    if params.get("request") or params.get("request_uri"):
        raise fail("request_not_supported", "request objects are not supported")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be code")
    if params.get("response_mode", "query") != "query":
        raise fail("invalid_request", "only response_mode=query is supported")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "this client may not use the authorization code flow")
    try:
        scope = select_scope(client, params.get("scope"))
        audience = select_audience(settings, client, _resources(params))
    except (InvalidScopeError, InvalidTargetError, InvalidRequestError) as exc:
        raise fail(exc.error, exc.message) from None
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if not client.confidential:
            raise fail("invalid_request", "PKCE (code_challenge, S256) is required")
        if method is not None:
            raise fail("invalid_request", "code_challenge_method without code_challenge")
    else:
        if method != "S256":
            raise fail("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge is not a base64url SHA-256")
    prompt = frozenset(params.get("prompt", "").split())
    if prompt - PROMPTS:
        raise fail("invalid_request", "prompt may be none, login or consent")
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined")
    max_age = None
    if "max_age" in params:
        try:
            max_age = int(params["max_age"])
        except ValueError:
            raise fail("invalid_request", "max_age must be a number of seconds") from None
        if max_age < 0:
            raise fail("invalid_request", "max_age must be a number of seconds")
    nonce = params.get("nonce") or None
    if nonce is not None and len(nonce) > 500:
        raise fail("invalid_request", "nonce is too long")
    if request.state is not None and len(request.state) > 2000:
        raise fail("invalid_request", "state is too long")
    return replace(
        request,
        scope=scope,
        nonce=nonce,
        code_challenge=challenge,
        prompt=prompt,
        max_age=max_age,
        login_hint=(params.get("login_hint") or "")[:150] or None,
        id_token_hint=params.get("id_token_hint") or None,
        audience=audience,
    )


def _resources(params: Mapping[str, str]) -> list[str] | None:
    value = params.get("resource") or params.get("audience")
    return [value] if value else None


def needs_login(
    request: AuthorizationRequest, signed_in: BrowserSession | None, now: datetime
) -> bool:
    """Whether the user must (again) show who they are: no session, `prompt=login`, or an
    authentication older than `max_age`."""
    if signed_in is None or "login" in request.prompt:
        return True
    if request.max_age is not None:
        return (now - signed_in.auth_time).total_seconds() > request.max_age
    return False


def hint_matches(
    keyset: KeySet, settings: Settings, request: AuthorizationRequest, user: User
) -> bool:
    """False when `id_token_hint` is one of our ID tokens for another user (then the user
    must sign in again); an expired hint still names its user."""
    if request.id_token_hint is None:
        return True
    claims = id_token_claims(keyset, settings, request.id_token_hint)
    return claims is None or claims.get("sub") == str(user.id)


# Codes ---------------------------------------------------------------------------------


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


async def issue_code(
    session: AsyncSession,
    request: AuthorizationRequest,
    signed_in: BrowserSession,
    *,
    now: datetime,
) -> str:
    """A code for this request (stored hashed, single use, CODE_TTL seconds); the redirect
    carrying it is `request.redirect({"code": code})`."""
    code = secrets.token_urlsafe(32)
    await browser_repo.add(
        session,
        AuthorizationCode(
            code_hash=hash_code(code),
            client_id=request.client.id,
            user_id=signed_in.user_id,
            browser_session_id=signed_in.id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            audience=request.audience,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            auth_time=signed_in.auth_time,
            created_at=now,
            expires_at=now + timedelta(seconds=CODE_TTL),
        ),
    )
    return code


class ReusedCodeError(InvalidGrantError):
    """A code presented a second time: `invalid_grant`, and what its first use started ends."""

    def __init__(self, family_id: uuid.UUID | None) -> None:
        super().__init__()
        self.family_id = family_id


async def redeem_code(
    session: AsyncSession,
    client: RegisteredClient,
    *,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    now: datetime,
) -> AuthorizationCode:
    """The code's grant if `client` may redeem it now (RFC 6749 section 4.1.3, RFC 7636
    section 4.6); every failure is `invalid_grant`."""
    if not code or len(code) > 256:
        raise InvalidGrantError()
    code_hash = hash_code(code)
    grant = await browser_repo.consume_code(session, code_hash, now=now)
    if grant is None:
        known = await browser_repo.get_code(session, code_hash)
        if known is not None and known.consumed_at is not None:
            raise ReusedCodeError(known.family_id)
        raise InvalidGrantError()
    if grant.client_id != client.id or redirect_uri != grant.redirect_uri:
        raise InvalidGrantError()
    if grant.code_challenge is None:
        if code_verifier is not None:  # a downgrade: the request carried no challenge
            raise InvalidGrantError("code_verifier sent for a request without code_challenge")
    elif code_verifier is None or not _VERIFIER.fullmatch(code_verifier):
        raise InvalidGrantError("code_verifier is missing or malformed")
    elif not secrets.compare_digest(s256(code_verifier), grant.code_challenge):
        raise InvalidGrantError("code_verifier does not match the code_challenge")
    return grant


async def link_family(
    session: AsyncSession, grant: AuthorizationCode, family_id: uuid.UUID
) -> None:
    """Remember the session a code started, to end it if the code is presented again."""
    await browser_repo.set_code_family(session, grant.code_hash, family_id)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ID tokens and userinfo ------------------------------------------------------------------


def issue_id_token(
    keyset: KeySet,
    settings: Settings,
    user: Person,
    *,
    client: RegisteredClient,
    scope: str | None,
    auth_time: datetime,
    sid: str | None,
    nonce: str | None,
    access_token: str,
    now: datetime,
) -> str:
    """OpenID Connect Core section 2, signed like access tokens but typed `JWT`."""
    issued_at = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": str(user.id),
        "aud": client.id,
        "azp": client.id,
        "exp": issued_at + client.access_ttl(settings),
        "iat": issued_at,
        "auth_time": int(auth_time.timestamp()),
        "at_hash": _at_hash(access_token),
        "amr": ["pwd"],
        **profile_claims(user, scope),
    }
    if sid is not None:
        claims["sid"] = sid
    if nonce is not None:
        claims["nonce"] = nonce
    return keyset.sign(claims, typ=ID_TOKEN_TYPE)


def _at_hash(access_token: str) -> str:
    """Left half of the SHA-256 of the access token (RS256, PS256, ES256: SHA-256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def profile_claims(user: Person, scope: str | None) -> dict[str, Any]:
    """The standard claims the scope grants (OpenID Connect Core section 5.4)."""
    scopes = set((scope or "").split())
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims["preferred_username"] = user.username
        claims["name"] = user.username
        claims["updated_at"] = int(user.updated_at.timestamp())
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = False  # idp does not verify addresses
    return claims


def id_token_claims(keyset: KeySet, settings: Settings, token: str) -> dict[str, Any] | None:
    """The claims of an ID token we issued (signature and issuer checked, expiry not: a hint
    may be old); None for anything else."""
    try:
        decoded = jose_jwt.decode(
            token, lambda obj: _hint_key(keyset, obj), algorithms=sorted(keyset.algorithms)
        )
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    claims = dict(decoded.claims)
    return claims if claims.get("iss") == settings.issuer else None


def _hint_key(keyset: KeySet, obj: Any) -> Any:
    key = keyset.public_key(obj.headers().get("kid", ""))
    if key is None:
        raise ValueError("unknown kid")
    return key


async def userinfo(
    session: AsyncSession, settings: Settings, keyset: KeySet, token: str, *, now: datetime
) -> dict[str, Any]:
    """OpenID Connect Core section 5.3 for a user's access token with the `openid` scope
    whose session has not ended; else `InvalidTokenError` (401)."""
    claims = verify_own_access_token(keyset, settings, token, now=now, any_audience=True)
    scope = claims.get("scope") if isinstance(claims.get("scope"), str) else None
    if "openid" not in (scope or "").split():
        raise InvalidTokenError("the token was not issued with the openid scope")
    user = await authentication.bearer_user(session, claims)
    return {"sub": str(user.id), **profile_claims(user, scope)}
