"""Who made the change each submission carries (`submissions.submitted_by`), so the PND's answer
names them in its event. A queued or held version 1 was made by its record's creator; any other
submission made before is of someone unknown (""), as are answered ones, whose events are out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("submitted_by", sa.Text, nullable=False, server_default=""))
    op.execute(
        "UPDATE submissions s SET submitted_by = i.created_by FROM intelligence i"
        " WHERE i.id = s.record_id AND s.version = 1 AND s.state IN ('QUEUED', 'HELD')"
    )


def downgrade() -> None:
    op.drop_column("submissions", "submitted_by")
