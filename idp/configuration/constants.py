"""Fixed values of the service: its own permission catalogue and the admin role."""

from __future__ import annotations

from typing import Final

ADMIN_ROLE: Final = "admin"

# The identity service's own permissions; the `admin` role holds them all. A migration seeds
# this catalogue, so adding a permission here also needs a migration.
PERMISSIONS: Final[dict[str, str]] = {
    "users:read": "Read users and their roles",
    "users:write": "Create, update, disable, delete users; reset passwords; unlock accounts",
    "roles:read": "Read roles and the permission catalogue",
    "roles:write": "Create, rename, delete roles; grant and revoke roles and permissions",
    "tokens:introspect": "Introspect access and refresh tokens (RFC 7662)",
    "audit:read": "Read the audit log",
    "clients:read": "Read OAuth clients",
    "clients:write": "Create, change, disable, delete OAuth clients; their secrets and roles",
}

BCRYPT_MAX_BYTES: Final = 72
USERNAME_MAX_LENGTH: Final = 150
EMAIL_MAX_LENGTH: Final = 320
ROLE_NAME_MAX_LENGTH: Final = 100
# PostgreSQL's OFFSET is a bigint; pages beyond this are refused with a 422, not a database error.
MAX_PAGE_OFFSET: Final = 2**31 - 1

# An IPv4 address, an IPv6 /64 prefix ("2001:db8:0:1::/64") or "unknown".
CLIENT_ADDRESS_MAX_LENGTH: Final = 64
