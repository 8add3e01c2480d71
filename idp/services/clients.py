"""The OAuth client registry: clients, their secrets and roles, and what a client may ask for.

Secrets are 256 random bits with a recognisable prefix, shown once and stored only as
HMAC-SHA256 under the server's pepper (IDP_CLIENT_SECRET_PEPPER, else a file of the keystore):
a high-entropy secret needs no slow hash, and a database dump alone cannot test guesses.
Several secrets may be live at once; rotating one gives the others an expiry, so a deployment
can switch to the new secret before the old one stops working.

`RegisteredClient` is an immutable snapshot of a client with its secrets' hashes and its role
names, which `ClientCache` keeps for IDP_CLIENT_CACHE_TTL seconds: a token request costs no
database round trip to find its client. A change made through this process clears the cache
entry at once; other processes see it within the TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.database import Database
from idp.configuration.exceptions import (
    ConflictError,
    InvalidScopeError,
    InvalidTargetError,
    NotFoundError,
    ValidationFailedError,
)
from idp.configuration.settings import Settings
from idp.models import Client, ClientSecret
from idp.repository import clients as clients_repo
from idp.repository import roles as roles_repo
from idp.schemas.clients import (
    ClientCreate,
    ClientFields,
    ClientOut,
    ClientSecretOut,
    ClientUpdate,
)
from idp.services import audit
from idp.services.keys import keystore_for
from idp.services.permissions import Actor, ensure_holds_roles, ensure_unrestricted
from idp.services.tokens import normalize_scope
from idp_verifier.jwks import insecure_transport

logger = logging.getLogger(__name__)

SECRET_PREFIX: Final = "idp_cs_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES: Final = 32  # 256 bits
# Longer than any secret of ours: not hashed, not compared.
MAX_SECRET_LENGTH: Final = 256
# RFC 9068 section 2.2: a client's own token names it as `sub` in a namespace no user id
# (a UUID) can take.
CLIENT_SUBJECT_PREFIX: Final = "client:"
CONFIDENTIAL_METHODS: Final = frozenset(
    {"client_secret_basic", "client_secret_post", "private_key_jwt"}
)
SECRET_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post"})
# Grants this server runs at /token (authorization_code may be registered ahead of use).
SUPPORTED_GRANTS: Final = ("client_credentials", "password", "refresh_token")
# Seeded by the migration: the password login and the docs page's Authorize button use it.
BUILTIN_CLIENT_ID: Final = "idp"
# A rotation's default: a day to roll deployments over to the new secret (0 after a leak).
DEFAULT_SECRET_OVERLAP: Final = 86_400
MAX_SECRET_OVERLAP: Final = 30 * 86_400


@dataclass(frozen=True, slots=True)
class SecretHash:
    digest: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    """A client as a token request needs it: immutable, safe to cache."""

    id: str
    name: str
    client_type: str
    auth_method: str
    grant_types: frozenset[str]
    scopes: frozenset[str]
    audiences: tuple[str, ...] | None
    default_audience: str | None
    admin_api: bool
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    access_token_ttl: int | None
    refresh_token_ttl: int | None
    first_party: bool
    enabled: bool
    secrets: tuple[SecretHash, ...]
    roles: tuple[str, ...]

    @property
    def confidential(self) -> bool:
        return self.client_type == "confidential"

    @property
    def subject(self) -> str:
        return CLIENT_SUBJECT_PREFIX + self.id

    def allowed_audiences(self, settings: Settings) -> list[str]:
        """The audiences the client may ask for, idp's admin audience aside."""
        return list(self.audiences) if self.audiences is not None else list(settings.audience)

    def requestable_audiences(self, settings: Settings) -> list[str]:
        """Every audience the client may ask for: its own, and idp's admin one with
        `admin_api`."""
        allowed = self.allowed_audiences(settings)
        return [*allowed, settings.admin_token_audience] if self.admin_api else allowed

    def default_audiences(self, settings: Settings) -> list[str]:
        if self.default_audience is not None:
            return [self.default_audience]
        return self.allowed_audiences(settings)

    def access_ttl(self, settings: Settings) -> int:
        return min(self.access_token_ttl or settings.access_token_ttl, settings.access_token_ttl)

    def refresh_ttl(self, settings: Settings) -> int:
        return min(self.refresh_token_ttl or settings.refresh_token_ttl, settings.refresh_token_ttl)

    def secret_matches(self, pepper: bytes, presented: str, now: datetime) -> bool:
        """Constant-time comparison with every live secret (the loop does not stop early)."""
        if not presented or len(presented) > MAX_SECRET_LENGTH:
            return False
        digest = hash_secret(pepper, presented)
        matched = False
        for secret in self.secrets:
            live = secret.expires_at is None or secret.expires_at > now
            matched |= hmac.compare_digest(digest, secret.digest) and live
        return matched


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def pepper_for(settings: Settings) -> bytes:
    """IDP_CLIENT_SECRET_PEPPER, else the keystore's pepper file (made on first use)."""
    if settings.client_secret_pepper is not None:
        return settings.client_secret_pepper.get_secret_value().encode("utf-8")
    return keystore_for(settings).files.pepper()


