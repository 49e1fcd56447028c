"""A model that keeps learning: every estimated model is kept with its checks and whether it
was activated or rejected (`match_models.status`, `checks`, `records_seen`), and the learning
worker's persisted state (`learning_state`): how many person records the last estimate saw,
and the re-resolution under a new model with its cursor, so that it resumes after a stop.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("match_models", sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"))
    op.execute("UPDATE match_models SET status = CASE WHEN active THEN 'ACTIVE' ELSE 'RETIRED' END")
    op.add_column("match_models", sa.Column("checks", JSONB))
    op.add_column("match_models", sa.Column("records_seen", sa.BigInteger))
    op.create_table(
        "learning_state",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("records_at_estimate", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("estimated_at", TZ),
        sa.Column("reresolve_model", sa.String(32), nullable=False, server_default=""),
        sa.Column("reresolve_cursor", sa.String(32), nullable=False, server_default=""),
        sa.Column("reresolve_scanned", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reresolve_merged", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reresolve_done", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("updated_at", TZ),
    )


def downgrade() -> None:
    op.drop_table("learning_state")
    op.drop_column("match_models", "records_seen")
    op.drop_column("match_models", "checks")
    op.drop_column("match_models", "status")
