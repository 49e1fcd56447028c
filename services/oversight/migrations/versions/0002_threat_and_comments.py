"""Jobs by threat category and feedback with a comment; a job's force by its latest revision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("force_revision", sa.BigInteger, nullable=False, server_default="-1"))
    op.add_column("jobs", sa.Column("threat", sa.String(32), nullable=False, server_default=""))
    op.add_column("jobs", sa.Column("threat_revision", sa.BigInteger, nullable=False, server_default="-1"))
    op.add_column("jobs", sa.Column("commented", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    for column in ("commented", "threat_revision", "threat", "force_revision"):
        op.drop_column("jobs", column)
