"""Remove both records' values from stored link explanations: a link's explanation compares a
new record with its best candidate, which may be another region's record, and its values were
shown to anyone reading the entity's history. Values are recomputed by ExplainMatch for a
caller who may see both records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE source_records
           SET link_explanation = jsonb_set(
                   link_explanation,
                   '{contributions}',
                   (SELECT coalesce(jsonb_agg(c || '{"value_a": "", "value_b": ""}'::jsonb ORDER BY i), '[]'::jsonb)
                      FROM jsonb_array_elements(link_explanation -> 'contributions') WITH ORDINALITY AS t(c, i))
               ) || '{"text": ""}'::jsonb
         WHERE link_explanation IS NOT NULL
           AND jsonb_typeof(link_explanation -> 'contributions') = 'array'
        """
    )


def downgrade() -> None:
    """The values are gone; nothing to restore."""
