"""A bounded uniform sample of the person records, kept as they are written.

`person_sample` holds, for at most `TOEX_LEARNING_SAMPLE_CAP` person records chosen uniformly at
random, the record id, its random key and its comparison features: the model is estimated from
it, so the estimate never reads `source_records` (at a million records, the database reading
that table for a sample is what slowed resolution). `person_sample_state` holds the key a new
record must be under to enter and the sample's size (domain/sample.py). A record deleted from
`source_records` leaves the sample with it (the foreign key cascades).

Backfilled here from the stored person records: the `cap` records with the smallest of a key
drawn for each (one read of the records table, once).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB
from toex_entity.config import Settings

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_sample",
        sa.Column(
            "record_id",
            sa.String(32),
            sa.ForeignKey("source_records.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sample_key", sa.Float(53), nullable=False),
        sa.Column("features", JSONB, nullable=False),
    )
    op.create_index("person_sample_key", "person_sample", ["sample_key"])
    op.create_table(
        "person_sample_state",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("threshold", sa.Float(53), nullable=False, server_default=sa.text("1.0")),
        sa.Column("size", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    cap = Settings().learning_sample_cap
    bind = op.get_bind()
    # One more than the cap: if there is one, every record did not fit, and the largest key kept
    # becomes the threshold.
    bind.execute(
        sa.text(
            "INSERT INTO person_sample (record_id, sample_key, features) "
            "SELECT r.id, k.sample_key, r.features FROM ("
            "  SELECT id, random() AS sample_key FROM source_records WHERE features IS NOT NULL "
            "  ORDER BY 2 LIMIT :over"
            ") k JOIN source_records r ON r.id = k.id"
        ),
        {"over": cap + 1},
    )
    size = int(bind.execute(sa.text("SELECT count(*) FROM person_sample")).scalar_one())
    threshold = 1.0
    if size > cap:
        bind.execute(
            sa.text(
                "DELETE FROM person_sample WHERE record_id = "
                "(SELECT record_id FROM person_sample ORDER BY sample_key DESC LIMIT 1)"
            )
        )
        size = cap
        threshold = float(bind.execute(sa.text("SELECT max(sample_key) FROM person_sample")).scalar_one())
    bind.execute(
        sa.text("INSERT INTO person_sample_state (name, threshold, size) VALUES ('persons', :t, :n)"),
        {"t": threshold, "n": size},
    )


def downgrade() -> None:
    op.drop_table("person_sample_state")
    op.drop_index("person_sample_key", table_name="person_sample")
    op.drop_table("person_sample")
