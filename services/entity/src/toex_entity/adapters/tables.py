"""Tables of the entity database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
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
    # ACTIVE, RETIRED (was active), REJECTED (failed its checks; never active).
    Column("status", String(16), nullable=False, server_default="ACTIVE"),
    Column("checks", JSONB),
    Column("records_seen", BigInteger),
)

# The learning worker's state (service_layer/learning.py), one row ("person").
learning_state = Table(
    "learning_state",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("records_at_estimate", BigInteger, nullable=False, server_default="0"),
    Column("estimated_at", TZ),
    Column("reresolve_model", String(32), nullable=False, server_default=""),
    Column("reresolve_cursor", String(32), nullable=False, server_default=""),
    Column("reresolve_scanned", BigInteger, nullable=False, server_default="0"),
    Column("reresolve_merged", BigInteger, nullable=False, server_default="0"),
    Column("reresolve_done", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", TZ),
    # The model the re-resolution replaces (its levels are compared with the new model's, so
    # that only records whose pairs score differently are read; "" : every record), and the
    # records it split off (migration 0009).
    Column("reresolve_from", String(32), nullable=False, server_default=""),
    Column("reresolve_split", BigInteger, nullable=False, server_default="0"),
)

# A bounded uniform sample of the person records, kept as they are written (domain/sample.py,
# migration 0011): what the model is estimated from, so the estimate never reads
# `source_records`. A record deleted from the store leaves the sample with it.
person_sample = Table(
    "person_sample",
    metadata,
    Column("record_id", String(32), ForeignKey("source_records.id", ondelete="CASCADE"), primary_key=True),
    # Random, uniform in [0, 1): the sample is the records with the smallest keys.
    Column("sample_key", Float(53), nullable=False),
    Column("features", JSONB, nullable=False),
    Index("person_sample_key", "sample_key"),
)

# The sample's one row ("persons"): the key a new record must be under to enter, and how many
# rows the sample holds (decides when it is trimmed back to the cap).
person_sample_state = Table(
    "person_sample_state",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("threshold", Float(53), nullable=False, server_default=text("1.0")),
    Column("size", BigInteger, nullable=False, server_default=text("0")),
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

# Relations between entities (domain.relations): `subject` (a person entity) `kind` `target`
# (an entity id, or an address key `addr:<postcode>|<premises>`), one row per source record
# that says so, with its grading and time span. Merges and splits move `subject`/`target`.
relations = Table(
    "relations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("subject", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("source_system", Text, nullable=False),
    Column("source_record_id", Text, nullable=False),
    Column("source_evaluation", SmallInteger, nullable=False),
    Column("assessment", String(1), nullable=False),
    Column("handling", String(1), nullable=False),
    Column("handling_conditions", Text, nullable=False, server_default=""),
    Column("valid_from", Date),
    Column("valid_to", Date),
    Column("recorded_at", TZ, nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("job", Text, nullable=False, server_default=""),
    UniqueConstraint(
        "region",
        "kind",
        "subject",
        "target",
        "source_system",
        "source_record_id",
        name="relations_source_key",
    ),
    Index("relations_subject", "subject"),
    Index("relations_target", "target"),
    Index("relations_region_kind", "region", "kind"),
)

# What a person record says of the person's circumstances, as recorded (domain.relations.
# PersonAttributes): one row per source record that says any of it.
person_attributes = Table(
    "person_attributes",
    metadata,
    Column("record_id", String(32), primary_key=True),
    Column("occupation", Text, nullable=False, server_default=""),
    Column("student", Boolean, nullable=False, server_default=text("false")),
    Column("nationality", String(2), nullable=False, server_default=""),
    Column("visa_type", Text, nullable=False, server_default=""),
)

# Bank accounts (domain.accounts), keyed by their normal form (`bank:GB:<sort code>:<number>`),
# with the entity they resolved to and what the check said.
bank_accounts = Table(
    "bank_accounts",
    metadata,
    Column("key", Text, primary_key=True),
    Column("entity_id", String(32), nullable=False),
    Column("region", String(16), nullable=False),
    Column("sort_code", String(6), nullable=False, server_default=""),
    Column("account_number", String(8), nullable=False, server_default=""),
    Column("iban", String(34), nullable=False, server_default=""),
    Column("modulus_checked", Boolean, nullable=False),
    Index("bank_accounts_entity", "entity_id"),
)

# Mule clusters already alerted on (migration 0008).
mule_alerts = Table(
    "mule_alerts",
    metadata,
    Column("cluster_id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("detected_at", TZ, nullable=False),
)

# Each relation a merge moved or dropped, as it was before (migration 0009: `end_moved` "row",
# `row` the whole row), so that undoing the merge puts it back.
relation_moves = Table(
    "relation_moves",
    metadata,
    Column("change_id", String(32), nullable=False),
    Column("relation_id", String(32), nullable=False),
    Column("end_moved", String(8), nullable=False),
    Column("from_entity", Text, nullable=False, server_default=""),
    Column("row", JSONB),
    PrimaryKeyConstraint("change_id", "relation_id", "end_moved"),
)