# Scope and audience --------------------------------------------------------------------


def select_scope(client: RegisteredClient, scope: str | None) -> str | None:
    """The requested scope if every token of it is one the client may have, else
    `invalid_scope`; None (no scope) when none is requested."""
    requested = normalize_scope(scope)
    if requested is None:
        return None
    outside = [token for token in requested.split(" ") if token not in client.scopes]
    if outside:
        raise InvalidScopeError(f"scope not allowed for this client: {' '.join(outside)[:200]}")
    return requested


def select_audience(
    settings: Settings,
    client: RegisteredClient,
    resources: Sequence[str] | None,
    *,
    within: Sequence[str] | None = None,
) -> list[str]:
    """The token's `aud` for the RFC 8707 `resource` (or `audience`) values of a request.

    None: `within` (a refresh keeps its session's audiences) else the client's default. Each
    value must be one the client may ask for, or idp's admin audience alone for a client with
    `admin_api`: a token for the admin API is never also valid at another service. Else
    `invalid_target`.
    """
    # RFC 6749 section 3.2: a parameter sent without a value is treated as omitted.
    wanted = list(dict.fromkeys(value for value in resources or () if value))
    if not wanted:
        return list(within) if within is not None else client.default_audiences(settings)
    admin = settings.admin_token_audience
    allowed = list(within) if within is not None else client.requestable_audiences(settings)
    if any(value not in allowed for value in wanted):
        raise InvalidTargetError()
    if admin in wanted and len(wanted) > 1:
        raise InvalidTargetError("the admin audience must be requested alone")
    return wanted


def audiences_still_allowed(
    settings: Settings, client: RegisteredClient, audience: Sequence[str]
) -> bool:
    """Whether a session's audiences are all still the client's to ask for."""
    allowed = client.requestable_audiences(settings)
    return all(value in allowed for value in audience)


# The cache -----------------------------------------------------------------------------


async def load(session: AsyncSession, client_id: str) -> RegisteredClient | None:
    """The client's snapshot from the database, None when there is no such client."""
    client = await clients_repo.get(session, client_id)
    if client is None:
        return None
    stored = await clients_repo.secrets_of(session, client_id)
    roles = await clients_repo.role_names_of(session, client_id)
    return RegisteredClient(
        id=client.id,
        name=client.name,
        client_type=client.client_type,
        auth_method=client.token_endpoint_auth_method,
        grant_types=frozenset(client.grant_types),
        scopes=frozenset(client.scopes),
        audiences=tuple(client.audiences) if client.audiences is not None else None,
        default_audience=client.default_audience,
        admin_api=client.admin_api,
        redirect_uris=tuple(client.redirect_uris),
        post_logout_redirect_uris=tuple(client.post_logout_redirect_uris or ()),
        jwks=client.jwks,
        jwks_uri=client.jwks_uri,
        access_token_ttl=client.access_token_ttl,
        refresh_token_ttl=client.refresh_token_ttl,
        first_party=client.first_party,
        enabled=client.enabled,
        secrets=tuple(SecretHash(s.secret_hash, s.expires_at) for s in stored),
        roles=tuple(roles),
    )


