"""Job grants: the read model of who holds which job (toex_common.grants), and an index for
listing one job's referrals, which is what a job grant's holder lists.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op
from toex_common.grants import create_grant_schema, drop_grant_schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_grant_schema(op)
    op.create_index(
        "referrals_job_created",
        "referrals",
        ["linked_job", "created_at", "id"],
        postgresql_where="linked_job <> ''",
    )


def downgrade() -> None:
    op.drop_index("referrals_job_created", table_name="referrals")
    drop_grant_schema(op)
