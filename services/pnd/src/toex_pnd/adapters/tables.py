"""Tables of the PND sync database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
TZ = DateTime(timezone=True)
OPEN = "state IN ('QUEUED','HELD')"

intelligence = Table(
    "intelligence",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("entity", JSONB, nullable=False),
    Column("grading", JSONB, nullable=False),
    Column("links", JSONB, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("deleted_at", TZ),
    Column("sync_state", String(16), nullable=False),
    Column("pnd_id", Text, nullable=False),
    Column("pnd_version", BigInteger, nullable=False),
    Column("rejection", JSONB, nullable=False),
    Column("released_by", Text, nullable=False),
    Column("ever_sent", Boolean, nullable=False),
    # The job it was made for, "" if none (migration 0002).
    Column("job", Text, nullable=False, server_default=""),
    Index("intelligence_region_updated", "region", "updated_at", "id"),
    Index("intelligence_updated", "updated_at", "id"),
    # What a job grant's holder lists: one job's records, newest change first.
    Index("intelligence_job_updated", "job", "updated_at", "id", postgresql_where="job <> ''"),
)

submissions = Table(
    "submissions",
    metadata,
    Column("submission_id", String(64), primary_key=True),
    Column("record_id", String(64), nullable=False),
    Column("region", String(16), nullable=False),
    Column("version", BigInteger, nullable=False),
    # Which sender handles it: a stable hash of the record id, so one record has one sender.
    Column("shard", SmallInteger, nullable=False),
    Column("operation", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("queued_at", TZ, nullable=False),
    Column("next_attempt_at", TZ, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("answered_at", TZ),
    Column("pnd_version", BigInteger, nullable=False),
    Column("reasons", JSONB, nullable=False),
    Column("released_by", Text, nullable=False),
    # Who made the change it carries, "" if unknown (migration 0004).
    Column("submitted_by", Text, nullable=False, server_default=""),
    UniqueConstraint("record_id", "version", name="submissions_record_version"),
    Index("submissions_due", "next_attempt_at", postgresql_where="state = 'QUEUED'"),
    Index("submissions_open", "record_id", "version", postgresql_where=OPEN),
)

pnd_searches = Table(
    "pnd_searches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("criteria", JSONB, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("searched_at", TZ, nullable=False),
    Column("result_count", Integer, nullable=False),
    Column("truncated", Boolean, nullable=False),
    # The job it was made for, "" if none (migration 0002).
    Column("job", Text, nullable=False, server_default=""),
)

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("scheduled", Boolean, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("completed_at", TZ, nullable=False),
    Column("pnd_records", BigInteger, nullable=False),
    Column("summary", JSONB, nullable=False),
    Index("reconciliations_completed", "completed_at"),
)

reconciliation_items = Table(
    "reconciliation_items",
    metadata,
    Column("reconciliation_id", String(64), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("region", String(16), nullable=False),
    Column("category", String(16), nullable=False),
    Column("local_version", BigInteger, nullable=False),
    Column("pnd_version", BigInteger, nullable=False),
    Column("changed_at", TZ, nullable=False),
    PrimaryKeyConstraint("reconciliation_id", "record_id"),
    Index("reconciliation_items_order", "reconciliation_id", "changed_at", "record_id"),
)
