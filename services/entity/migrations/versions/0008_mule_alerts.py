"""Mule clusters already alerted on (`mule_alerts`), by the id derived from their sorted
members, so that the analysis finding the same cluster again publishes nothing new.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mule_alerts",
        sa.Column("cluster_id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mule_alerts")
