"""Commands: what callers (people, through gRPC, and triggers, through events) ask for."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_safeguarding.domain.model import Evidence, Subject
from toex_safeguarding.domain.values import (
    AgeBand,
    Concern,
    DecisionKind,
    Destination,
    Handling,
    Outcome,
    RiskLevel,
    State,
)


@dataclass(frozen=True)
class CreateReferral:
    actor: Principal
    region: Region
    subject: Subject
    concerns: list[Concern]
    risk_level: RiskLevel
    evidence: list[Evidence] = field(default_factory=list)
    destinations: list[Destination] = field(default_factory=list)
    linked_job: str = ""
    handling: Handling = Handling.C
    idempotency: Idempotency | None = None
    # The caller's own credentials (authorization and purpose), to ask tasking whether the
    # caller may see `linked_job`; opaque here.
    credentials: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GetReferral:
    actor: Principal
    region: Region
    referral_id: str
    # The call's purpose: a job (`regions/EMSOU/jobs/ID`) for work under a job grant.
    purpose: str = ""


@dataclass(frozen=True)
class ListReferrals:
    actor: Principal
    region: Region | None
    states: frozenset[State]
    overdue_only: bool
    page_size: int
    after: tuple[datetime, str] | None = None
    purpose: str = ""
    job: str = ""  # only the referrals linked to this job ("": any)


@dataclass(frozen=True)
class Revision:
    """The fields UpdateReferral may change; unset ones are left alone."""

    date_of_birth: date | bool | None = False
    age_band: AgeBand | None = None
    local_authority: str | None = None
    consent: Any = None
    concerns: list[Concern] | None = None
    risk_level: RiskLevel | None = None
    destinations: list[Destination] | None = None
    linked_job: str | None = None
    handling: Handling | None = None
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def adds_evidence_only(self) -> bool:
        """Evidence and nothing else: all a job grant's holder may change."""
        return bool(self.evidence) and replace(self, evidence=[]) == Revision()


@dataclass(frozen=True)
class UpdateReferral:
    actor: Principal
    region: Region
    referral_id: str
    revision: Revision
    idempotency: Idempotency | None = None
    credentials: tuple[tuple[str, str], ...] = ()
    purpose: str = ""


@dataclass(frozen=True)
class Transition:
    """SubmitForApproval, ApproveReferral, ReturnReferral, CloseReferral."""

    actor: Principal
    region: Region
    referral_id: str
    reason: str = ""
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class RecordSubmission:
    actor: Principal
    region: Region
    referral_id: str
    destination: Destination
    agency_reference: str = ""
    submitted_at: datetime | None = None
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class RecordAcknowledgement:
    actor: Principal
    region: Region
    referral_id: str
    destination: Destination
    acknowledged_at: datetime | None = None
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class RecordDecision:
    actor: Principal
    region: Region
    referral_id: str
    destination: Destination
    kind: DecisionKind
    outcome: Outcome
    detail: str = ""
    decided_at: datetime | None = None
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class ListOverdue:
    actor: Principal
    region: Region | None
    page_size: int
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class Trigger:
    """A finding from another service that a subject may need safeguarding.

    `concern` None means "whatever the open referral is about": a safeguarding job names a
    subject, not a concern, and joins any open referral of that subject before drafting one."""

    source_event_id: str
    source_type: str
    region: Region
    subject_entity_id: str
    concern: Concern | None
    evidence: list[Evidence]
    linked_job: str = ""
    risk_level: RiskLevel = RiskLevel.UNASSESSED
    handling: Handling = Handling.C
    age_band: AgeBand = AgeBand.UNKNOWN


@dataclass(frozen=True)
class EscalateOverdue:
    now: datetime
    limit: int = 200


@dataclass(frozen=True)
class MergeIdentities:
    """Entity resolution merged `merged` into `entity` (this region's copy of the change).
    `merged` is empty in a copy of a merge across regions (the entity service leaves out what
    may be another region's)."""

    event_id: str
    region: Region
    change_id: str
    entity: str
    merged: tuple[str, ...]


@dataclass(frozen=True)
class SplitIdentity:
    """Entity resolution moved `moved_records` of this region out of `entity` (to `moved_to`,
    parallel), undoing merge `undone_change` when it names one."""

    event_id: str
    region: Region
    change_id: str
    entity: str
    moved_records: tuple[str, ...]
    moved_to: tuple[str, ...]
    undone_change: str = ""


@dataclass(frozen=True)
class LinkNumbers:
    """A record holding `numbers` (E.164) was linked to person entity `entity` in `region`."""

    event_id: str
    region: Region
    entity: str
    record: str
    numbers: tuple[str, ...]
