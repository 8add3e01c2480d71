"""Public discovery documents: the JWKS and the RFC 8414 metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from idp.controllers.oauth import GRANTS
from idp.dependencies.database import SettingsDep
from idp.schemas.oauth import ServerMetadata
from idp.services.client_auth import ASSERTION_ALGORITHMS, AUTH_METHODS
from idp.services.keyring import KeyRing
from idp.services.oidc import OIDC_CLAIMS, OIDC_SCOPES

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
    """RFC 8414 metadata: what this server implements, and nothing it does not.

    Each list is what the endpoints run, taken from the code that runs them. Introspection
    takes no `none` (a public client may not introspect); a user's bearer token holding
    `tokens:introspect` works too, which the metadata has no way to say.
    """
    issuer = settings.issuer
    algorithms = list(ASSERTION_ALGORITHMS)
    return ServerMetadata(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=f"{issuer}/token",
        jwks_uri=f"{issuer}/.well-known/jwks.json",
        revocation_endpoint=f"{issuer}/revoke",
        introspection_endpoint=f"{issuer}/introspect",
        grant_types_supported=list(GRANTS),
        response_types_supported=["code"],
        response_modes_supported=["query"],
        code_challenge_methods_supported=["S256"],
        authorization_response_iss_parameter_supported=True,
        token_endpoint_auth_methods_supported=list(AUTH_METHODS),
        token_endpoint_auth_signing_alg_values_supported=algorithms,
        revocation_endpoint_auth_methods_supported=list(AUTH_METHODS),
        revocation_endpoint_auth_signing_alg_values_supported=algorithms,
        introspection_endpoint_auth_methods_supported=[
            method for method in AUTH_METHODS if method != "none"
        ],
        introspection_endpoint_auth_signing_alg_values_supported=algorithms,
        scopes_supported=list(OIDC_SCOPES),
        service_documentation=f"{issuer}/docs",
    )


async def openid_configuration(request: Request, settings: SettingsDep) -> ServerMetadata:
    """OpenID Connect Discovery 1.0: the RFC 8414 metadata and the OpenID Connect members."""
    keyring: KeyRing = request.app.state.keyring
    metadata = await server_metadata(request, settings)
    return metadata.model_copy(
        update={
            "userinfo_endpoint": f"{settings.issuer}/userinfo",
            "end_session_endpoint": f"{settings.issuer}/logout",
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted(keyring.current.algorithms),
            "claims_supported": list(OIDC_CLAIMS),
            "prompt_values_supported": ["none", "login", "consent"],
        }
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
    openid_configuration,
    methods=["GET"],
    response_model=ServerMetadata,
    response_model_exclude_none=True,
)
