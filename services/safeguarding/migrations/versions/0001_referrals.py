"""Referrals, their clocks, open-referral keys, the job-note outbox, and the platform tables.

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
UNMET_DEADLINE = "satisfied_at IS NULL AND kind IN ('LOCAL_AUTHORITY_DECISION','NRM_REASONABLE_GROUNDS')"


def upgrade() -> None:
    create_platform_schema(op)
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("subject_entity_id", sa.Text, nullable=False),
        sa.Column("subject", postgresql.JSONB, nullable=False),
        sa.Column("concerns", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("evidence", postgresql.JSONB, nullable=False),
        sa.Column("destinations", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("destinations_chosen", sa.Boolean, nullable=False),
        sa.Column("progress", postgresql.JSONB, nullable=False),
        sa.Column("linked_job", sa.Text, nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("submitted_for_approval_by", sa.Text, nullable=False),
        sa.Column("approved_by", sa.Text, nullable=False),
        sa.Column("approved_at", TZ),
        sa.Column("return_reason", sa.Text, nullable=False),
        sa.Column("close_reason", sa.Text, nullable=False),
        sa.Column("duty_to_notify", postgresql.JSONB),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("referrals_region_created", "referrals", ["region", "created_at", "id"])
    op.create_index("referrals_created", "referrals", ["created_at", "id"])
    op.create_table(
        "referral_clocks",
        sa.Column("referral_id", sa.String(32), nullable=False),
        sa.Column("position", sa.SmallInteger, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("due_at", TZ),
        sa.Column("not_before", TZ),
        sa.Column("satisfied_at", TZ),
        sa.Column("escalation", sa.SmallInteger, nullable=False),
        sa.Column("escalated_at", TZ),
        sa.Column("next_escalation_at", TZ),
        sa.PrimaryKeyConstraint("referral_id", "position"),
    )
    op.create_index(
        "referral_clocks_overdue",
        "referral_clocks",
        ["due_at", "referral_id", "position"],
        postgresql_where=sa.text(UNMET_DEADLINE),
    )
    op.create_index(
        "referral_clocks_region_overdue",
        "referral_clocks",
        ["region", "due_at", "referral_id", "position"],
        postgresql_where=sa.text(UNMET_DEADLINE),
    )
    op.create_index(
        "referral_clocks_escalation",
        "referral_clocks",
        ["next_escalation_at"],
        postgresql_where=sa.text("next_escalation_at IS NOT NULL"),
    )
    op.create_table(
        "open_referral_keys",
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("subject_entity_id", sa.Text, nullable=False),
        sa.Column("concern", sa.String(32), nullable=False),
        sa.Column("referral_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("region", "subject_entity_id", "concern"),
    )
    op.create_index("open_referral_keys_referral", "open_referral_keys", ["referral_id"])
    op.create_table(
        "job_note_outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("referral", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("sent_at", TZ),
        sa.Column("failed_at", TZ),
        sa.Column("last_error", sa.Text),
    )
    op.create_index(
        "job_note_outbox_pending",
        "job_note_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("job_note_outbox")
    op.drop_table("open_referral_keys")
    op.drop_table("referral_clocks")
    op.drop_table("referrals")
    drop_platform_schema(op)
