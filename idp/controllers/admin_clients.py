"""Administration of OAuth clients: `/admin/clients`, their secrets and roles.

A client is enabled and disabled with `PATCH {"enabled": ...}`, as a user is with `is_active`.
Every change is audited by the service and, once committed, drops the client from this
process's client cache (`ClientChangesDep`, the first parameter of each changing route).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query, Response, status

from idp.configuration.exceptions import NO_STORE
from idp.dependencies.clients import ClientAuthDep, ClientChangesDep
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import SessionDep, SettingsDep
from idp.dependencies.permissions import (
    ADMIN_RESPONSES,
    ClientsRead,
    ClientsWrite,
    PermissionRoute,
)
from idp.schemas.clients import (
    CLIENT_ID_PATTERN,
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientUpdate,
    SecretRotated,
)
from idp.schemas.users import ROLE_NAME_PATTERN
from idp.services import clients as clients_service

router = APIRouter(
    prefix="/admin/clients",
    tags=["admin: clients"],
    route_class=PermissionRoute,
    responses=ADMIN_RESPONSES,
)

ClientIdParam = Annotated[str, Path(max_length=100, pattern=CLIENT_ID_PATTERN)]
RoleNameParam = Annotated[str, Path(max_length=100, pattern=ROLE_NAME_PATTERN)]

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Final[Responses] = {404: {"description": "No such client (or role)"}}
BUILT_IN: Final[Responses] = {
    409: {"description": "The built-in client (the password login and the docs page use it)"}
}


@router.get("", response_model=list[ClientOut])
async def list_clients(_actor: ClientsRead, session: SessionDep) -> list[ClientOut]:
    """Every registered client by id, with its roles and its secrets' hints (never a secret)."""
    return await clients_service.describe_all(session, await clients_service.list_clients(session))


@router.post(
    "",
    response_model=ClientCreated,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The client id is taken"}},
)
async def create_client(
    changes: ClientChangesDep,
    data: ClientCreate,
    actor: ClientsWrite,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    authenticator: ClientAuthDep,
    response: Response,
) -> ClientCreated:
    """Register a client. A secret-authenticated one gets its first `client_secret` here,
    shown this once (only its keyed hash is stored). `admin_api` needs the `admin` role."""
    client, secret = await clients_service.create_client(
        session, settings, data, actor=actor, pepper=authenticator.pepper, now=clock.now()
    )
    changes.add(client.id)  # an unknown id is cached too
    response.headers["Location"] = f"/admin/clients/{client.id}"
    response.headers.update(NO_STORE)
    described = await clients_service.describe(session, client)
    return ClientCreated(**described.model_dump(), client_secret=secret)


@router.get("/{client_id}", response_model=ClientOut, responses=NOT_FOUND)
async def get_client(
    client_id: ClientIdParam, _actor: ClientsRead, session: SessionDep
) -> ClientOut:
    """One client with its roles and its secrets' hints."""
    return await clients_service.describe(
        session, await clients_service.get_client(session, client_id)
    )


@router.patch("/{client_id}", response_model=ClientOut, responses={**NOT_FOUND, **BUILT_IN})
async def update_client(
    changes: ClientChangesDep,
    client_id: ClientIdParam,
    data: ClientUpdate,
    actor: ClientsWrite,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> ClientOut:
    """Change the given fields; `{"enabled": false}` disables the client (its token requests
    fail at once here). Needs holding every role the client holds."""
    client = await clients_service.update_client(
        session, settings, client_id, data, actor=actor, now=clock.now()
    )
    return await clients_service.describe(session, client)


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **BUILT_IN},
)
async def delete_client(
    changes: ClientChangesDep,
    client_id: ClientIdParam,
    actor: ClientsWrite,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Delete the client with its secrets and role grants."""
    await clients_service.delete_client(session, settings, client_id, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{client_id}/secrets",
    response_model=SecretRotated,
    status_code=status.HTTP_201_CREATED,
    responses={
        **NOT_FOUND,
        422: {"description": "The client does not authenticate with a secret"},
    },
)
async def rotate_secret(
    changes: ClientChangesDep,
    client_id: ClientIdParam,
    actor: ClientsWrite,
    session: SessionDep,
    clock: ClockDep,
    authenticator: ClientAuthDep,
    response: Response,
    overlap: Annotated[
        int,
        Query(
            ge=0,
            le=clients_service.MAX_SECRET_OVERLAP,
            description="Seconds the client's current secrets keep working (default one "
            "day, to roll deployments over); 0 ends them now, after a leak.",
        ),
    ] = clients_service.DEFAULT_SECRET_OVERLAP,
) -> SecretRotated:
    """A new secret, shown this once; the previous ones stop working after `overlap`."""
    secret, until = await clients_service.rotate_secret(
        session,
        client_id,
        actor=actor,
        pepper=authenticator.pepper,
        now=clock.now(),
        overlap=overlap,
    )
    response.headers.update(NO_STORE)
    return SecretRotated(client_id=client_id, client_secret=secret, previous_expire_at=until)


@router.put(
    "/{client_id}/roles/{name}",
    response_model=list[str],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The client already held the role"}, **NOT_FOUND},
)
async def grant_role(
    changes: ClientChangesDep,
    client_id: ClientIdParam,
    name: RoleNameParam,
    actor: ClientsWrite,
    session: SessionDep,
    response: Response,
) -> list[str]:
    """Give the client a role (its client_credentials tokens carry it): 201 when granted, 200
    when already held. Needs holding the role and every role the client holds."""
    if not await clients_service.grant_role(session, client_id, name, actor=actor):
        response.status_code = status.HTTP_200_OK
    client = await clients_service.get_client(session, client_id)
    return (await clients_service.describe(session, client)).roles


@router.delete(
    "/{client_id}/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
async def revoke_role(
    changes: ClientChangesDep,
    client_id: ClientIdParam,
    name: RoleNameParam,
    actor: ClientsWrite,
    session: SessionDep,
) -> Response:
    """Take a role from the client; its next tokens no longer carry it."""
    await clients_service.revoke_role(session, client_id, name, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
