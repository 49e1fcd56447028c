"""Tables of the entity database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()
TZ = DateTime(timezone=True)

source_records = Table(
    "source_records",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("source_system", Text, nullable=False),
    Column("source_record_id", Text, nullable=False),
    Column("record_type", String(16), nullable=False),
    Column("source_evaluation", SmallInteger, nullable=False),
    Column("assessment", String(1), nullable=False),
    Column("handling", String(1), nullable=False),
    Column("handling_conditions", Text, nullable=False),
    Column("content", JSONB, nullable=False),
    Column("identifiers", JSONB, nullable=False),
    Column("features", JSONB),
    Column("content_hash", String(32), nullable=False),
    Column("entity_id", String(32), nullable=False),
    Column("ingested_at", TZ, nullable=False),
    Column("ingested_by", Text, nullable=False),
    # How the record joined its entity.
    Column("link_method", String(24), nullable=False),
    Column("link_probability", Float, nullable=False),
    Column("link_explanation", JSONB),
    Column("linked_by", Text, nullable=False),
    Column("linked_at", TZ, nullable=False),
    # The job of the record's region it was resolved under ("": none); see domain.policy.
    Column("job", Text, nullable=False, server_default=""),
    UniqueConstraint("region", "source_system", "source_record_id", name="source_records_source_key"),
    Index("source_records_entity", "entity_id"),
    # Partial: records resolved under no job (nearly all, and all of a bulk load) add no entry.
    Index("source_records_job", "job", "entity_id", postgresql_where=text("job <> ''")),
)

# Index keys: strong identifiers (tel:, vrm:, email:, handle:, id:), blocking keys and name
# search keys. One row per key and record; the primary key serves the lookups by key.
record_keys = Table(
    "record_keys",
    metadata,
    Column("key", Text, nullable=False),
    Column("record_id", String(32), nullable=False),
    PrimaryKeyConstraint("key", "record_id"),
)

entities = Table(
    "entities",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("entity_type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("merged_into", String(32)),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Index("entities_merged_into", "merged_into"),
)

entity_changes = Table(
    "entity_changes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("entity_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("others", ARRAY(Text), nullable=False),
    Column("moves", JSONB, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", TZ, nullable=False),
    Column("undone_by", String(32)),
    Column("undoes", String(32)),
    Index("entity_changes_entity", "entity_id"),
    Index("entity_changes_others", "others", postgresql_using="gin"),
)

review_tasks = Table(
    "review_tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("record_id", String(32), nullable=False),
    Column("candidate_record_id", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("explanation", JSONB, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("decided_at", TZ),
    Index("review_tasks_list", "state", "region", "created_at", "id"),
    Index("review_tasks_record", "record_id"),
    Index("review_tasks_candidate", "candidate_record_id"),
)

pair_decisions = Table(
    "pair_decisions",
    metadata,
    Column("record_a", String(32), nullable=False),
    Column("record_b", String(32), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("record_a", "record_b"),
    Index("pair_decisions_b", "record_b"),
)

deconflictions = Table(
    "deconflictions",
    metadata,
    Column("entity_id", String(32), nullable=False),
    Column("region", String(16), nullable=False),
    Column("other_region", String(16), nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("entity_id", "region", "other_region"),
)

match_models = Table(
    "match_models",
    metadata,
    Column("version", String(32), primary_key=True),
    Column("params", JSONB, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("active", Boolean, nullable=False),
)

job_subjects = Table(
    "job_subjects",
    metadata,
    Column("job", Text, nullable=False),
    Column("entity_id", String(32), nullable=False),
    Column("region", String(16), nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("job", "entity_id"),
    Index("job_subjects_entity", "entity_id"),
)

# Deconfliction across installations (domain.fingerprints). A region installation: the strong
# identifiers (index keys, `tel:+44...`) it has published a fingerprint of, per key id, with the
# random reference it gave each; and the other regions the hub said hold one too.
identifier_fingerprints = Table(
    "identifier_fingerprints",
    metadata,
    Column("identifier", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("ref", String(32), nullable=False, unique=True),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("identifier", "key_id"),
)

remote_holders = Table(
    "remote_holders",
    metadata,
    Column("identifier", Text, nullable=False),
    Column("other_region", String(16), nullable=False),
    Column("contact_role", Text, nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("identifier", "other_region"),
)

# The hub: every region's fingerprints (never a value, record or entity), by key id and digest,
# with the region's reference, which the hub names back to that region alone.
hub_fingerprints = Table(
    "hub_fingerprints",
    metadata,
    Column("key_id", Text, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("region", String(16), nullable=False),
    Column("ref", Text, nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("key_id", "digest", "region"),
)