class ClientCache:
    """Snapshots by client id, unknown ids included, for `ttl` seconds (0: no cache).

    Bounded: past `max_entries` the oldest entry goes. No awaits between reading and writing
    an entry, so one event loop needs no lock; two concurrent misses both load, harmlessly.
    """

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, RegisteredClient | None]] = {}
        self._origins: tuple[float, frozenset[str]] | None = None

    async def get(self, database: Database, client_id: str) -> RegisteredClient | None:
        now = self._clock()
        entry = self._entries.get(client_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        async with database.session() as session:
            found = await load(session, client_id)
        if self.ttl > 0:
            self._entries.pop(client_id, None)
            self._entries[client_id] = (now + self.ttl, found)
            if len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]
        return found

    async def origins(self, database: Database) -> frozenset[str]:
        """The web origins of every enabled client's redirect URIs (CORS, like Keycloak's
        `+` web origins), cached for the same TTL."""
        now = self._clock()
        if self._origins is not None and self._origins[0] > now:
            return self._origins[1]
        async with database.session() as session:
            uris = await clients_repo.enabled_redirect_uris(session)
        found = frozenset(
            f"{parts.scheme}://{parts.netloc}"
            for parts in map(urlsplit, uris)
            if parts.scheme in ("http", "https") and parts.netloc
        )
        self._origins = (now + self.ttl, found)
        return found

    def invalidate(self, client_id: str | None = None) -> None:
        self._origins = None
        if client_id is None:
            self._entries.clear()
        else:
            self._entries.pop(client_id, None)


# The registry --------------------------------------------------------------------------


def _validate(settings: Settings, client: Client) -> None:
    """The rules a stored client always satisfies; 422 naming the first one broken."""

    def refuse(message: str) -> None:
        raise ValidationFailedError(message)

    method = client.token_endpoint_auth_method
    if client.client_type == "public":
        if method != "none":
            refuse("a public client authenticates with `none`")
        if "client_credentials" in client.grant_types:
            refuse("client_credentials needs a confidential client")
    elif method not in CONFIDENTIAL_METHODS:
        refuse("a confidential client authenticates with a secret or private_key_jwt")
    if method == "private_key_jwt":
        if (client.jwks is None) == (client.jwks_uri is None):
            refuse("private_key_jwt needs exactly one of jwks and jwks_uri")
    elif client.jwks is not None or client.jwks_uri is not None:
        refuse("jwks and jwks_uri are for private_key_jwt clients")
    if client.jwks is not None:
        _check_public_jwks(client.jwks)
    if client.jwks_uri is not None:
        problem = insecure_transport(client.jwks_uri, allow_http=False)
        if problem is not None:
            refuse(f"jwks_uri: {problem}")
    admin = settings.admin_token_audience
    if client.audiences is not None:
        if not client.audiences:
            refuse("audiences must not be empty (leave it unset for IDP_AUDIENCE)")
        if admin in client.audiences:
            refuse("the admin audience is granted with admin_api, not listed in audiences")
    allowed = client.audiences if client.audiences is not None else settings.audience
    if client.default_audience is not None and client.default_audience not in allowed:
        refuse("default_audience must be one of the client's audiences")
    for uri in (*client.redirect_uris, *(client.post_logout_redirect_uris or ())):
        _check_redirect_uri(uri)
    if client.access_token_ttl is not None and client.access_token_ttl > settings.access_token_ttl:
        limit = settings.access_token_ttl
        refuse(f"access_token_ttl may not exceed IDP_ACCESS_TOKEN_TTL ({limit})")
    if (
        client.refresh_token_ttl is not None
        and client.refresh_token_ttl > settings.refresh_token_ttl
    ):
        refuse(
            f"refresh_token_ttl may not exceed IDP_REFRESH_TOKEN_TTL ({settings.refresh_token_ttl})"
        )


