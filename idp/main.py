"""The FastAPI application: wiring of settings, database, key ring, routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI

from idp.configuration.clock import Clock
from idp.configuration.database import Database
from idp.configuration.migrations import schema_head
from idp.configuration.settings import Settings, get_settings
from idp.controllers import (
    admin_audit,
    admin_clients,
    admin_roles,
    admin_users,
    health,
    me,
    metrics,
    oauth,
    wellknown,
)
from idp.controllers.errors import install_error_handlers
from idp.controllers.middleware import BodySizeLimitMiddleware
from idp.controllers.security_headers import install_http_hardening
from idp.observability.middleware import RequestContextMiddleware
from idp.schemas.errors import ValidationErrorBody
from idp.services import refresh_tokens
from idp.services.client_auth import ClientAuthenticator
from idp.services.clients import ClientCache
from idp.services.keyring import KeyRing
from idp.services.keys import keystore_for
from idp.services.ratelimit import RateLimiter

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the signing keys (never create them: `idp keys init` or `serve --init-keys` does),
    watch the keystore for changes and purge ended refresh-token sessions periodically."""
    settings: Settings = app.state.settings
    tasks: list[asyncio.Task[None]] = []
    if app.state.keyring is None:
        keyring = await asyncio.to_thread(KeyRing, keystore_for(settings))
        app.state.keyring = keyring
        tasks.append(asyncio.create_task(keyring.watch(settings.keys_reload_interval)))
    if app.state.owns_database and settings.refresh_purge_interval > 0:
        tasks.append(
            asyncio.create_task(
                refresh_tokens.purge_periodically(app.state.database, settings, app.state.clock)
            )
        )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if app.state.owns_database:
            await app.state.database.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    keyring: KeyRing | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the app. Tests pass their own database (inside a transaction), key ring, clock."""
    settings = settings or get_settings()
    app = FastAPI(
        title="idp",
        summary="Identity provider: RS256 access tokens, JWKS, refresh tokens, roles.",
        version="0.1.0",
        lifespan=lifespan,
        swagger_ui_init_oauth={"clientId": settings.default_client_id},
        # Served by controllers/docs.py from a package, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.owns_database = database is None
    app.state.database = database or Database(settings)
    app.state.keyring = keyring
    app.state.clock = clock or Clock()
    app.state.schema_head = schema_head()  # read from the migration scripts once per process
    app.state.token_rate_limiter = RateLimiter(settings.token_rate_limit)
    app.state.client_auth = ClientAuthenticator(
        settings, app.state.database, ClientCache(settings.client_cache_ttl)
    )
    install_error_handlers(app)
    app.include_router(oauth.router)
    app.include_router(wellknown.router)
    app.include_router(me.router)
    app.include_router(health.router)
    app.include_router(admin_users.router)
    app.include_router(admin_roles.router)
    app.include_router(admin_audit.router)
    app.include_router(admin_clients.router)
    app.include_router(metrics.router)
    # The last added runs first: the request id and access log cover the 413 answers too.
    install_http_hardening(app, settings)
    app.add_middleware(BodySizeLimitMiddleware, max_body_size=settings.max_body_size)
    app.add_middleware(RequestContextMiddleware)
    _docs_log_in_for_the_admin_api(app, settings)
    return app


def _docs_log_in_for_the_admin_api(app: FastAPI, settings: Settings) -> None:
    """Swagger UI's password flow cannot send extra form fields, so the token URL it is given
    carries `resource=<admin audience>` in its query (RFC 6749 section 3.2 allows a query
    component): the Authorize button then yields tokens the /admin routes accept."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI: the edit below is made once
        token_url = "token?" + urlencode({"resource": settings.admin_token_audience})
        for scheme in schema.get("components", {}).get("securitySchemes", {}).values():
            if "password" in scheme.get("flows", {}):
                scheme["flows"]["password"]["tokenUrl"] = token_url
        _one_validation_error_shape(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _one_validation_error_shape(schema: dict[str, Any]) -> None:
    """FastAPI documents 422 as its HTTPValidationError on routes that do not say otherwise;
    the app answers ValidationErrorBody (controllers/errors.py, without the `input` echo), so
    every 422 points at that one schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "HTTPValidationError" not in components:
        return
    body = ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**body.pop("$defs", {}), "ValidationErrorBody": body}.items():
        components.setdefault(name, definition)
    ours = {"$ref": "#/components/schemas/ValidationErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("responses", {}).get("422", {}).get("content", {})
            if "application/json" in content:
                content["application/json"]["schema"] = ours
    del components["HTTPValidationError"]
    components.pop("ValidationError", None)
