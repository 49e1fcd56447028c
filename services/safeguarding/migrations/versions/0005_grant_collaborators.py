"""Job grants learn collaborating regions: `job_grants.collaborators` (toex_common.grants), for
databases whose job_grants table was made by 0003 before the shared model had the column (a
table made since has it already).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from alembic import op
from toex_common.grants import upgrade_grant_schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_grant_schema(op)


def downgrade() -> None:
    # Kept: the shared model that 0003 creates has the column, and the grant lookup reads it.
    pass
