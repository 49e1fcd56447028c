"""Safeguarding referrals shown on their linked job: one row per safeguarding referral event
(drafted, evidence added, approved, returned, sent, overdue, decided, closed) on the job it
names, with the event's label. Replaces the notes the safeguarding service asked for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "referral_changes",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("referral", sa.Text, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("concerns", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
    )
    # A job's referrals; a referral's changes on every job (to tell one linked elsewhere since).
    op.create_index("referral_changes_job", "referral_changes", ["job_id"])
    op.create_index("referral_changes_referral", "referral_changes", ["referral", "occurred_at"])


def downgrade() -> None:
    op.drop_index("referral_changes_referral", table_name="referral_changes")
    op.drop_index("referral_changes_job", table_name="referral_changes")
    op.drop_table("referral_changes")
