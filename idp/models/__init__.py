"""SQLAlchemy tables. Importing this package registers every table on `Base.metadata`."""

from idp.models.audit import AuditEvent
from idp.models.base import Base
from idp.models.browser import AuthorizationCode, BrowserSession, Consent
from idp.models.clients import Client, ClientRole, ClientSecret, UsedAssertion
from idp.models.lockout import LoginFailure
from idp.models.refresh_tokens import RefreshFamily, RefreshToken
from idp.models.roles import Permission, Role, RolePermission, UserRole
from idp.models.users import User

__all__ = [
    "AuditEvent",
    "AuthorizationCode",
    "Base",
    "BrowserSession",
    "Client",
    "ClientRole",
    "ClientSecret",
    "Consent",
    "LoginFailure",
    "Permission",
    "RefreshFamily",
    "RefreshToken",
    "Role",
    "RolePermission",
    "UsedAssertion",
    "User",
    "UserRole",
]
