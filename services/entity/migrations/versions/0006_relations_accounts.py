"""Relations between entities, person attributes for the mule analysis, bank accounts.

`relations`: one row per source record saying that a person uses a phone, holds an account,
lives at an address (an address key, `addr:<postcode>|<premises>`)...; `person_attributes`:
occupation, student status, nationality and visa type as a record says them; `bank_accounts`:
accounts by normal form with the entity they resolved to.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "relations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("source_system", sa.Text, nullable=False),
        sa.Column("source_record_id", sa.Text, nullable=False),
        sa.Column("source_evaluation", sa.SmallInteger, nullable=False),
        sa.Column("assessment", sa.String(1), nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("handling_conditions", sa.Text, nullable=False, server_default=""),
        sa.Column("valid_from", sa.Date),
        sa.Column("valid_to", sa.Date),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("job", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint(
            "region",
            "kind",
            "subject",
            "target",
            "source_system",
            "source_record_id",
            name="relations_source_key",
        ),
    )
    op.create_index("relations_subject", "relations", ["subject"])
    op.create_index("relations_target", "relations", ["target"])
    op.create_index("relations_region_kind", "relations", ["region", "kind"])
    op.create_table(
        "person_attributes",
        sa.Column("record_id", sa.String(32), primary_key=True),
        sa.Column("occupation", sa.Text, nullable=False, server_default=""),
        sa.Column("student", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("nationality", sa.String(2), nullable=False, server_default=""),
        sa.Column("visa_type", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "bank_accounts",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("sort_code", sa.String(6), nullable=False, server_default=""),
        sa.Column("account_number", sa.String(8), nullable=False, server_default=""),
        sa.Column("iban", sa.String(34), nullable=False, server_default=""),
        sa.Column("modulus_checked", sa.Boolean, nullable=False),
    )
    op.create_index("bank_accounts_entity", "bank_accounts", ["entity_id"])


def downgrade() -> None:
    op.drop_table("bank_accounts")
    op.drop_table("person_attributes")
    op.drop_table("relations")