def _check_public_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > 20:
        raise ValidationFailedError("jwks must be a key set with 1 to 20 keys")
    if any(not isinstance(key, dict) or "d" in key or "k" in key for key in keys):
        raise ValidationFailedError("jwks must hold public keys only")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValidationFailedError(f"jwks is not a valid key set: {type(exc).__name__}") from None


def _check_redirect_uri(uri: str) -> None:
    """Absolute, no fragment (RFC 6749 section 3.1.2); https, http on loopback only, or a
    private-use scheme of a native app (RFC 8252 section 7.1)."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise ValidationFailedError(f"redirect URI {uri[:100]!r} must be absolute, no fragment")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise ValidationFailedError(f"redirect URI {uri[:100]!r}: http is for loopback only")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ValidationFailedError(f"redirect URI {uri[:100]!r} has no host")
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ValidationFailedError(f"redirect URI scheme {parts.scheme!r} is not allowed")


def _apply(client: Client, fields: ClientFields) -> list[str]:
    """Copy the fields that were given; the names of those that changed."""
    changed = []
    for name, value in fields.model_dump(exclude_unset=True).items():
        if getattr(client, name) != value:
            setattr(client, name, value)
            changed.append(name)
    return changed


async def create_client(
    session: AsyncSession,
    settings: Settings,
    data: ClientCreate,
    *,
    actor: Actor,
    pepper: bytes,
    now: datetime,
) -> tuple[Client, str | None]:
    """A new client and, for a secret-authenticated one, its first secret (shown once)."""
    if data.admin_api:
        ensure_unrestricted(actor, "a client that may request admin-API tokens")
    client_id = data.client_id or secrets.token_urlsafe(12).replace("_", "x").replace("-", "y")
    if await clients_repo.get(session, client_id) is not None:
        raise ConflictError(f"client {client_id!r} already exists")
    confidential = data.client_type == "confidential"
    default_grants = (
        ["client_credentials"] if confidential else ["authorization_code", "refresh_token"]
    )
    client = Client(
        id=client_id,
        name=data.name or client_id,
        client_type=data.client_type,
        token_endpoint_auth_method=data.token_endpoint_auth_method
        or ("client_secret_basic" if confidential else "none"),
        grant_types=list(dict.fromkeys(data.grant_types or default_grants)),
        scopes=list(dict.fromkeys(data.scopes or [])),
        audiences=list(dict.fromkeys(data.audiences)) if data.audiences is not None else None,
        default_audience=data.default_audience,
        admin_api=bool(data.admin_api),
        redirect_uris=list(dict.fromkeys(data.redirect_uris or [])),
        post_logout_redirect_uris=list(dict.fromkeys(data.post_logout_redirect_uris or [])),
        jwks=data.jwks,
        jwks_uri=data.jwks_uri,
        access_token_ttl=data.access_token_ttl,
        refresh_token_ttl=data.refresh_token_ttl,
        first_party=bool(data.first_party),
        enabled=data.enabled if data.enabled is not None else True,
        created_at=now,
        updated_at=now,
    )
    _validate(settings, client)
    await clients_repo.add(session, client)
    secret = None
    if client.token_endpoint_auth_method in SECRET_METHODS:
        secret, _row = await _add_secret(session, client.id, pepper, now)
    await audit.record(
        session,
        actor,
        "client.create",
        target_type="client",
        target_id=client.id,
        details={
            "client_type": client.client_type,
            "auth_method": client.token_endpoint_auth_method,
            "grant_types": client.grant_types,
        },
    )
    logger.info("client %s created", client.id)
    return client, secret


async def _add_secret(
    session: AsyncSession, client_id: str, pepper: bytes, now: datetime
) -> tuple[str, ClientSecret]:
    """A new secret and its stored row (the hash and a four-character hint)."""
    secret = new_secret()
    row = await clients_repo.add_secret(
        session,
        ClientSecret(
            client_id=client_id,
            secret_hash=hash_secret(pepper, secret),
            hint=secret[-4:],
            created_at=now,
        ),
    )
    return secret, row


async def get_client(session: AsyncSession, client_id: str) -> Client:
    client = await clients_repo.get(session, client_id)
    if client is None:
        raise NotFoundError(f"client {client_id[:100]!r} not found")
    return client


async def list_clients(session: AsyncSession) -> Sequence[Client]:
    return await clients_repo.list_all(session)


async def _ensure_may_manage(session: AsyncSession, actor: Actor, client_id: str) -> Client:
    """The client's row, locked; 403 unless `actor` holds every role the client holds, and
    unless `actor` is unrestricted when the client may request admin-API tokens (the same
    rule as for giving it that power)."""
    client = await clients_repo.lock(session, client_id)
    if client is None:
        raise NotFoundError(f"client {client_id[:100]!r} not found")
    if not actor.unrestricted:
        if client.admin_api:
            ensure_unrestricted(actor, f"managing client {client_id!r}, which has admin_api,")
        roles = await clients_repo.role_names_of(session, client_id)
        ensure_holds_roles(actor, roles, f"managing client {client_id!r}")
    return client


def _ensure_not_builtin(settings: Settings, client_id: str, what: str) -> None:
    """409 for the built-in client and the configured default one: without them the password
    login (a token request naming no client) and the docs page's Authorize button stop."""
    if client_id in (BUILTIN_CLIENT_ID, settings.default_client_id):
        raise ConflictError(
            f"client {client_id!r} is built in (the password login and the docs page use it) "
            f"and cannot be {what}"
        )


