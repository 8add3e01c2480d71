"""The orders service: a small FastAPI app protected by idp-verifier.

idp says who the caller is and which roles they hold; what each role may do *here* is
decided by this service's own permission table (`PERMISSIONS`), not by idp.
"""

# No `from __future__ import annotations`: FastAPI resolves the routes' annotations at run
# time, and they name `auth`, a local of create_app.

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, status
from pydantic import BaseModel, Field

from idp_verifier import Claims, Permissions, TokenVerifier
from idp_verifier.fastapi import BearerAuth

# This service's permissions, granted by idp roles.
PERMISSIONS = Permissions.from_roles(
    {
        "admin": {"orders:read", "orders:write", "orders:delete"},
        "sales": {"orders:read", "orders:write"},
        "support": {"orders:read"},
    }
)


class OrderIn(BaseModel):
    item: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=1, le=10_000)


class Order(OrderIn):
    id: int
    owner: str


class Caller(BaseModel):
    subject: str
    username: str | None
    roles: list[str]
    permissions: list[str]


def create_app(issuer: str | None = None, audience: str | None = None) -> FastAPI:
    """Build the service from ORDERS_ISSUER (idp's issuer URL), ORDERS_AUDIENCE and, where the
    issuer's public URL is not reachable from here (a container network), ORDERS_JWKS_URL.

    Keys come over https, or plain http to loopback; ORDERS_ALLOW_HTTP=true allows plain http
    to other hosts, for a private network such as the compose file's."""
    verifier = TokenVerifier(
        issuer or os.environ.get("ORDERS_ISSUER", "http://127.0.0.1:8000"),
        audience or os.environ.get("ORDERS_AUDIENCE", "orders"),
        jwks_uri=os.environ.get("ORDERS_JWKS_URL") or None,
        allow_http=os.environ.get("ORDERS_ALLOW_HTTP", "").lower() in ("1", "true", "yes"),
    )
    auth = BearerAuth(verifier, permissions=PERMISSIONS)
    orders: dict[int, Order] = {}
    ids = itertools.count(1)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Keys are fetched lazily on the first request, so the service starts even if idp is
        # not up yet; the verifier's HTTP client is closed on shutdown.
        yield
        await verifier.aclose()

    app = FastAPI(title="orders (idp example)", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness for the container's healthcheck: the process answers."""
        return {"status": "ok"}

    @app.get("/whoami", response_model=Caller)
    async def whoami(claims: Annotated[Claims, Depends(auth)]) -> Caller:
        return Caller(
            subject=claims.subject,
            username=claims.username,
            roles=sorted(claims.roles),
            permissions=sorted(PERMISSIONS.granted(claims)),
        )

    @app.get("/orders", response_model=list[Order])
    async def list_orders(
        _claims: Annotated[Claims, Depends(auth.require_permission("orders:read"))],
    ) -> list[Order]:
        return list(orders.values())

    @app.post("/orders", response_model=Order, status_code=status.HTTP_201_CREATED)
    async def create_order(
        body: OrderIn,
        claims: Annotated[Claims, Depends(auth.require_permission("orders:write"))],
    ) -> Order:
        order = Order(id=next(ids), owner=claims.username or claims.subject, **body.model_dump())
        orders[order.id] = order
        return order

    @app.delete(
        "/orders/{order_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        dependencies=[Depends(auth.require_permission("orders:delete"))],
    )
    async def delete_order(order_id: int) -> None:
        if orders.pop(order_id, None) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "order not found")

    return app
