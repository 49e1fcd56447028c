"""The read model's tables (the platform tables come from toex_common.db; the repositories run
plain SQL on these).

Nothing personal is stored: no name, number, free text or username. `jobs` and `referrals` keep
one row per record (states, times, regions, a rating), `counts` the counters per day and month,
`deadlines` the open work with a due time, `reconciliations` each region's newest PND
reconciliation (counts), `activity` how many of each region's events were counted and the newest
one's time.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

TZ = DateTime(timezone=True)

jobs = Table(
    "jobs",
    metadata,
    Column("job", Text, primary_key=True),
    Column("region", String(16), nullable=False),
    Column("force", String(64), nullable=False, server_default=""),
    Column("job_type", String(32), nullable=False, server_default=""),
    Column("state", String(16), nullable=False, server_default=""),
    Column("state_revision", BigInteger, nullable=False, server_default="-1"),
    Column("priority", String(16), nullable=False, server_default=""),
    Column("priority_revision", BigInteger, nullable=False, server_default="-1"),
    Column("due_at", TZ),
    Column("due_revision", BigInteger, nullable=False, server_default="-1"),
    Column("created_at", TZ),
    Column("delivered_at", TZ),
    # Home regions of researchers of other regions who worked the job (never who they were).
    Column("taken_by", ARRAY(String(16)), nullable=False, server_default="{}"),
    Column("rating", SmallInteger),
    Column("rated_at", TZ),
    Column("force_revision", BigInteger, nullable=False, server_default="-1"),
    Column("threat", String(32), nullable=False, server_default=""),
    Column("threat_revision", BigInteger, nullable=False, server_default="-1"),
    Column("commented", Boolean, nullable=False, server_default="false"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("referral", Text, primary_key=True),
    Column("region", String(16), nullable=False),
    Column("drafted_at", TZ),
    Column("state", String(24), nullable=False, server_default=""),
    Column("state_at", TZ),
    Column("state_event", String(64), nullable=False, server_default=""),
    # [{"destination": ..., "due_at": iso or null, "met_at": iso or null}, ...]
    Column("clocks", JSONB, nullable=False, server_default="[]"),
)

counts = Table(
    "counts",
    metadata,
    # "D": the bucket is a day; "M": a month (its first day).
    Column("grain", String(1), nullable=False),
    Column("bucket", Date, nullable=False),
    Column("region", String(16), nullable=False),
    Column("force", String(64), nullable=False),
    Column("figure", String(32), nullable=False),
    Column("value", String(32), nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("grain", "bucket", "region", "force", "figure", "value"),
)

deadlines = Table(
    "deadlines",
    metadata,
    Column("kind", String(8), nullable=False),
    Column("item", Text, nullable=False),
    Column("part", String(32), nullable=False),
    Column("region", String(16), nullable=False),
    Column("force", String(64), nullable=False),
    Column("cohort", Date, nullable=False),
    Column("due_at", TZ, nullable=False),
    PrimaryKeyConstraint("kind", "item", "part"),
)
Index("deadlines_cohort", deadlines.c.cohort)

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("region", String(16), primary_key=True),
    Column("completed_at", TZ, nullable=False),
    Column("reconciliation", Text, nullable=False),
    Column("local_records", BigInteger, nullable=False),
    Column("in_sync", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("stale", BigInteger, nullable=False),
    Column("missing", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("conflict", BigInteger, nullable=False),
)

activity = Table(
    "activity",
    metadata,
    Column("region", String(16), nullable=False),
    # The producing service's domain (tasking, safeguarding, pnd, entity): one consumer's rows.
    Column("domain", String(16), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("latest_event_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "domain"),
)
