"""The FastAPI integration: 401 with a Bearer challenge, 403 from the guards, 200 with claims."""

# No `from __future__ import annotations`: FastAPI must see the routes' annotations, which
# name a local `auth`, as objects.

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from idp_verifier import Claims, Permissions, TokenVerifier
from idp_verifier.fastapi import BearerAuth
from idp_verifier.testing import AUDIENCE, Signer

ISSUER = "https://idp.example.com"
JWKS_URI = f"{ISSUER}/.well-known/jwks.json"

PERMISSIONS = Permissions(
    {"orders:read": {"admin", "sales", "support"}, "orders:write": {"admin", "sales"}}
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.rsa("api-1")


def build_app(verifier: TokenVerifier) -> FastAPI:
    auth = BearerAuth(verifier, permissions=PERMISSIONS)
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(auth)]) -> dict[str, Any]:
        return {"sub": claims.subject, "roles": sorted(claims.roles)}

    @app.get("/admin", dependencies=[Depends(auth.require_roles("admin"))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    @app.get("/desk")
    async def desk(
        claims: Annotated[Claims, Depends(auth.require_any_role("sales", "support"))],
    ) -> dict[str, str]:
        return {"ok": claims.subject}

    @app.get("/orders", dependencies=[Depends(auth.require_permission("orders:read"))])
    async def list_orders() -> list[str]:
        return []

    @app.post("/orders")
    async def create_order(
        claims: Annotated[Claims, Depends(auth.require_permission("orders:write"))],
    ) -> dict[str, str]:
        return {"created_by": claims.subject}

    return app


@pytest.fixture
async def client(signer: Signer) -> AsyncIterator[httpx.AsyncClient]:
    def issuer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [signer.jwk()]})

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as jwks_client,
        TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http_client=jwks_client) as verifier,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(verifier)), base_url="http://service"
        ) as client,
    ):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_yields_the_claims(client: httpx.AsyncClient, signer: Signer) -> None:
    token = signer.token(ISSUER, sub="user-1", roles=["sales", "admin"])

    response = await client.get("/me", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"sub": "user-1", "roles": ["admin", "sales"]}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
    ids=["none", "basic", "empty-bearer"],
)
async def test_no_bearer_token_is_a_401_with_a_bare_challenge(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/me", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "Not authenticated"}


@pytest.mark.parametrize(
    ("token", "description"),
    [
        (lambda signer: "not-a-token", "The access token is malformed."),
        (
            lambda signer: signer.token(ISSUER, exp=int(time.time()) - 60),
            "The access token expired.",
        ),
        (
            lambda signer: signer.token(ISSUER, aud="billing"),
            "The access token is not meant for this service.",
        ),
        (
            lambda signer: Signer.rsa("api-1").token(ISSUER),
            "The access token signature is invalid.",
        ),
    ],
    ids=["garbage", "expired", "audience", "forged"],
)
async def test_an_invalid_token_is_a_401_invalid_token(
    client: httpx.AsyncClient, signer: Signer, token: Any, description: str
) -> None:
    response = await client.get("/me", headers=bearer(token(signer)))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{description}"'
    )
    assert response.json() == {"detail": description}


@pytest.mark.parametrize(
    ("path", "method", "roles", "status"),
    [
        ("/admin", "GET", ["admin"], 200),
        ("/admin", "GET", ["sales"], 403),
        ("/admin", "GET", [], 403),
        ("/desk", "GET", ["support"], 200),
        ("/desk", "GET", ["admin"], 403),
        ("/orders", "GET", ["support"], 200),
        ("/orders", "POST", ["support"], 403),
        ("/orders", "POST", ["sales"], 200),
        ("/orders", "POST", ["viewer", "admin"], 200),
        ("/orders", "GET", ["viewer"], 403),
    ],
)
async def test_guards_answer_403_without_the_role_or_permission(
    client: httpx.AsyncClient,
    signer: Signer,
    path: str,
    method: str,
    roles: list[str],
    status: int,
) -> None:
    token = signer.token(ISSUER, roles=roles)

    response = await client.request(method, path, headers=bearer(token))

    assert response.status_code == status
    if status == 403:
        assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
        assert response.json() == {"detail": "Not permitted"}


async def test_guards_still_answer_401_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unreachable_keys_are_a_503_not_a_401(signer: Signer) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as jwks_client:
        verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http_client=jwks_client)
        transport = httpx.ASGITransport(app=build_app(verifier))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            response = await client.get("/me", headers=bearer(signer.token(ISSUER)))

    assert response.status_code == 503


async def test_the_openapi_schema_declares_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/orders"]["post"]["security"] == [{"HTTPBearer": []}]


def test_declaring_an_unknown_permission_fails_at_once() -> None:
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI)
    with pytest.raises(ValueError, match="orders:wirte"):
        BearerAuth(verifier, permissions=PERMISSIONS).require_permission("orders:wirte")
    with pytest.raises(ValueError, match="permissions="):
        BearerAuth(verifier).require_permission("orders:write")


# --- Permissions ----------------------------------------------------------------------------


def test_permissions_map_both_ways() -> None:
    by_permission = Permissions({"orders:write": {"admin", "sales"}, "orders:read": ["support"]})
    by_role = Permissions.from_roles(
        {"admin": ["orders:write"], "sales": ["orders:write"], "support": ["orders:read"]}
    )

    assert dict(by_permission) == dict(by_role)
    assert by_role["orders:write"] == {"admin", "sales"}
    assert by_role.granted(["sales", "viewer"]) == {"orders:write"}
    assert by_role.allows(["support"], "orders:read")
    assert not by_role.allows(["support"], "orders:write")
    assert not by_role.allows(["admin"], "orders:delete")


def test_permissions_accept_claims() -> None:
    permissions = Permissions({"orders:write": {"sales"}})
    claims = Claims("s", "u", "e", frozenset({"sales"}), frozenset(), "c", 0, 0, "j", {})

    assert permissions.allows(claims, "orders:write")
    assert permissions.granted(claims) == {"orders:write"}


def test_a_bare_string_is_not_taken_for_a_set_of_roles() -> None:
    with pytest.raises(TypeError):
        Permissions({"orders:write": "admin"})
    with pytest.raises(TypeError):
        Permissions.from_roles({"admin": "orders:write"})
    with pytest.raises(TypeError):
        Permissions({}).allows("admin", "orders:write")
