"""Tables of the tasking database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
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
    # What products group by (toex_kernel.forces); NULL for a job raised without them.
    Column("requesting_force", String(32)),
    Column("threat_category", String(32)),
    # The requesting officer's feedback by one-time token: the name they gave, and the token's
    # SHA-256 (never the token) and expiry, set on delivery.
    Column("feedback_officer_name", Text),
    Column("feedback_token_hash", String(64)),
    Column("feedback_token_expires_at", DateTime(timezone=True)),
    Index("jobs_region_created", "region", "created_at", "id"),
    Index("jobs_collaborating", "collaborating_regions", postgresql_using="gin"),
    Index("jobs_created", "created_at", "id"),
    Index("jobs_force_threat", "requesting_force", "threat_category"),
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

# Changes of safeguarding referrals linked to jobs: one row per safeguarding event, on the job
# it names (the job shows each referral as its latest change says; see domain/referrals.py).
referral_changes = Table(
    "referral_changes",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("referral", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(32), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # The event's label: its region (the subject's) and handling code.
    Column("region", String(16), nullable=False),
    Column("handling", String(1), nullable=False),
    Column("summary", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("concerns", ARRAY(Text), nullable=False),
    Column("risk_level", String(16), nullable=False),
    Index("referral_changes_job", "job_id"),
    Index("referral_changes_referral", "referral", "occurred_at"),
)

# The inbox read model: one row per event and recipient (a user, `user:<name>`, or a role in a
# region, `role:<role>@<REGION>`), with the event's region and handling code.
inbox_items = Table(
    "inbox_items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("item_type", String(32), nullable=False),
    Column("summary", Text, nullable=False),
    Column("resource", Text, nullable=False),
    Column("region", String(16), nullable=False),
    Column("handling", String(1), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    # The order items arrived in, for WatchInbox: the writing transaction's id, then a sequence.
    # A watch reads only items of transactions older than every one still running, so an item
    # committed late never lands behind a place a watch has already passed.
    Column("txid", BigInteger, nullable=False, server_default=text("(pg_current_xact_id()::text)::bigint")),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    UniqueConstraint("event_id", "recipient", name="inbox_items_event_recipient"),
    Index("inbox_items_recipient_time", "recipient", "occurred_at", "id"),
    Index("inbox_items_arrival", "txid", "seq"),
)

# Read state, per user: an item addressed to a role is read by each holder for themselves.
inbox_reads = Table(
    "inbox_reads",
    metadata,
    Column("username", Text, nullable=False),
    Column("item_id", String(32), ForeignKey("inbox_items.id", ondelete="CASCADE"), nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("username", "item_id"),
)
