"""Watchlists hold online accounts too (`watchlist_accounts`: `platform:handle` in normal form).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from alembic import op
from toex_comms.adapters.tables import watchlist_accounts

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # checkfirst: 0001 creates the tables from the current metadata, which has this one.
    watchlist_accounts.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    watchlist_accounts.drop(op.get_bind(), checkfirst=True)
