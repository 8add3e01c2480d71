"""role names unique whatever their case (`Admin` beside `admin` was possible)

Revision ID: e5a4b3c70005
Revises: d4f3a2c60004
Create Date: 2026-12-04 10:30:00.000000

Upgrading refuses, with the clashing names, a database that already holds two roles differing
only in case: which one is meant is the operator's decision (rename or delete one, then rerun).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a4b3c70005"
down_revision: str | None = "d4f3a2c60004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT lower(name) FROM roles GROUP BY lower(name) HAVING count(*) > 1 "
                "ORDER BY lower(name)"
            )
        )
        .scalars()
        .all()
    )
    if clashes:
        raise RuntimeError(
            "roles whose names differ only in case: "
            + ", ".join(clashes)
            + "; rename or delete one of each (idp roles ...) and upgrade again"
        )
    op.create_index(
        "uq_roles_name_lower", "roles", [sa.literal_column("lower(name)")], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_roles_name_lower", table_name="roles")
