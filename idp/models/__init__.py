"""SQLAlchemy tables. Importing this package registers every table on `Base.metadata`."""

from idp.models.base import Base
from idp.models.lockout import LoginFailure
from idp.models.roles import Permission, Role, RolePermission, UserRole
from idp.models.users import User

__all__ = ["Base", "LoginFailure", "Permission", "Role", "RolePermission", "User", "UserRole"]
