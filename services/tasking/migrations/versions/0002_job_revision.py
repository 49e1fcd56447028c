"""A job's revision: grows each time the job is stored, and orders its events for the grant read
models the other services keep (JobAccess.revision in toex.tasking.events.v2). Jobs stored before
start at 0; their next change makes them 1 and every later change higher.

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
    op.add_column("jobs", sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("jobs", "revision")
