"""Drop the record_keys index by record: keys are replaced by key and record (the primary
key), and one index less on the largest table makes bulk ingest faster.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("record_keys_record", table_name="record_keys")


def downgrade() -> None:
    op.create_index("record_keys_record", "record_keys", ["record_id"])
