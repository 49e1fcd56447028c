"""Intelligence records, submissions, searches, reconciliations, and the platform tables.

The tables as they were at this revision (later revisions change them), not the models of
toex_pnd.adapters.tables as they are now.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB
from toex_common.db import create_platform_schema, drop_platform_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
OPEN = "state IN ('QUEUED','HELD')"


def upgrade() -> None:
    create_platform_schema(op)
    op.create_table(
        "intelligence",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entity", JSONB, nullable=False),
        sa.Column("grading", JSONB, nullable=False),
        sa.Column("links", JSONB, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("deleted_at", TZ),
        sa.Column("sync_state", sa.String(16), nullable=False),
        sa.Column("pnd_id", sa.Text, nullable=False),
        sa.Column("pnd_version", sa.BigInteger, nullable=False),
        sa.Column("rejection", JSONB, nullable=False),
        sa.Column("released_by", sa.Text, nullable=False),
        sa.Column("ever_sent", sa.Boolean, nullable=False),
    )
    op.create_index("intelligence_region_updated", "intelligence", ["region", "updated_at", "id"])
    op.create_index("intelligence_updated", "intelligence", ["updated_at", "id"])
    op.create_table(
        "submissions",
        sa.Column("submission_id", sa.String(64), primary_key=True),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("shard", sa.SmallInteger, nullable=False),
        sa.Column("operation", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("queued_at", TZ, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("answered_at", TZ),
        sa.Column("pnd_version", sa.BigInteger, nullable=False),
        sa.Column("reasons", JSONB, nullable=False),
        sa.Column("released_by", sa.Text, nullable=False),
        sa.UniqueConstraint("record_id", "version", name="submissions_record_version"),
    )
    op.create_index(
        "submissions_due", "submissions", ["next_attempt_at"], postgresql_where=sa.text("state = 'QUEUED'")
    )
    op.create_index(
        "submissions_open", "submissions", ["record_id", "version"], postgresql_where=sa.text(OPEN)
    )
    op.create_table(
        "pnd_searches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("criteria", JSONB, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("searched_at", TZ, nullable=False),
        sa.Column("result_count", sa.Integer, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
    )
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("scheduled", sa.Boolean, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("completed_at", TZ, nullable=False),
        sa.Column("pnd_records", sa.BigInteger, nullable=False),
        sa.Column("summary", JSONB, nullable=False),
    )
    op.create_index("reconciliations_completed", "reconciliations", ["completed_at"])
    op.create_table(
        "reconciliation_items",
        sa.Column("reconciliation_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("local_version", sa.BigInteger, nullable=False),
        sa.Column("pnd_version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("reconciliation_id", "record_id"),
    )
    op.create_index(
        "reconciliation_items_order", "reconciliation_items", ["reconciliation_id", "changed_at", "record_id"]
    )


def downgrade() -> None:
    for table in ("reconciliation_items", "reconciliations", "pnd_searches", "submissions", "intelligence"):
        op.drop_table(table)
    drop_platform_schema(op)
