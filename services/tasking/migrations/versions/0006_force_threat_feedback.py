"""Jobs carry what products group by (the requesting force and the threat category), and the
requesting officer's feedback by one-time token (the token's hash and expiry, and the name the
officer gave).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("requesting_force", sa.String(32)))
    op.add_column("jobs", sa.Column("threat_category", sa.String(32)))
    op.add_column("jobs", sa.Column("feedback_officer_name", sa.Text))
    op.add_column("jobs", sa.Column("feedback_token_hash", sa.String(64)))
    op.add_column("jobs", sa.Column("feedback_token_expires_at", TZ))
    op.create_index("jobs_force_threat", "jobs", ["requesting_force", "threat_category"])


def downgrade() -> None:
    op.drop_index("jobs_force_threat", table_name="jobs")
    for column in (
        "feedback_token_expires_at",
        "feedback_token_hash",
        "feedback_officer_name",
        "threat_category",
        "requesting_force",
    ):
        op.drop_column("jobs", column)
