"""A service's own permissions, granted by the roles idp puts in its tokens."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from idp_verifier.claims import Claims


class Permissions(Mapping[str, frozenset[str]]):
    """Maps each permission of a service to the roles that grant it.

    The roles live in idp; what a role may do in *this* service is decided here::

        permissions = Permissions({"orders:read": {"admin", "sales", "support"},
                                   "orders:write": {"admin", "sales"}})
        # or, the other way round:
        permissions = Permissions.from_roles({"admin": {"orders:read", "orders:write"},
                                              "support": {"orders:read"}})
    """

    def __init__(self, grants: Mapping[str, Iterable[str]]) -> None:
        self._grants = {
            permission: _names(roles, f"roles of {permission!r}")
            for permission, roles in grants.items()
        }

    @classmethod
    def from_roles(cls, roles: Mapping[str, Iterable[str]]) -> Permissions:
        """Build from a role → permissions mapping."""
        grants: dict[str, set[str]] = {}
        for role, permissions in roles.items():
            for permission in _names(permissions, f"permissions of {role!r}"):
                grants.setdefault(permission, set()).add(role)
        return cls(grants)

    def __getitem__(self, permission: str) -> frozenset[str]:
        return self._grants[permission]

    def __iter__(self) -> Iterator[str]:
        return iter(self._grants)

    def __len__(self) -> int:
        return len(self._grants)

    def __repr__(self) -> str:
        return f"Permissions({self._grants!r})"

    def granted(self, roles: Iterable[str] | Claims) -> frozenset[str]:
        """Every permission that at least one of ``roles`` grants."""
        held = _roles(roles)
        return frozenset(permission for permission, by in self._grants.items() if by & held)

    def allows(self, roles: Iterable[str] | Claims, permission: str) -> bool:
        """Whether one of ``roles`` grants ``permission`` (an unknown permission: never)."""
        return not self._grants.get(permission, frozenset()).isdisjoint(_roles(roles))


def _roles(roles: Iterable[str] | Claims) -> frozenset[str]:
    if isinstance(roles, Claims):
        return roles.roles
    return _names(roles, "roles")


def _names(names: Iterable[str], what: str) -> frozenset[str]:
    # A bare string is iterable too, and would grant its letters.
    if isinstance(names, str):
        raise TypeError(f"{what} must be a collection of names, not the string {names!r}")
    return frozenset(names)
