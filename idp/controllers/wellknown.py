"""Public discovery documents: the JWKS and the RFC 8414 metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from idp.dependencies.database import SettingsDep
from idp.schemas.oauth import ServerMetadata
from idp.services.keyring import KeyRing

router = APIRouter(tags=["discovery"])


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (part.strip().removeprefix("W/") for part in if_none_match.split(","))
    return etag in candidates


@router.get(
    "/.well-known/jwks.json",
    responses={200: {"content": {"application/json": {}}, "description": "RFC 7517 key set"}},
)
async def jwks(request: Request) -> Response:
    """Every published key (next, active, retired): public members only, serialised once."""
    keyring: KeyRing = request.app.state.keyring
    keyset = keyring.current
    headers = {
        "Cache-Control": f"public, max-age={request.app.state.settings.jwks_max_age}",
        "ETag": keyset.etag,
    }
    if _etag_matches(request.headers.get("if-none-match"), keyset.etag):
        return Response(status_code=304, headers=headers)
    return Response(content=keyset.jwks_json, media_type="application/json", headers=headers)


async def server_metadata(request: Request, settings: SettingsDep) -> ServerMetadata:
    """RFC 8414 metadata; also served where OpenID Connect consumers look for it."""
    issuer = settings.issuer
    keyring: KeyRing = request.app.state.keyring
    algorithms = sorted(keyring.current.algorithms)
    return ServerMetadata(
        issuer=issuer,
        token_endpoint=f"{issuer}/token",
        jwks_uri=f"{issuer}/.well-known/jwks.json",
        revocation_endpoint=f"{issuer}/revoke",
        introspection_endpoint=f"{issuer}/introspect",
        grant_types_supported=["password", "refresh_token"],
        response_types_supported=["token"],
        token_endpoint_auth_methods_supported=["none"],
        revocation_endpoint_auth_methods_supported=["none"],
        introspection_endpoint_auth_methods_supported=["bearer"],
        id_token_signing_alg_values_supported=algorithms,
        subject_types_supported=["public"],
        service_documentation=f"{issuer}/docs",
    )


router.add_api_route(
    "/.well-known/oauth-authorization-server",
    server_metadata,
    methods=["GET"],
    response_model=ServerMetadata,
    response_model_exclude_none=True,
)
router.add_api_route(
    "/.well-known/openid-configuration",
    server_metadata,
    methods=["GET"],
    response_model=ServerMetadata,
    response_model_exclude_none=True,
)
