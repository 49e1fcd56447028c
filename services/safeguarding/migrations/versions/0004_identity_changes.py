"""Identity changes from entity resolution: the changes applied per region and the aliases they
left (a merged entity id, or a number followed to its entity -> what it stands for now).

Subjects get one spelling: `entities/ID` (as tasking names a job's subjects) becomes `ID` (as
comms names them), so that a job's referral and a finding's about one person share a key.
A referral whose key would then collide with another open referral's keeps its spelling (the
two are the same person's: the identity consumer matches both spellings, and an officer
closing one ends it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# Keys first (a key whose bare spelling is free), then the referrals none of whose keys kept
# the old spelling (closed referrals hold none).
RESPELL_KEYS = sa.text(
    """
    UPDATE open_referral_keys k SET subject_entity_id = substr(k.subject_entity_id, 10)
    WHERE k.subject_entity_id LIKE 'entities/%'
      AND NOT EXISTS (
        SELECT 1 FROM open_referral_keys o
        WHERE o.region = k.region AND o.concern = k.concern
          AND o.subject_entity_id = substr(k.subject_entity_id, 10)
      )
    """
)
RESPELL_REFERRALS = sa.text(
    """
    UPDATE referrals r SET subject_entity_id = substr(r.subject_entity_id, 10)
    WHERE r.subject_entity_id LIKE 'entities/%'
      AND NOT EXISTS (
        SELECT 1 FROM open_referral_keys k
        WHERE k.referral_id = r.id AND k.subject_entity_id LIKE 'entities/%'
      )
    """
)
# A referral some of whose keys moved and some did not: its moved keys go back.
RESTORE_SPLIT_KEYS = sa.text(
    """
    UPDATE open_referral_keys k SET subject_entity_id = r.subject_entity_id
    FROM referrals r
    WHERE r.id = k.referral_id AND r.subject_entity_id LIKE 'entities/%'
      AND k.subject_entity_id <> r.subject_entity_id
    """
)


def upgrade() -> None:
    op.create_table(
        "identity_changes",
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("change_key", sa.Text, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("undoes", sa.Text, nullable=False),
        sa.Column("undone_by", sa.Text, nullable=False),
        sa.Column("detail", postgresql.JSONB, nullable=False),
        sa.Column("applied_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("region", "change_key"),
    )
    op.create_index(
        "identity_changes_undoes",
        "identity_changes",
        ["region", "undoes"],
        postgresql_where=sa.text("undoes <> ''"),
    )
    op.create_table(
        "subject_aliases",
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("change_key", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("region", "alias"),
    )
    op.create_index("subject_aliases_change", "subject_aliases", ["region", "change_key"])
    bind = op.get_bind()
    bind.execute(RESPELL_KEYS)
    bind.execute(RESPELL_REFERRALS)
    bind.execute(RESTORE_SPLIT_KEYS)


def downgrade() -> None:
    # Subjects keep their one spelling: `ID` and `entities/ID` name the same entity.
    op.drop_index("subject_aliases_change", table_name="subject_aliases")
    op.drop_table("subject_aliases")
    op.drop_index("identity_changes_undoes", table_name="identity_changes")
    op.drop_table("identity_changes")
