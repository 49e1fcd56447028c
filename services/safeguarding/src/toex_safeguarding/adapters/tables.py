"""Tables of the safeguarding database (the platform tables come from toex_common.db)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
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
DEADLINE_KINDS = "('LOCAL_AUTHORITY_DECISION','NRM_REASONABLE_GROUNDS')"

referrals = Table(
    "referrals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("region", String(16), nullable=False),
    Column("state", String(24), nullable=False),
    Column("subject_entity_id", Text, nullable=False),
    # The subject's details other than the entity id (date of birth, age band, local authority,
    # consent) and the referral's lists, as JSON: read and written with the referral, never queried.
    Column("subject", JSONB, nullable=False),
    Column("concerns", ARRAY(Text), nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("evidence", JSONB, nullable=False),
    Column("destinations", ARRAY(Text), nullable=False),
    Column("destinations_chosen", Boolean, nullable=False),
    Column("progress", JSONB, nullable=False),
    Column("linked_job", Text, nullable=False),
    Column("handling", String(1), nullable=False),
    Column("submitted_for_approval_by", Text, nullable=False),
    Column("approved_by", Text, nullable=False),
    Column("approved_at", TZ),
    Column("return_reason", Text, nullable=False),
    Column("close_reason", Text, nullable=False),
    # The MS1 content exactly as sent: nothing identifying (see DutyToNotify).
    Column("duty_to_notify", JSONB),
    Column("created_by", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Index("referrals_region_created", "region", "created_at", "id"),
    Index("referrals_created", "created_at", "id"),
    # A job's referrals, newest first: what a job grant's holder lists.
    Index("referrals_job_created", "linked_job", "created_at", "id", postgresql_where="linked_job <> ''"),
)

referral_clocks = Table(
    "referral_clocks",
    metadata,
    Column("referral_id", String(32), nullable=False),
    Column("position", SmallInteger, nullable=False),
    Column("region", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("destination", String(32), nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("due_at", TZ),
    Column("not_before", TZ),
    Column("satisfied_at", TZ),
    Column("escalation", SmallInteger, nullable=False),
    Column("escalated_at", TZ),
    # When the escalation scan should next look at this clock (NULL: never again).
    Column("next_escalation_at", TZ),
    PrimaryKeyConstraint("referral_id", "position"),
    Index(
        "referral_clocks_overdue",
        "due_at",
        "referral_id",
        "position",
        postgresql_where=f"satisfied_at IS NULL AND kind IN {DEADLINE_KINDS}",
    ),
    Index(
        "referral_clocks_region_overdue",
        "region",
        "due_at",
        "referral_id",
        "position",
        postgresql_where=f"satisfied_at IS NULL AND kind IN {DEADLINE_KINDS}",
    ),
    Index(
        "referral_clocks_escalation", "next_escalation_at", postgresql_where="next_escalation_at IS NOT NULL"
    ),
)

# At most one open referral per region, subject and concern: the dedup rule for triggers,
# enforced by the primary key so concurrent consumers cannot both draft.
open_referral_keys = Table(
    "open_referral_keys",
    metadata,
    Column("region", String(16), nullable=False),
    Column("subject_entity_id", Text, nullable=False),
    Column("concern", String(32), nullable=False),
    Column("referral_id", String(32), nullable=False),
    PrimaryKeyConstraint("region", "subject_entity_id", "concern"),
    Index("open_referral_keys_referral", "referral_id"),
)

# The identity changes from entity resolution applied to a region's referrals (see
# domain/identity.py), by key: a change id, a number linked to an entity, or a notice given once.
# What each did (the referrals it moved, combined or told) is kept so that an undo can put it back.
identity_changes = Table(
    "identity_changes",
    metadata,
    Column("region", String(16), nullable=False),
    Column("change_key", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("entity", Text, nullable=False),
    # The merge a split undid ("": none).
    Column("undoes", Text, nullable=False),
    # The split that undid this merge ("": none yet).
    Column("undone_by", Text, nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("applied_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "change_key"),
    Index("identity_changes_undoes", "region", "undoes", postgresql_where="undoes <> ''"),
)

# What a merged entity id or a number followed to its entity stands for now, per region; the
# change that said so (forgotten when that change is undone).
subject_aliases = Table(
    "subject_aliases",
    metadata,
    Column("region", String(16), nullable=False),
    Column("alias", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("change_key", Text, nullable=False),
    Column("created_at", TZ, nullable=False),
    PrimaryKeyConstraint("region", "alias"),
    Index("subject_aliases_change", "region", "change_key"),
)
