"""Re-resolution under a new model compares it with the model it replaces (`reresolve_from`)
and counts its splits; relations a merge moved or dropped are kept by change
(`relation_moves`), so that undoing the merge puts each back on the entity it came from.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "learning_state", sa.Column("reresolve_from", sa.String(32), nullable=False, server_default="")
    )
    op.add_column(
        "learning_state", sa.Column("reresolve_split", sa.BigInteger, nullable=False, server_default="0")
    )
    op.create_table(
        "relation_moves",
        sa.Column("change_id", sa.String(32), nullable=False),
        sa.Column("relation_id", sa.String(32), nullable=False),
        # "row": `row` is the relation as it was before the merge (moved or dropped by it).
        sa.Column("end_moved", sa.String(8), nullable=False),
        sa.Column("from_entity", sa.Text, nullable=False, server_default=""),
        sa.Column("row", JSONB),
        sa.PrimaryKeyConstraint("change_id", "relation_id", "end_moved"),
    )


def downgrade() -> None:
    op.drop_table("relation_moves")
    op.drop_column("learning_state", "reresolve_split")
    op.drop_column("learning_state", "reresolve_from")
