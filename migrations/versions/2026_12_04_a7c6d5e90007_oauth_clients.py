"""OAuth clients: the registry, their secrets and roles, used assertion ids, two permissions

Revision ID: a7c6d5e90007
Revises: f6b5c4d80006
Create Date: 2026-12-04 13:30:00.000000

Seeds `clients:read` and `clients:write` (granted to `admin`) and the built-in first-party
public client `idp`, which keeps the password login working: grant types `password` and
`refresh_token`, the configured IDP_AUDIENCE, and the admin audience.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7c6d5e90007"
down_revision: str | None = "f6b5c4d80006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = {
    "clients:read": "Read OAuth clients",
    "clients:write": "Create, change, disable, delete OAuth clients; their secrets and roles",
}


def _timestamps() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        )
    ]


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("client_type", sa.String(length=20), nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(length=40), nullable=False),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=True),
        sa.Column("default_audience", sa.String(length=500), nullable=True),
        sa.Column("admin_api", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("jwks_uri", sa.String(length=2000), nullable=True),
        sa.Column("access_token_ttl", sa.Integer(), nullable=True),
        sa.Column("refresh_token_ttl", sa.Integer(), nullable=True),
        sa.Column("first_party", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        *_timestamps(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
    )
    op.create_table(
        "client_secrets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=8), nullable=False),
        *_timestamps(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_secrets_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_secrets")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_client_secrets_secret_hash")),
    )
    op.create_index(
        op.f("ix_client_secrets_client_id"), "client_secrets", ["client_id"], unique=False
    )
    op.create_table(
        "client_roles",
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_roles_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_client_roles_role_id_roles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", "role_id", name=op.f("pk_client_roles")),
    )
    op.create_index(op.f("ix_client_roles_role_id"), "client_roles", ["role_id"], unique=False)
    op.create_table(
        "used_client_assertions",
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("jti_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_used_client_assertions_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "jti_hash", name=op.f("pk_used_client_assertions")),
    )
    op.create_index(
        op.f("ix_used_client_assertions_expires_at"),
        "used_client_assertions",
        ["expires_at"],
        unique=False,
    )
    _seed()


def _seed() -> None:
    permissions = sa.table("permissions", sa.column("code"), sa.column("description"))
    op.bulk_insert(permissions, [{"code": c, "description": d} for c, d in PERMISSIONS.items()])
    codes = ", ".join(f"'{code}'" for code in PERMISSIONS)
    op.execute(
        "INSERT INTO role_permissions (role_id, permission_id) "
        "SELECT roles.id, permissions.id FROM roles, permissions "
        f"WHERE roles.name = 'admin' AND permissions.code IN ({codes})"
    )
    clients = sa.table(
        "clients",
        sa.column("id"),
        sa.column("name"),
        sa.column("client_type"),
        sa.column("token_endpoint_auth_method"),
        sa.column("grant_types", sa.JSON),
        sa.column("scopes", sa.JSON),
        sa.column("admin_api", sa.Boolean),
        sa.column("redirect_uris", sa.JSON),
        sa.column("first_party", sa.Boolean),
    )
    op.bulk_insert(
        clients,
        [
            {
                "id": "idp",
                "name": "idp (built-in first-party client)",
                "client_type": "public",
                "token_endpoint_auth_method": "none",
                "grant_types": ["password", "refresh_token"],
                "scopes": [],
                "admin_api": True,
                "redirect_uris": [],
                "first_party": True,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("used_client_assertions")
    op.drop_table("client_roles")
    op.drop_table("client_secrets")
    op.drop_table("clients")
    codes = ", ".join(f"'{code}'" for code in PERMISSIONS)
    op.execute(f"DELETE FROM permissions WHERE code IN ({codes})")  # noqa: S608 - constants
