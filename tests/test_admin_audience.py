"""Issue 13 item 7: a token idp issues for another service is not accepted by idp's own admin
API. Tokens ask for the admin audience with RFC 8707 `resource`; sessions keep their audience."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from httpx import AsyncClient
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.settings import Settings
from tests.conftest import AUDIENCE, ISSUER, make_settings
from tests.helpers import PASSWORD, bearer, login, make_user, refresh

ADMIN = f"{ISSUER}/admin"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


@pytest.fixture
async def root(session: AsyncSession, settings: Settings) -> None:
    await make_user(session, settings, "root", roles=["admin"])


@pytest.mark.usefixtures("root")
async def test_a_service_token_is_refused_by_the_admin_api(client: AsyncClient) -> None:
    service = (await login(client, "root")).json()["access_token"]
    assert _claims(service)["aud"] == AUDIENCE
    response = await client.get("/admin/users", headers=bearer(service))
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ADMIN in response.json()["detail"]
    explicit = (await login(client, "root", resource=AUDIENCE)).json()["access_token"]
    assert (await client.get("/admin/roles", headers=bearer(explicit))).status_code == 401
    # /me is idp's own too: it takes both.
    assert (await client.get("/me", headers=bearer(service))).status_code == 200

    empty = (await login(client, "root", resource="")).json()["access_token"]
    assert _claims(empty)["aud"] == AUDIENCE  # a parameter without a value is omitted

    admin = (await login(client, "root", resource=ADMIN)).json()["access_token"]
    assert _claims(admin)["aud"] == ADMIN
    assert (await client.get("/admin/users", headers=bearer(admin))).status_code == 200
    assert (await client.get("/me", headers=bearer(admin))).status_code == 200


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize(
    "resources",
    [
        ["https://evil.example"],
        [f"{ADMIN}/"],
        [ISSUER],
        [ADMIN, AUDIENCE],  # an admin token must not also be valid at a service
        [AUDIENCE, "other"],
    ],
)
async def test_a_resource_outside_the_configured_audiences_is_invalid_target(
    client: AsyncClient, resources: list[str]
) -> None:
    response = await client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "root",
            "password": PASSWORD,
            "resource": resources,
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_target"


@pytest.mark.usefixtures("root")
async def test_the_docs_token_url_gives_an_admin_token(client: AsyncClient) -> None:
    schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
    (token_url,) = [s["flows"]["password"]["tokenUrl"] for s in schemes.values() if "flows" in s]
    form = {"grant_type": "password", "username": "root", "password": PASSWORD}
    response = await client.post(f"/{token_url}", data=form)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert _claims(token)["aud"] == ADMIN
    assert (await client.get("/admin/users", headers=bearer(token))).status_code == 200
    response = await client.post("/token?resource=https://evil.example", data=form)
    assert response.json()["error"] == "invalid_target"


@pytest.mark.usefixtures("root")
async def test_a_session_keeps_its_audience(client: AsyncClient) -> None:
    admin = (await login(client, "root", resource=ADMIN)).json()
    renewed = (await refresh(client, admin["refresh_token"])).json()
    assert _claims(renewed["access_token"])["aud"] == ADMIN
    response = await refresh(client, renewed["refresh_token"], resource=AUDIENCE)
    assert response.json()["error"] == "invalid_target"
    # The refused request left the token usable (rolled back), and its session unchanged.
    again = await refresh(client, renewed["refresh_token"], resource=ADMIN)
    assert again.status_code == 200, again.text

    service = (await login(client, "root")).json()
    response = await refresh(client, service["refresh_token"], resource=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    renewed = (await refresh(client, service["refresh_token"])).json()
    assert _claims(renewed["access_token"])["aud"] == AUDIENCE
    assert (
        await client.get("/admin/users", headers=bearer(renewed["access_token"]))
    ).status_code == 401


def test_the_admin_audience_defaults_to_the_issuer_and_is_never_a_service_audience(
    settings: Settings,
) -> None:
    assert settings.admin_token_audience == ADMIN
    custom = make_settings(settings.database_url, settings.keys_dir, admin_audience="idp-admin")
    assert custom.admin_token_audience == "idp-admin"
    with pytest.raises(ValidationError):
        make_settings(settings.database_url, settings.keys_dir, audience=[AUDIENCE, ADMIN])
