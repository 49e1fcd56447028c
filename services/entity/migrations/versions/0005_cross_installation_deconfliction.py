"""Deconfliction across installations: a region's fingerprinted identifiers (with the reference
it gave each) and the other regions known to hold them; the hub's fingerprints of every region.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identifier_fingerprints",
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("ref", sa.String(32), nullable=False, unique=True),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("identifier", "key_id"),
    )
    op.create_table(
        "remote_holders",
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("other_region", sa.String(16), nullable=False),
        sa.Column("contact_role", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("identifier", "other_region"),
    )
    op.create_table(
        "hub_fingerprints",
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("digest", sa.LargeBinary, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("key_id", "digest", "region"),
    )


def downgrade() -> None:
    op.drop_table("hub_fingerprints")
    op.drop_table("remote_holders")
    op.drop_table("identifier_fingerprints")
