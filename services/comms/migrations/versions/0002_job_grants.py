"""Job grants: the `job_grants` read model kept from tasking's events (toex_common.grants), and,
per advert flag, the call datasets in which its number was in contact with a watchlist number,
so that a job's view of a flag shows only the job's evidence. Flags stored before have none
recorded: under a grant they show no IN_CONTACT_NETWORK.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from alembic import op
from toex_common.grants import create_grant_schema, drop_grant_schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_grant_schema(op)
    # IF NOT EXISTS: 0001 creates the tables from the current metadata, which has the column.
    op.execute(
        "ALTER TABLE advert_flags ADD COLUMN IF NOT EXISTS contact_datasets text[] NOT NULL DEFAULT '{}'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE advert_flags DROP COLUMN IF EXISTS contact_datasets")
    drop_grant_schema(op)
