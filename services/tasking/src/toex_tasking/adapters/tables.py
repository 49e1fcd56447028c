"""Tables of the tasking database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("requesting_unit", Text, nullable=False),
    Column("requesting_officer", Text, nullable=False),
    Column("operation_name", Text, nullable=False),
    Column("job_type", String(32), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("description", Text, nullable=False),
    Column("handling", String(1), nullable=False),
    Column("state", String(16), nullable=False),
    Column("subject_entity_ids", ARRAY(Text), nullable=False),
    Column("product", Text, nullable=False),
    Column("feedback_rating", SmallInteger),
    Column("feedback_comment", Text),
    Column("feedback_by", Text),
    Column("feedback_at", DateTime(timezone=True)),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("overdue_notified_for", DateTime(timezone=True)),
    # Grows with every change stored: orders the job's events for the services' grant models.
    Column("revision", BigInteger, nullable=False, server_default="0"),
    # Regions collaborating on the job (codes); their supervisors see it read-only.
    Column("collaborating_regions", ARRAY(Text), nullable=False, server_default="{}"),
    Index("jobs_region_created", "region", "created_at", "id"),
    Index("jobs_collaborating", "collaborating_regions", postgresql_using="gin"),
    Index("jobs_created", "created_at", "id"),
    Index("jobs_open_due", "due_at", postgresql_where="state IN ('RAISED','ASSIGNED','IN_PROGRESS')"),
)

job_assignees = Table(
    "job_assignees",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("username", Text, nullable=False),
    Column("region", String(16), nullable=False),
    Column("position", SmallInteger, nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("job_id", "username"),
    Index("job_assignees_username", "username"),
)

job_notes = Table(
    "job_notes",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("id", String(32), nullable=False),
    Column("author", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("job_id", "id"),
)
