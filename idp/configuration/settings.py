"""Settings from `IDP_*` environment variables and an optional `.env`, validated at start."""

from __future__ import annotations

import ipaddress
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Settings that may come from a file instead (Docker secrets): IDP_<NAME>_FILE names the file.
FILE_SETTINGS = ("database_url", "bootstrap_admin_password", "keys_passphrase")


class Settings(BaseSettings):
    """Every knob of the service. Durations are seconds."""

    model_config = SettingsConfigDict(
        env_prefix="IDP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Storage
    database_url: str = Field(
        "sqlite+aiosqlite:///./idp.db",
        description="SQLAlchemy async URL: postgresql+asyncpg://... in production.",
    )
    db_pool_size: int = Field(
        10, ge=1, le=1000, description="PostgreSQL connections kept open per server process."
    )
    db_max_overflow: int = Field(
        10, ge=0, le=1000, description="Extra connections a process may open under load."
    )
    db_pool_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for a pooled connection."
    )
    db_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for a new database connection."
    )
    db_statement_timeout: float = Field(
        10.0, gt=0, description="Seconds a statement may run (PostgreSQL) before it is cancelled."
    )

    # Tokens
    issuer: str = Field("http://127.0.0.1:8000", description="The `iss` of every token, exactly.")
    audience: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["idp"],
        description="The `aud` of access tokens: one value, a comma list or a JSON list.",
    )
    admin_audience: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="The `aud` idp's own /admin API requires; tokens get it by asking "
        "`/token` for `resource=<this value>` (RFC 8707). Unset: IDP_ISSUER + `/admin`.",
    )
    default_client_id: str = Field(
        "idp",
        min_length=1,
        max_length=100,
        description="The registered public client a token request naming no client is for "
        "(the built-in `idp` client; see `idp clients`).",
    )
    access_token_ttl: int = Field(900, ge=5, le=86_400, description="Access-token lifetime.")
    refresh_token_ttl: int = Field(
        14 * 86_400, ge=60, description="Absolute lifetime of a login session's refresh tokens."
    )
    refresh_token_idle_ttl: int = Field(
        3 * 86_400, ge=60, description="A refresh token unused this long expires."
    )
    clock_leeway: int = Field(30, ge=0, le=300, description="Leeway for exp/nbf/iat checks.")
    refresh_purge_interval: int = Field(
        3600,
        ge=0,
        description="Seconds between purges of ended refresh-token sessions (and of expired "
        "client-assertion ids) in each server "
        "process (0: never; `idp tokens purge` does it on demand).",
    )
    refresh_purge_retention: int = Field(
        86_400, ge=0, description="An ended session's rows are kept this long before a purge."
    )

    # Keys
    keys_dir: Path = Field(
        Path("keys"), description="The keystore directory, shared by every replica."
    )
    keys_passphrase: SecretStr | None = Field(
        None, description="Encrypts the private key files at rest when set."
    )
    jwks_max_age: int = Field(
        300,
        ge=0,
        le=86_400,
        description="`Cache-Control: max-age` of the JWKS; also how long a next key must be "
        "published before a rotation may promote it.",
    )
    keys_reload_interval: float = Field(
        2.0, gt=0, le=60, description="How often a server checks the keystore for a change."
    )

    # Browser sign-in
    browser_session_ttl: int = Field(
        36_000,
        ge=60,
        le=30 * 86_400,
        description="How long a browser stays signed in (single sign-on) after its login.",
    )

    # OAuth clients
    client_secret_pepper: SecretStr | None = Field(
        None,
        min_length=32,
        description="Key of the client secrets' HMAC; unset: a file `client-secret-pepper` in "
        "the keystore, made on first use. Changing it invalidates every client secret.",
    )
    client_cache_ttl: float = Field(
        5.0,
        ge=0,
        le=300,
        description="Seconds a process keeps a client's registration in memory; a change "
        "made elsewhere takes effect within this (0: read it at every request).",
    )
    client_auth_failure_limit: int = Field(
        20,
        ge=0,
        description="Failed client authentications per client address per minute, per process, "
        "before 429 (0: no limit).",
    )
    client_assertion_max_lifetime: int = Field(
        3600,
        ge=10,
        le=86_400,
        description="Longest time until `exp` a private_key_jwt assertion may have "
        "(RFC 7523); its `jti` is remembered until then.",
    )

    # Passwords and login
    bcrypt_rounds: int = Field(
        12, ge=4, le=31, description="bcrypt cost; hashes are upgraded at the next login."
    )
    password_min_length: int = Field(
        8, ge=1, le=72, description="Minimum password length, in characters."
    )
    password_refuse_user_info: bool = Field(
        True, description="Refuse the username, the email or its local part as password."
    )
    lockout_threshold: int = Field(
        5, ge=1, description="Failures from one client address that lock it out of an account."
    )
    lockout_account_threshold: int = Field(
        0,
        ge=0,
        description="Failures from all addresses together that lock the whole account "
        "(0: four times IDP_LOCKOUT_THRESHOLD).",
    )
    lockout_account_min_addresses: int = Field(
        3,
        ge=1,
        description="Distinct client addresses the account-wide lock needs failures from, so "
        "one address only ever locks itself out.",
    )
    lockout_wait: int = Field(60, ge=1, description="First lockout, in seconds.")
    lockout_wait_increment: int = Field(60, ge=0, description="Added to each further lockout.")
    lockout_max_wait: int = Field(900, ge=1, description="Longest lockout, in seconds.")
    lockout_failure_reset: int = Field(
        43_200, ge=1, description="Failures older than this are forgotten."
    )
    token_rate_limit: int = Field(
        20,
        ge=0,
        description="Password checks (password grants and password changes) per client "
        "address per minute, per process (0: no limit).",
    )

    # Bootstrap admin, in the manner of KC_BOOTSTRAP_ADMIN_*
    bootstrap_admin_username: str | None = Field(
        None, description="Username of the admin created when no user holds `admin`."
    )
    bootstrap_admin_password: SecretStr | None = Field(
        None, description="Its password; without one no admin is created."
    )
    bootstrap_admin_email: str | None = Field(None, description="Its email address.")

    # HTTP
    max_body_size: int = Field(
        65_536,
        ge=1024,
        description="Largest request body accepted, in bytes; a larger one is answered 413.",
    )

    max_header_size: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        description="Largest request head (request line and headers) accepted, in bytes; "
        "larger headers are answered 431 and the server buffers at most twice this.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Comma list of proxy addresses or networks whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (`*` is refused: any client could pick its address).",
    )

    # Logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` for people, `json` for one object per line."
    )

    @model_validator(mode="before")
    @classmethod
    def _values_from_files(cls, data: Any) -> Any:
        """IDP_X_FILE: the value is the file's content without one trailing newline; an empty
        IDP_X_FILE counts as unset, and IDP_X and IDP_X_FILE together are refused."""
        if not isinstance(data, dict):
            return data
        for name in FILE_SETTINGS:
            variable = f"IDP_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if data.get(name) not in (None, ""):
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            try:
                with open(path, encoding="utf-8") as file:
                    content = file.read()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ValueError(f"{variable}_FILE: cannot read {path}: {reason}") from None
            data = {**data, name: content.removesuffix("\n")}
        return data

    @field_validator("audience", mode="before")
    @classmethod
    def _split_audience(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("audience")
    @classmethod
    def _audience_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one audience is required")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("use postgresql+asyncpg://... or sqlite+aiosqlite:///...")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _named_proxies_only(cls, value: str) -> str:
        entries = [part.strip() for part in value.split(",") if part.strip()]
        if "*" in entries:
            raise ValueError(
                "`*` would let every client choose its own address; name the proxy's "
                "address or network"
            )
        for entry in entries:
            if not entry.startswith("unix:"):
                ipaddress.ip_network(entry, strict=False)  # a ValueError names the bad entry
        return ",".join(entries)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.refresh_token_idle_ttl > self.refresh_token_ttl:
            self.refresh_token_idle_ttl = self.refresh_token_ttl
        if self.lockout_max_wait < self.lockout_wait:
            raise ValueError("IDP_LOCKOUT_MAX_WAIT must be at least IDP_LOCKOUT_WAIT")
        if self.lockout_account_threshold == 0:
            self.lockout_account_threshold = 4 * self.lockout_threshold
        if self.lockout_account_threshold < self.lockout_threshold:
            raise ValueError("IDP_LOCKOUT_ACCOUNT_THRESHOLD must be at least IDP_LOCKOUT_THRESHOLD")
        if self.admin_token_audience in self.audience:
            # Every token would then be an admin token, which is what the audience prevents.
            raise ValueError("IDP_ADMIN_AUDIENCE must not be one of IDP_AUDIENCE")
        return self

    @property
    def admin_token_audience(self) -> str:
        """The admin API's audience (IDP_ADMIN_AUDIENCE, else the issuer + `/admin`)."""
        return self.admin_audience or f"{self.issuer}/admin"

    @property
    def own_audiences(self) -> list[str]:
        """Every audience idp issues tokens for and verifies its own tokens with."""
        return [*self.audience, self.admin_token_audience]

    @property
    def key_retire_grace(self) -> int:
        """How long a retired key stays published: its last token's life, caches and leeway."""
        return self.access_token_ttl + self.jwks_max_age + self.clock_leeway

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
