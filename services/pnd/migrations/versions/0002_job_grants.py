"""Job grants: the read model of who holds which job (toex_common.grants); the job each record
and search was made for (records and searches made before were made for none); and an index
for listing one job's records, which is what a job grant's holder lists.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from toex_common.grants import create_grant_schema, drop_grant_schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_grant_schema(op)
    op.add_column("intelligence", sa.Column("job", sa.Text, nullable=False, server_default=""))
    op.add_column("pnd_searches", sa.Column("job", sa.Text, nullable=False, server_default=""))
    op.create_index(
        "intelligence_job_updated",
        "intelligence",
        ["job", "updated_at", "id"],
        postgresql_where=sa.text("job <> ''"),
    )


def downgrade() -> None:
    op.drop_index("intelligence_job_updated", table_name="intelligence")
    op.drop_column("pnd_searches", "job")
    op.drop_column("intelligence", "job")
    drop_grant_schema(op)
