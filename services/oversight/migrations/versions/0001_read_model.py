"""The national oversight read model (jobs, referrals, counters per day and month, open
deadlines, PND reconciliations, events counted per region) and the platform tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from toex_common.db import create_platform_schema, drop_platform_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_platform_schema(op)
    op.create_table(
        "jobs",
        sa.Column("job", sa.Text, primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("force", sa.String(64), nullable=False, server_default=""),
        sa.Column("job_type", sa.String(32), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False, server_default=""),
        sa.Column("state_revision", sa.BigInteger, nullable=False, server_default="-1"),
        sa.Column("priority", sa.String(16), nullable=False, server_default=""),
        sa.Column("priority_revision", sa.BigInteger, nullable=False, server_default="-1"),
        sa.Column("due_at", TZ),
        sa.Column("due_revision", sa.BigInteger, nullable=False, server_default="-1"),
        sa.Column("created_at", TZ),
        sa.Column("delivered_at", TZ),
        sa.Column("taken_by", postgresql.ARRAY(sa.String(16)), nullable=False, server_default="{}"),
        sa.Column("rating", sa.SmallInteger),
        sa.Column("rated_at", TZ),
    )
    op.create_table(
        "referrals",
        sa.Column("referral", sa.Text, primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("drafted_at", TZ),
        sa.Column("state", sa.String(24), nullable=False, server_default=""),
        sa.Column("state_at", TZ),
        sa.Column("state_event", sa.String(64), nullable=False, server_default=""),
        sa.Column("clocks", postgresql.JSONB, nullable=False, server_default="[]"),
    )
    op.create_table(
        "counts",
        sa.Column("grain", sa.String(1), nullable=False),
        sa.Column("bucket", sa.Date, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("force", sa.String(64), nullable=False),
        sa.Column("figure", sa.String(32), nullable=False),
        sa.Column("value", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        # The overview reads ranges of buckets of one grain: the key leads with them.
        sa.PrimaryKeyConstraint("grain", "bucket", "region", "force", "figure", "value"),
    )
    op.create_table(
        "deadlines",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("item", sa.Text, nullable=False),
        sa.Column("part", sa.String(32), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("force", sa.String(64), nullable=False),
        sa.Column("cohort", sa.Date, nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("kind", "item", "part"),
    )
    op.create_index("deadlines_cohort", "deadlines", ["cohort"])
    op.create_table(
        "reconciliations",
        sa.Column("region", sa.String(16), primary_key=True),
        sa.Column("completed_at", TZ, nullable=False),
        sa.Column("reconciliation", sa.Text, nullable=False),
        sa.Column("local_records", sa.BigInteger, nullable=False),
        sa.Column("in_sync", sa.BigInteger, nullable=False),
        sa.Column("held", sa.BigInteger, nullable=False),
        sa.Column("stale", sa.BigInteger, nullable=False),
        sa.Column("missing", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("conflict", sa.BigInteger, nullable=False),
    )
    # Per region and producing domain: each consumer writes its own rows (no waiting on another's).
    op.create_table(
        "activity",
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("domain", sa.String(16), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("latest_event_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("region", "domain"),
    )


def downgrade() -> None:
    for table in ("activity", "reconciliations", "deadlines", "counts", "referrals", "jobs"):
        op.drop_table(table)
    drop_platform_schema(op)
