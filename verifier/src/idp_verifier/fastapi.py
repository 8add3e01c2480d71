"""FastAPI integration: a dependency that yields verified ``Claims``, and route guards.

Needs the ``fastapi`` extra (``pip install 'idp-verifier[fastapi]'``)::

    auth = BearerAuth(verifier, permissions=Permissions({"orders:write": {"admin", "sales"}}))

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(auth)]) -> dict[str, str]: ...

    @app.post("/orders", dependencies=[Depends(auth.require_permission("orders:write"))])
    async def create_order() -> None: ...
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies' annotations at
# runtime, and cannot resolve strings on a callable instance such as BearerAuth.

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from idp_verifier.claims import Claims
from idp_verifier.errors import JWKSUnavailableError, TokenError
from idp_verifier.permissions import Permissions
from idp_verifier.verifier import TokenVerifier

logger = logging.getLogger("idp_verifier")

#: What the guards return: an async FastAPI dependency that yields the caller's claims.
ClaimsDependency = Callable[..., Coroutine[Any, Any, Claims]]

# auto_error=False: a missing token is answered here, with the RFC 6750 challenge.
_bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="An access token issued by idp."
)


class BearerAuth:
    """A FastAPI dependency: the verified claims of the request's bearer token.

    - no ``Authorization: Bearer`` token: 401 with ``WWW-Authenticate: Bearer``;
    - a token that fails verification: 401 with
      ``WWW-Authenticate: Bearer error="invalid_token", error_description="..."``;
    - the issuer's keys never reachable (``JWKSUnavailableError``): 503, since the token may
      well be valid;
    - a guard (``require_roles``, ``require_any_role``, ``require_permission``) not satisfied:
      403 with ``WWW-Authenticate: Bearer error="insufficient_scope"``.
    """

    def __init__(self, verifier: TokenVerifier, *, permissions: Permissions | None = None) -> None:
        self.verifier = verifier
        self.permissions = permissions

    async def __call__(
        self,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    ) -> Claims:
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Not authenticated",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await self.verifier.verify(credentials.credentials)
        except JWKSUnavailableError as exc:
            logger.warning("Cannot verify a token: %s", exc)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, exc.description) from None
        except TokenError as exc:
            logger.debug("Rejected a token: %s", exc)
            challenge = f'Bearer error="invalid_token", error_description="{exc.description}"'
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                exc.description,
                headers={"WWW-Authenticate": challenge},
            ) from None

    def require_roles(self, *roles: str) -> ClaimsDependency:
        """A dependency that admits callers holding every one of ``roles``."""
        needed = frozenset(roles)

        async def has_every_role(claims: Annotated[Claims, Depends(self)]) -> Claims:
            if not needed <= claims.roles:
                raise _forbidden()
            return claims

        return has_every_role

    def require_any_role(self, *roles: str) -> ClaimsDependency:
        """A dependency that admits callers holding at least one of ``roles``."""
        accepted = frozenset(roles)

        async def has_a_role(claims: Annotated[Claims, Depends(self)]) -> Claims:
            if accepted.isdisjoint(claims.roles):
                raise _forbidden()
            return claims

        return has_a_role

    def require_permission(self, permission: str) -> ClaimsDependency:
        """A dependency that admits callers one of whose roles grants ``permission``.

        The permission must be in this ``BearerAuth``'s ``permissions``: a typo fails when
        the route is declared, not by refusing everybody at run time.
        """
        permissions = self.permissions
        if permissions is None:
            raise ValueError("require_permission needs BearerAuth(..., permissions=...)")
        if permission not in permissions:
            raise ValueError(f"{permission!r} is not one of the declared permissions")

        async def has_permission(claims: Annotated[Claims, Depends(self)]) -> Claims:
            if not permissions.allows(claims, permission):
                raise _forbidden()
            return claims

        return has_permission


def _forbidden() -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        "Not permitted",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )
