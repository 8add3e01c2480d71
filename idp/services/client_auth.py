"""Client authentication at `/token`, `/revoke` and `/introspect` (RFC 6749 section 2.3).

Exactly one method per request: HTTP Basic (`client_secret_basic`), `client_secret` in the
form (`client_secret_post`), a signed assertion (`private_key_jwt`, RFC 7523), or, for a
public client, its `client_id` alone (`none`). The method must be the one the client is
registered with. Every failure is the same `invalid_client` (401), so a caller learns nothing
about which clients exist; failures spend a per-address budget (IDP_CLIENT_AUTH_FAILURE_LIMIT)
after which the address gets 429 until it refills.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import unquote_plus

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, KeySet

from idp.configuration import metrics
from idp.configuration.database import Database
from idp.configuration.exceptions import (
    InvalidClientError,
    InvalidRequestError,
    TooManyRequestsError,
)
from idp.configuration.settings import Settings
from idp.repository import clients as clients_repo
from idp.services.clients import ClientCache, RegisteredClient, hash_secret, pepper_for
from idp.services.ratelimit import RateLimiter
from idp_verifier.jwks import insecure_transport

logger = logging.getLogger(__name__)

# Every method credentials_from recognises, in the order the metadata lists them.
AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Asymmetric algorithms only: client_secret_jwt (HS256) would need the secret in clear.
ASSERTION_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_ASSERTION_LENGTH: Final = 8192
MAX_CLIENT_ID_LENGTH: Final = 100
_JWKS_MAX_BYTES: Final = 65_536
_JWKS_TTL: Final = 300.0
_JWKS_MIN_REFETCH: Final = 10.0


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a request presented to say which client it is."""

    method: str
    client_id: str | None
    secret: str | None = None
    assertion: str | None = None
    # Sent in an Authorization: Basic header (a failure then carries the Basic challenge).
    basic: bool = False


