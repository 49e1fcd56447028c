"""Advert network ids kept per advert (`advert_network_members`), so that a network keeps its
id when re-found or grown by another dataset of the same job.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op
from toex_comms.adapters.tables import advert_network_members

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # checkfirst: 0001 creates the tables from the current metadata, which has this one.
    advert_network_members.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    advert_network_members.drop(op.get_bind(), checkfirst=True)
