"""The OpenAPI document tells the truth: its examples are accepted, and the error bodies it
documents are the ones the app sends."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.settings import Settings
from idp.schemas.roles import RoleCreate
from idp.schemas.users import PasswordChange
from idp.services import roles as roles_service
from idp.services.permissions import SYSTEM
from tests.helpers import admin_login, bearer, login, make_user

REF = "#/components/schemas/"
METHODS = {"get", "post", "put", "patch", "delete"}


async def _document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].removeprefix(REF)]
    return schema


def _example(document: dict[str, Any], media: dict[str, Any]) -> Any:
    """The example Swagger UI offers for a JSON body: the media type's, else the schema's."""
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    examples = _resolve(document, media["schema"]).get("examples")
    return examples[0] if examples else None


def _matches(document: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """A JSON Schema check of the keywords these schemas use (no jsonschema dependency)."""
    schema = _resolve(document, schema)
    if "anyOf" in schema:
        return any(_matches(document, option, value) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and set(schema.get("required", ())) <= set(value)
            and (
                schema.get("additionalProperties", True) is not False
                or set(value) <= set(properties)
            )
            and all(
                _matches(document, properties[k], v) for k, v in value.items() if k in properties
            )
        )
    if kind == "array":
        return isinstance(value, list) and all(
            _matches(document, schema.get("items", {}), item) for item in value
        )
    checks = {"string": str, "integer": int, "boolean": bool, "null": type(None)}
    return kind is None or isinstance(value, checks[kind])


async def test_every_request_body_example_is_accepted(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    document = await _document(client)
    await make_user(session, settings, "root", roles=["admin"])
    target = await make_user(session, settings, "target")
    await roles_service.create_role(session, RoleCreate(name="target-role"), actor=SYSTEM)
    current = PasswordChange.model_json_schema()["examples"][0]["current_password"]
    await make_user(session, settings, "mia", password=current)
    admin = bearer((await admin_login(client, "root")).json()["access_token"])
    mia = bearer((await login(client, "mia", current)).json()["access_token"])

    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(operations) >= 8
    # Creations first (the grant example names the role the create example makes), renames last.
    operations.sort(key=lambda o: ("{" in o[0], o[1] == "patch"))
    for path, method, operation in operations:
        example = _example(document, operation["requestBody"]["content"]["application/json"])
        assert example is not None, f"{method.upper()} {path} has no example"
        url = path.format(
            user_id=target.id, name="target-role", code="users:read", client_id="orders"
        )
        headers = mia if path.startswith("/me/") else admin
        response = await client.request(method, url, json=example, headers=headers)
        assert response.status_code < 300, (method, path, example, response.text)


async def test_admin_and_me_errors_are_documented_with_their_body(client: AsyncClient) -> None:
    document = await _document(client)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 shape is not ours
    checked = 0
    for path, item in document["paths"].items():
        if not (path == "/me" or path.startswith(("/admin/", "/me/"))):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            required = {"401", "503"} | ({"403"} if path.startswith("/admin") else set())
            if "{" in path:
                required.add("404")
            assert required <= set(responses), (method, path, sorted(responses))
            for status, response in responses.items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    expected = "ValidationErrorBody" if status == "422" else "ErrorBody"
                    assert ref == REF + expected, (method, path, status)
            checked += 1
    assert checked >= 20


async def test_documented_error_bodies_match_actual_ones(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    document = await _document(client)
    validation = {"$ref": REF + "ValidationErrorBody"}
    error = {"$ref": REF + "ErrorBody"}
    await make_user(session, settings, "root", roles=["admin"])
    admin = bearer((await admin_login(client, "root")).json()["access_token"])

    invalid = await client.post(
        "/admin/users", json={"username": "", "email": "x", "extra": 1}, headers=admin
    )
    assert invalid.status_code == 422
    assert len(invalid.json()["detail"]) == 3
    assert _matches(document, validation, invalid.json()), invalid.json()
    refused = await client.post(  # the password policy: a 422 with one message
        "/admin/users",
        json={"username": "kim", "email": "kim@example.com", "password": "short"},
        headers=admin,
    )
    assert refused.status_code == 422 and isinstance(refused.json()["detail"], str)
    assert _matches(document, validation, refused.json())
    # The checker is strict enough to tell the two shapes apart.
    assert not _matches(document, validation, {"detail": [{"loc": ["body"], "input": "x"}]})
    assert not _matches(document, error, invalid.json())

    for response in (
        await client.get("/admin/users"),  # 401
        await client.get("/me"),  # 401
        await client.get("/admin/roles/no-such-role", headers=admin),  # 404
        await client.post("/admin/roles", json={"name": "admin"}, headers=admin),  # 409
    ):
        assert response.status_code in {401, 404, 409}
        assert _matches(document, error, response.json()), response.json()


def test_operation_ids_are_unique() -> None:
    """Code generators name methods after operationIds: a duplicate breaks them."""
    import warnings

    from idp.configuration.settings import Settings
    from idp.main import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns on a duplicate operationId
        document = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")).openapi()
    ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(ids) == len(set(ids))
