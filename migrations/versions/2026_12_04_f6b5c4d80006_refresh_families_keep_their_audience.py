"""refresh-token families keep the audience their login asked for (RFC 8707 `resource`)

Revision ID: f6b5c4d80006
Revises: e5a4b3c70005
Create Date: 2026-12-04 11:00:00.000000

Existing sessions get NULL: they keep the configured IDP_AUDIENCE, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f6b5c4d80006"
down_revision: str | None = "e5a4b3c70005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_families") as batch:
        batch.add_column(sa.Column("audience", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_families") as batch:
        batch.drop_column("audience")
