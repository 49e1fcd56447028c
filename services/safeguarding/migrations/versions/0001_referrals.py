"""Referrals, their clocks, open-referral keys, the job-note outbox, and the platform tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op
from toex_common.db import create_platform_schema, drop_platform_schema
from toex_safeguarding.adapters.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_schema(op)
    # The first revision creates the tables as defined; later revisions spell out their changes.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
    drop_platform_schema(op)
