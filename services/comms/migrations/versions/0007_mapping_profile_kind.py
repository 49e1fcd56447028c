"""Mapping profiles have a kind (`mapping_profiles.kind`: call data or adverts); the profiles
stored before adverts had any are call data.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _has_kind() -> bool:
    # 0001 creates the tables from the current metadata, which has the column already.
    return any(c["name"] == "kind" for c in sa.inspect(op.get_bind()).get_columns("mapping_profiles"))


def upgrade() -> None:
    if not _has_kind():
        op.add_column(
            "mapping_profiles",
            sa.Column("kind", sa.String(16), nullable=False, server_default="cdr"),
        )


def downgrade() -> None:
    if _has_kind():
        op.drop_column("mapping_profiles", "kind")
