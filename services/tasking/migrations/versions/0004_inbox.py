"""The inbox: items built from the event streams, one per event and recipient (a user, or a
role in a region), keeping the event's region and handling code; and each user's read state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("item_type", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        # WatchInbox's order: the writing transaction's id, then a sequence (see tables.py).
        sa.Column(
            "txid",
            sa.BigInteger,
            nullable=False,
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
        ),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
        # One item per event and recipient: a redelivered event adds nothing.
        sa.UniqueConstraint("event_id", "recipient", name="inbox_items_event_recipient"),
    )
    op.create_index("inbox_items_recipient_time", "inbox_items", ["recipient", "occurred_at", "id"])
    op.create_index("inbox_items_arrival", "inbox_items", ["txid", "seq"])
    op.create_table(
        "inbox_reads",
        sa.Column("username", sa.Text, nullable=False),
        sa.Column(
            "item_id", sa.String(32), sa.ForeignKey("inbox_items.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", "item_id"),
    )


def downgrade() -> None:
    op.drop_table("inbox_reads")
    op.drop_index("inbox_items_arrival", table_name="inbox_items")
    op.drop_index("inbox_items_recipient_time", table_name="inbox_items")
    op.drop_table("inbox_items")
