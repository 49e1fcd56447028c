"""PostgreSQL tables of the comms service. Bulk rows live in Parquet files (adapters/store.py);
the database holds what must be transactional: datasets, watchlists, detections, flags."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()
TZ = DateTime(timezone=True)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("job", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("source_filename", Text, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("profile", Text, nullable=False),
    Column("handling", String(1), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("rows_read", BigInteger, nullable=False),
    Column("rows_accepted", BigInteger, nullable=False),
    Column("rows_rejected", BigInteger, nullable=False),
    Column("distinct_identifiers", BigInteger, nullable=False),
    Column("first_time", TZ),
    Column("last_time", TZ),
    UniqueConstraint("region", "job", "kind", "content_sha256", name="datasets_same_file"),
    Index("datasets_region_created", "region", "created_at"),
)

mapping_profiles = Table(
    "mapping_profiles",
    metadata,
    Column("region", String(16), nullable=False),
    Column("profile_id", String(64), nullable=False),
    # The files it reads (DatasetKind): profiles stored before adverts had any are call data.
    Column("kind", String(16), nullable=False, server_default="cdr"),
    Column("body", JSONB, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "profile_id"),
)

watchlists = Table(
    "watchlists",
    metadata,
    Column("region", String(16), nullable=False),
    Column("watchlist_id", String(64), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "watchlist_id"),
)

watchlist_numbers = Table(
    "watchlist_numbers",
    metadata,
    Column("region", String(16), nullable=False),
    Column("watchlist_id", String(64), nullable=False),
    Column("number", BigInteger, nullable=False),
    PrimaryKeyConstraint("region", "watchlist_id", "number"),
)

# The id of the advert network each advert belongs to, per region and job ("" for a region's
# own datasets), kept so that a network re-found or grown keeps its id (migration 0006).
advert_network_members = Table(
    "advert_network_members",
    metadata,
    Column("region", String(16), nullable=False),
    Column("job", Text, nullable=False),
    Column("advert_id", Text, nullable=False),
    Column("network_id", String(32), nullable=False),
    Column("dataset", Text, nullable=False),
    Column("recorded_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "job", "advert_id"),
)

# Online accounts on a list, `platform:handle` in normal form (migration 0005).
watchlist_accounts = Table(
    "watchlist_accounts",
    metadata,
    Column("region", String(16), nullable=False),
    Column("watchlist_id", String(64), nullable=False),
    Column("account", Text, nullable=False),
    PrimaryKeyConstraint("region", "watchlist_id", "account"),
)

watchlist_contacts = Table(
    "watchlist_contacts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("dataset_id", String(32), nullable=False),
    Column("list_a", String(64), nullable=False),
    Column("kind_a", String(32), nullable=False),
    Column("number_a", BigInteger, nullable=False),
    Column("list_b", String(64), nullable=False),
    Column("kind_b", String(32), nullable=False),
    Column("number_b", BigInteger, nullable=False),
    Column("first_time", TZ, nullable=False),
    Column("last_time", TZ, nullable=False),
    Column("contacts", BigInteger, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("sms", BigInteger, nullable=False),
    Column("duration", BigInteger, nullable=False),
    Column("detected_at", TZ, nullable=False),
    UniqueConstraint(
        "dataset_id", "list_a", "number_a", "list_b", "number_b", name="watchlist_contacts_once"
    ),
    Index("watchlist_contacts_region", "region", "detected_at"),
)

# One per identifier, entity and source record (migration 0003: "" for those given by hand or
# recorded before), so that each can follow its record when its entity is split.
attributions = Table(
    "attributions",
    metadata,
    Column("region", String(16), nullable=False),
    Column("identifier", String(32), nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("source", String(32), nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("recorded_at", TZ, nullable=False),
    Column("record", Text, nullable=False, server_default=""),
    # The identity change that last moved it to this entity ("": none).
    Column("via_change", Text, nullable=False, server_default=""),
    # Why a person should check it ("": nothing to check).
    Column("review", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("region", "identifier", "entity_id", "record"),
    Index("attributions_entity", "region", "entity_id"),
)

# The identity changes from entity resolution applied to a region's attributions, by change
# id: a change applied twice, or a merge arriving after the split that undid it, changes nothing.
identity_changes = Table(
    "identity_changes",
    metadata,
    Column("region", String(16), nullable=False),
    Column("change_id", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    # The surviving entity of a merge; the entity split from.
    Column("entity", Text, nullable=False),
    Column("merged", ARRAY(Text), nullable=False),
    Column("moved_records", ARRAY(Text), nullable=False),
    Column("moved_to", ARRAY(Text), nullable=False),
    # The merge a split undid ("": none); the split that undid this merge ("": none yet).
    Column("undoes", Text, nullable=False),
    Column("undone_by", Text, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("occurred_at", TZ, nullable=False),
    Column("applied_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "change_id"),
    Index("identity_changes_undoes", "region", "undoes", postgresql_where="undoes <> ''"),
    Index("identity_changes_merged", "merged", postgresql_using="gin"),
    Index("identity_changes_moved", "moved_records", postgresql_using="gin"),
)

# What each identity change did to each attribution, with the attribution as it found it (who
# decided it and when, the change that had moved it before): its history, never rewritten.
attribution_history = Table(
    "attribution_history",
    metadata,
    Column("region", String(16), nullable=False),
    Column("change_id", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("identifier", String(32), nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("record", Text, nullable=False),
    Column("to_entity", Text, nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("label", Text, nullable=False),
    Column("source", String(32), nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("recorded_at", TZ, nullable=False),
    Column("via_change", Text, nullable=False),
    Column("review", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "change_id", "identifier", "entity_id", "record"),
    Index("attribution_history_identifier", "region", "identifier"),
)

advert_flags = Table(
    "advert_flags",
    metadata,
    Column("dataset_id", String(32), nullable=False),
    Column("region", String(16), nullable=False),
    Column("number", BigInteger, nullable=False),
    Column("reasons", ARRAY(Text), nullable=False),
    Column("adverts", BigInteger, nullable=False),
    Column("locations", ARRAY(Text), nullable=False),
    Column("sites", ARRAY(Text), nullable=False),
    Column("cdr_datasets", ARRAY(Text), nullable=False),
    Column("first_time", TZ),
    Column("last_time", TZ),
    # The call datasets holding the number's contact with a watchlist number (migration 0002).
    Column("contact_datasets", ARRAY(Text), nullable=False, server_default="{}"),
    PrimaryKeyConstraint("dataset_id", "number"),
)

known_jobs = Table(
    "known_jobs",
    metadata,
    Column("name", Text, primary_key=True),
    Column("region", String(16), nullable=False),
    Column("job_type", String(32), nullable=False),
    Column("handling", String(1), nullable=False),
    Column("operation_name", Text, nullable=False),
)