def credentials_from(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """The one client-authentication method a request used. Two at once is `invalid_request`
    (RFC 6749 section 2.3); a malformed Basic header is `invalid_client`."""
    client_id = form.get("client_id") or None
    basic = authorization is not None and authorization[:6].lower() == "basic "
    used = [
        name
        for name, present in (
            ("client_secret_basic", basic),
            ("client_secret_post", "client_secret" in form),
            ("private_key_jwt", "client_assertion" in form or "client_assertion_type" in form),
        )
        if present
    ]
    if len(used) > 1:
        raise InvalidRequestError("use exactly one client authentication method")
    if client_id is not None and len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise InvalidClientError(basic=basic)
    if not used:
        return ClientCredentials("none", client_id)
    method = used[0]
    if method == "client_secret_basic":
        assert authorization is not None
        basic_id, secret = _parse_basic(authorization[6:].strip())
        if client_id is not None and client_id != basic_id:
            raise InvalidRequestError("client_id differs from the Basic credentials")
        if not secret:
            # Swagger UI and other tools send `id:` for a public client: an identification,
            # not a credential; only a client registered for `none` passes with it.
            return ClientCredentials("none", basic_id, basic=True)
        return ClientCredentials(method, basic_id, secret=secret, basic=True)
    if method == "client_secret_post":
        return ClientCredentials(method, client_id, secret=form.get("client_secret", ""))
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidRequestError(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion", "")
    if not assertion or len(assertion) > MAX_ASSERTION_LENGTH:
        raise InvalidClientError()
    return ClientCredentials(method, client_id, assertion=assertion)


def _parse_basic(encoded: str) -> tuple[str, str]:
    """RFC 6749 section 2.3.1: base64 of `id:secret`, each form-urlencoded first."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClientError("malformed Basic credentials", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise InvalidClientError("malformed Basic credentials", basic=True)
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise InvalidClientError(basic=True)
    return client_id, secret


class ClientAuthenticator:
    """Authenticates clients for one application (its cache, limiter and pepper)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        cache: ClientCache,
        pepper: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.cache = cache
        self.failures = RateLimiter(settings.client_auth_failure_limit)
        self._pepper = pepper
        self._jwks: dict[str, tuple[float, float, KeySet]] = {}
        self._inline_jwks: dict[str, tuple[dict[str, Any], KeySet]] = {}

    @property
    def pepper(self) -> bytes:
        if self._pepper is None:
            self._pepper = pepper_for(self.settings)
        return self._pepper

    async def client(self, client_id: str) -> RegisteredClient | None:
        """An enabled client by id (cached), else None."""
        found = await self.cache.get(self.database, client_id)
        return found if found is not None and found.enabled else None

    async def public_client(self, client_id: str) -> RegisteredClient:
        """A client a request names without credentials: it must be an enabled public one."""
        client = await self.client(client_id)
        if client is None or client.auth_method != "none":
            raise InvalidClientError()
        return client

    async def authenticate(
        self,
        credentials: ClientCredentials,
        *,
        address: str,
        endpoint: str,
        now: datetime,
    ) -> RegisteredClient | None:
        """The authenticated client; None when the request named no client at all (the
        caller decides: the default client, the token's own public client, or refusal)."""
        if credentials.method == "none":
            if credentials.client_id is None:
                return None
            try:
                return await self.public_client(credentials.client_id)
            except InvalidClientError:
                raise InvalidClientError(basic=credentials.basic) from None
        retry_after = self.failures.exhausted(address)
        if retry_after is not None:
            raise TooManyRequestsError(
                retry_after, "too many failed client authentications from this address"
            )
        try:
            if credentials.method == "private_key_jwt":
                assert credentials.assertion is not None
                return await self._assertion_client(
                    credentials.assertion, credentials.client_id, endpoint, now
                )
            return await self._secret_client(credentials, now)
        except InvalidClientError as failed:
            self.failures.hit(address)
            metrics.CLIENT_AUTH_FAILURES.labels(method=credentials.method).inc()
            raise InvalidClientError(failed.message, basic=credentials.basic) from None

    async def _secret_client(
        self, credentials: ClientCredentials, now: datetime
    ) -> RegisteredClient:
        if credentials.client_id is None:
            raise InvalidClientError("client_id is required with client_secret")
        client = await self.client(credentials.client_id)
        secret = credentials.secret or ""
        if client is None:
            hash_secret(self.pepper, secret)  # the cost of a known client's check
            raise InvalidClientError()
        if client.auth_method != credentials.method or not client.secret_matches(
            self.pepper, secret, now
        ):
            raise InvalidClientError()
        return client

    # private_key_jwt -------------------------------------------------------------------

    async def _assertion_client(
        self, assertion: str, client_id: str | None, endpoint: str, now: datetime
    ) -> RegisteredClient:
        issuer = _unverified_issuer(assertion)
        if issuer is None or (client_id is not None and client_id != issuer):
            raise InvalidClientError()
        client = await self.client(issuer)
        if client is None or client.auth_method != "private_key_jwt":
            raise InvalidClientError()
        keys = await self._client_keys(client)
        try:
            token = jwt.decode(assertion, _key_resolver(keys), algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError, TypeError, KeyError):
            if client.jwks_uri is None:
                raise InvalidClientError() from None
            # The client may have rotated its keys since we fetched them: fetch once more.
            keys = await self._client_keys(client, refresh=True)
            try:
                token = jwt.decode(assertion, _key_resolver(keys), algorithms=ASSERTION_ALGORITHMS)
            except (JoseError, ValueError, TypeError, KeyError):
                raise InvalidClientError() from None
        expires_at = self._check_assertion_claims(token.claims, client, endpoint, now)
        jti_hash = hashlib.sha256(str(token.claims["jti"]).encode()).hexdigest()
        async with self.database.session() as session:
            fresh = await clients_repo.record_assertion(
                session, client.id, jti_hash, expires_at=expires_at
            )
        if not fresh:
            logger.warning("client assertion replayed", extra={"client_id": client.id})
            raise InvalidClientError("the assertion was already used")
        return client

    def _check_assertion_claims(
        self, claims: Mapping[str, Any], client: RegisteredClient, endpoint: str, now: datetime
    ) -> datetime:
        """RFC 7523 section 3; the assertion's expiry, until which its jti is remembered."""
        settings = self.settings
        leeway = settings.clock_leeway
        moment = now.timestamp()
        if claims.get("iss") != client.id or claims.get("sub") != client.id:
            raise InvalidClientError()
        aud = claims.get("aud")
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        accepted = {settings.issuer, f"{settings.issuer}/token", endpoint}
        if not any(isinstance(value, str) and value in accepted for value in named):
            raise InvalidClientError("the assertion's aud is not this server")
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool) or exp + leeway <= moment:
            raise InvalidClientError("the assertion expired or has no exp")
        if exp - moment > settings.client_assertion_max_lifetime + leeway:
            raise InvalidClientError("the assertion's exp is too far ahead")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not _is_int(value) or value > moment + leeway):
                raise InvalidClientError(f"the assertion's {name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise InvalidClientError("the assertion has no jti")
        return now + timedelta(seconds=exp - moment + leeway)

    async def _client_keys(self, client: RegisteredClient, *, refresh: bool = False) -> KeySet:
        if client.jwks is not None:
            # Parsed once per registration snapshot (the cache hands out the same object).
            parsed = self._inline_jwks.get(client.id)
            if parsed is not None and parsed[0] is client.jwks:
                return parsed[1]
            try:
                keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError):
                raise InvalidClientError() from None
            self._inline_jwks[client.id] = (client.jwks, keys)
            return keys
        assert client.jwks_uri is not None
        uri = client.jwks_uri
        now = time.monotonic()
        cached = self._jwks.get(uri)
        if cached is not None and (
            cached[0] > now and not (refresh and now - cached[1] > _JWKS_MIN_REFETCH)
        ):
            return cached[2]
        keys = await _fetch_jwks(uri)
        self._jwks[uri] = (now + _JWKS_TTL, now, keys)
        return keys


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unverified_issuer(assertion: str) -> str | None:
    """The `iss` of an assertion before its signature is checked: only to find whose keys to
    check it with."""
    try:
        payload = json.loads(jws.extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError, TypeError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) and 0 < len(issuer) <= MAX_CLIENT_ID_LENGTH else None


def _key_resolver(keys: KeySet) -> Any:
    def resolve(obj: GuestProtocol) -> Any:
        kid = obj.headers().get("kid")
        if kid is not None:
            return keys.get_by_kid(kid)
        if len(keys.keys) == 1:
            return keys.keys[0]
        raise ValueError("the assertion names no kid and the client has several keys")

    return resolve


async def _fetch_jwks(uri: str) -> KeySet:
    problem = insecure_transport(uri, allow_http=False)
    if problem is not None:
        raise InvalidClientError()
    try:
        async with (
            httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http,
            http.stream("GET", uri, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise InvalidClientError()
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _JWKS_MAX_BYTES:
                    raise InvalidClientError()
        return KeySet.import_key_set(json.loads(body))
    except InvalidClientError:
        logger.warning("client jwks_uri unusable: %s", uri)
        raise
    except (httpx.HTTPError, JoseError, ValueError, TypeError, KeyError) as exc:
        logger.warning("client jwks_uri %s failed: %s", uri, type(exc).__name__)
        raise InvalidClientError() from None
