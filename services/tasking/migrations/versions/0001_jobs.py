"""Jobs, assignees, notes, and the platform tables (outbox, inbox, idempotency, audit log).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
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
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("requesting_unit", sa.Text, nullable=False),
        sa.Column("requesting_officer", sa.Text, nullable=False),
        sa.Column("operation_name", sa.Text, nullable=False),
        sa.Column("job_type", sa.String(32), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("subject_entity_ids", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("feedback_rating", sa.SmallInteger),
        sa.Column("feedback_comment", sa.Text),
        sa.Column("feedback_by", sa.Text),
        sa.Column("feedback_at", TZ),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("overdue_notified_for", TZ),
    )
    op.create_index("jobs_region_created", "jobs", ["region", "created_at", "id"])
    op.create_index("jobs_created", "jobs", ["created_at", "id"])
    op.create_index(
        "jobs_open_due", "jobs", ["due_at"], postgresql_where="state IN ('RAISED','ASSIGNED','IN_PROGRESS')"
    )
    op.create_table(
        "job_assignees",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("position", sa.SmallInteger, nullable=False),
        sa.Column("assigned_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "username"),
    )
    op.create_index("job_assignees_username", "job_assignees", ["username"])
    op.create_table(
        "job_notes",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "id"),
    )


def downgrade() -> None:
    op.drop_table("job_notes")
    op.drop_table("job_assignees")
    op.drop_table("jobs")
    drop_platform_schema(op)
