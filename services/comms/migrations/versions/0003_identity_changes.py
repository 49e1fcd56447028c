"""Attributions follow entity merges and splits: each attribution names the entity record it
came from ("" for those given by hand and those recorded before), so the key becomes
(region, identifier, entity, record); the change that last moved it and a review note; the
identity changes applied per region and the history of what each did to each attribution.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-12
"""

from alembic import op
from toex_comms.adapters.tables import attribution_history, identity_changes

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS and checkfirst: 0001 creates the tables from the current metadata, which
    # has all of this already.
    for column in ("record", "via_change", "review"):
        op.execute(f"ALTER TABLE attributions ADD COLUMN IF NOT EXISTS {column} text NOT NULL DEFAULT ''")
    op.execute(
        "ALTER TABLE attributions DROP CONSTRAINT IF EXISTS attributions_pkey, "
        "ADD CONSTRAINT attributions_pkey PRIMARY KEY (region, identifier, entity_id, record)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS attributions_entity ON attributions (region, entity_id)")
    bind = op.get_bind()
    identity_changes.create(bind, checkfirst=True)
    attribution_history.create(bind, checkfirst=True)


def downgrade() -> None:
    attribution_history.drop(op.get_bind(), checkfirst=True)
    identity_changes.drop(op.get_bind(), checkfirst=True)
    op.execute("DROP INDEX IF EXISTS attributions_entity")
    # One per identifier and entity again: the oldest of those the records held.
    op.execute(
        "DELETE FROM attributions a USING attributions b WHERE a.region = b.region "
        "AND a.identifier = b.identifier AND a.entity_id = b.entity_id "
        "AND (a.recorded_at, a.record) > (b.recorded_at, b.record)"
    )
    op.execute(
        "ALTER TABLE attributions DROP CONSTRAINT attributions_pkey, "
        "ADD CONSTRAINT attributions_pkey PRIMARY KEY (region, identifier, entity_id)"
    )
    for column in ("review", "via_change", "record"):
        op.execute(f"ALTER TABLE attributions DROP COLUMN {column}")