async def update_client(
    session: AsyncSession,
    settings: Settings,
    client_id: str,
    data: ClientUpdate,
    *,
    actor: Actor,
    now: datetime,
) -> Client:
    client = await _ensure_may_manage(session, actor, client_id)
    if data.admin_api:
        ensure_unrestricted(actor, "a client that may request admin-API tokens")
    if data.enabled is False:
        _ensure_not_builtin(settings, client.id, "disabled")
    changed = _apply(client, data)
    if not changed:
        return client
    _validate(settings, client)
    client.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor,
        "client.update",
        target_type="client",
        target_id=client.id,
        details={"changed": changed},
    )
    return client


async def delete_client(
    session: AsyncSession, settings: Settings, client_id: str, *, actor: Actor
) -> None:
    """Delete the client, its secrets and role links. Sessions it started stay until they end
    (their refreshes fail: the client is gone). The built-in client: 409."""
    await _ensure_may_manage(session, actor, client_id)
    _ensure_not_builtin(settings, client_id, "deleted")
    await clients_repo.delete_client(session, client_id)
    await audit.record(session, actor, "client.delete", target_type="client", target_id=client_id)
    logger.info("client %s deleted", client_id)


async def rotate_secret(
    session: AsyncSession,
    client_id: str,
    *,
    actor: Actor,
    pepper: bytes,
    now: datetime,
    overlap: int,
) -> tuple[str, datetime | None]:
    """A new secret; the live ones keep working `overlap` seconds more (0: stop now). The new
    secret and when the old ones stop."""
    client = await _ensure_may_manage(session, actor, client_id)
    if client.token_endpoint_auth_method not in SECRET_METHODS:
        raise ValidationFailedError(
            f"client {client_id!r} authenticates with {client.token_endpoint_auth_method}, "
            "not a secret"
        )
    if not 0 <= overlap <= MAX_SECRET_OVERLAP:
        raise ValidationFailedError(f"overlap must be 0 to {MAX_SECRET_OVERLAP} seconds")
    await clients_repo.delete_expired_secrets(session, client_id, now=now)
    secret, fresh = await _add_secret(session, client_id, pepper, now)
    until = now + timedelta(seconds=overlap)
    # The new row itself, not the newest by created_at: secrets made at the same instant tie.
    replaced = await clients_repo.expire_secrets(session, client_id, at=until, keep=fresh)
    await audit.record(
        session,
        actor,
        "client.secret_rotate",
        target_type="client",
        target_id=client_id,
        details={"previous_expire_at": until.isoformat() if replaced else None},
    )
    return secret, until if replaced else None


