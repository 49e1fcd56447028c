"""Job grants learn collaborating regions (`job_grants.collaborators`): for a table that 0002 made
before the shared model had the column.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op
from toex_common.grants import upgrade_grant_schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_grant_schema(op)


def downgrade() -> None:
    # Kept: the model 0002 creates has the column, and the grant lookup reads it.
    pass
