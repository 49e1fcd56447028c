"""Source records, index keys, entities, history, review tasks, reviewer decisions,
deconfliction claims, match models, job subjects; and the platform tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from toex_common.db import create_platform_schema, drop_platform_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
JSONB = postgresql.JSONB


def upgrade() -> None:
    create_platform_schema(op)
    op.create_table(
        "source_records",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("source_system", sa.Text, nullable=False),
        sa.Column("source_record_id", sa.Text, nullable=False),
        sa.Column("record_type", sa.String(16), nullable=False),
        sa.Column("source_evaluation", sa.SmallInteger, nullable=False),
        sa.Column("assessment", sa.String(1), nullable=False),
        sa.Column("handling", sa.String(1), nullable=False),
        sa.Column("handling_conditions", sa.Text, nullable=False),
        sa.Column("content", JSONB, nullable=False),
        sa.Column("identifiers", JSONB, nullable=False),
        sa.Column("features", JSONB),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("ingested_at", TZ, nullable=False),
        sa.Column("ingested_by", sa.Text, nullable=False),
        sa.Column("link_method", sa.String(24), nullable=False),
        sa.Column("link_probability", sa.Float, nullable=False),
        sa.Column("link_explanation", JSONB),
        sa.Column("linked_by", sa.Text, nullable=False),
        sa.Column("linked_at", TZ, nullable=False),
        sa.UniqueConstraint("region", "source_system", "source_record_id", name="source_records_source_key"),
    )
    op.create_index("source_records_entity", "source_records", ["entity_id"])
    op.create_table(
        "record_keys",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("record_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("key", "record_id"),
    )
    op.create_index("record_keys_record", "record_keys", ["record_id"])
    op.create_table(
        "entities",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("merged_into", sa.String(32)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("entities_merged_into", "entities", ["merged_into"])
    op.create_table(
        "entity_changes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("others", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("moves", JSONB, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("undone_by", sa.String(32)),
        sa.Column("undoes", sa.String(32)),
    )
    op.create_index("entity_changes_entity", "entity_changes", ["entity_id"])
    op.create_index("entity_changes_others", "entity_changes", ["others"], postgresql_using="gin")
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(32), nullable=False),
        sa.Column("candidate_record_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("explanation", JSONB, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("decided_at", TZ),
    )
    op.create_index("review_tasks_list", "review_tasks", ["state", "region", "created_at", "id"])
    op.create_index("review_tasks_record", "review_tasks", ["record_id"])
    op.create_index("review_tasks_candidate", "review_tasks", ["candidate_record_id"])
    op.create_table(
        "pair_decisions",
        sa.Column("record_a", sa.String(32), nullable=False),
        sa.Column("record_b", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("record_a", "record_b"),
    )
    op.create_index("pair_decisions_b", "pair_decisions", ["record_b"])
    op.create_table(
        "deconflictions",
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("other_region", sa.String(16), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "region", "other_region"),
    )
    op.create_table(
        "match_models",
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "job_subjects",
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("job", "entity_id"),
    )
    op.create_index("job_subjects_entity", "job_subjects", ["entity_id"])


def downgrade() -> None:
    for table in (
        "job_subjects",
        "match_models",
        "deconflictions",
        "pair_decisions",
        "review_tasks",
        "entity_changes",
        "entities",
        "record_keys",
        "source_records",
    ):
        op.drop_table(table)
    drop_platform_schema(op)