async def grant_role(
    session: AsyncSession, client_id: str, role_name: str, *, actor: Actor
) -> bool:
    """Give the client a role (its client_credentials tokens carry it); False if it had it.
    The same rule as for users: you hand out only what you hold, to a client you may manage."""
    role = await roles_repo.get_by_name(session, role_name)
    if role is None:
        raise NotFoundError(f"role {role_name[:100]!r} not found")
    ensure_holds_roles(actor, [role.name], f"granting role {role.name!r}")
    await _ensure_may_manage(session, actor, client_id)
    added = await clients_repo.add_role(session, client_id, role.id)
    if added:
        await audit.record(
            session,
            actor,
            "client.role_grant",
            target_type="client",
            target_id=client_id,
            details={"role": role.name},
        )
    return added


async def revoke_role(
    session: AsyncSession, client_id: str, role_name: str, *, actor: Actor
) -> None:
    role = await roles_repo.get_by_name(session, role_name)
    if role is None:
        raise NotFoundError(f"role {role_name[:100]!r} not found")
    await _ensure_may_manage(session, actor, client_id)
    if not await clients_repo.remove_role(session, client_id, role.id):
        raise NotFoundError(f"client {client_id!r} does not hold role {role.name!r}")
    await audit.record(
        session,
        actor,
        "client.role_revoke",
        target_type="client",
        target_id=client_id,
        details={"role": role.name},
    )


async def describe(session: AsyncSession, client: Client) -> ClientOut:
    """The client as the admin API and the CLI show it (never a secret, only hints)."""
    return (await describe_all(session, [client]))[0]


async def describe_all(session: AsyncSession, clients: Sequence[Client]) -> list[ClientOut]:
    """`describe` for many clients, in two statements whatever their number."""
    ids = [client.id for client in clients]
    secrets_of = await clients_repo.secrets_by_client(session, ids)
    roles_of = await clients_repo.role_names_by_client(session, ids)
    return [_described(client, secrets_of[client.id], roles_of[client.id]) for client in clients]


def _described(client: Client, stored: Sequence[ClientSecret], roles: list[str]) -> ClientOut:
    return ClientOut(
        client_id=client.id,
        name=client.name,
        client_type=client.client_type,
        token_endpoint_auth_method=client.token_endpoint_auth_method,
        grant_types=client.grant_types,
        scopes=client.scopes,
        audiences=client.audiences,
        default_audience=client.default_audience,
        admin_api=client.admin_api,
        redirect_uris=client.redirect_uris,
        post_logout_redirect_uris=client.post_logout_redirect_uris or [],
        jwks=client.jwks,
        jwks_uri=client.jwks_uri,
        access_token_ttl=client.access_token_ttl,
        refresh_token_ttl=client.refresh_token_ttl,
        first_party=client.first_party,
        enabled=client.enabled,
        roles=roles,
        secrets=[
            ClientSecretOut(
                id=str(s.id), hint=s.hint, created_at=s.created_at, expires_at=s.expires_at
            )
            for s in stored
        ],
        created_at=client.created_at,
        updated_at=client.updated_at,
    )


async def holds_permission(session: AsyncSession, client_id: str, code: str) -> bool:
    """Whether the client's roles grant the idp permission `code` (e.g. tokens:introspect)."""
    return code in await clients_repo.permission_codes(session, client_id)


async def purge_used_assertions(database: Database, *, now: datetime) -> int:
    """Forget the ids of client assertions (RFC 7523 `jti`) that expired: a replay of one
    fails on its `exp` anyway. How many were deleted."""
    async with database.session() as session:
        return await clients_repo.purge_assertions(session, before=now)
