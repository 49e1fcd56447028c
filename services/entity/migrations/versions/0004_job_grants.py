"""Job grants: the read model of who holds which job (toex_common.grants), and the job a source
record was resolved under (`source_records.job`, "" for none), indexed for the records and
entities of one job, which is what a grant's holder reaches.

Adding a column with a constant default rewrites nothing (PostgreSQL 11 and later); the index
is partial, so records of no job (every record stored so far) are not in it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from toex_common.grants import create_grant_schema, drop_grant_schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_grant_schema(op)
    op.add_column("source_records", sa.Column("job", sa.Text, nullable=False, server_default=""))
    op.create_index(
        "source_records_job",
        "source_records",
        ["job", "entity_id"],
        postgresql_where=sa.text("job <> ''"),
    )


def downgrade() -> None:
    op.drop_index("source_records_job", table_name="source_records")
    op.drop_column("source_records", "job")
    drop_grant_schema(op)
