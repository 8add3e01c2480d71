"""What the client-registry routes inject: the app's client authenticator (its secret pepper
and its client cache), and the record of which clients a request changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from idp.services.client_auth import ClientAuthenticator


async def get_client_auth(request: Request) -> ClientAuthenticator:
    authenticator: ClientAuthenticator = request.app.state.client_auth
    return authenticator


ClientAuthDep = Annotated[ClientAuthenticator, Depends(get_client_auth)]


class ClientChanges:
    """The ids of the clients a request changes (the path's `client_id` to begin with)."""

    def __init__(self, client_id: str | None) -> None:
        self.ids: set[str] = {client_id} if client_id else set()

    def add(self, client_id: str) -> None:
        self.ids.add(client_id)


async def track_client_changes(request: Request) -> AsyncIterator[ClientChanges]:
    """Drop the changed clients from this process's client cache once the change is
    committed, so the next /token request here sees it (other processes: within
    IDP_CLIENT_CACHE_TTL).

    Function-scoped like the session and declared before it (the route's first parameter), so
    it is entered first and left last: after the commit. Dropped earlier, a token request
    between the drop and the commit would cache the old client again (a disabled client
    would keep working for a TTL). Not reached when the request fails: nothing changed.
    """
    authenticator: ClientAuthenticator = request.app.state.client_auth
    changes = ClientChanges(request.path_params.get("client_id"))
    yield changes
    for client_id in changes.ids:
        authenticator.cache.invalidate(client_id)


ClientChangesDep = Annotated[ClientChanges, Depends(track_client_changes, scope="function")]
