"""Collaborating regions of a job: regions working the operation with the owning one, whose
supervisors see the job read-only (and, through JobAccess in toex.tasking.events.v2, every
service's grant model learns them). Jobs stored before have none.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("collaborating_regions", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
    )
    # ListJobs asks which jobs a supervisor's region collaborates on (array containment).
    op.create_index("jobs_collaborating", "jobs", ["collaborating_regions"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("jobs_collaborating", table_name="jobs")
    op.drop_column("jobs", "collaborating_regions")
