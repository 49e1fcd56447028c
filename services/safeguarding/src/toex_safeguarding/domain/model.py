"""The referral aggregate: one subject, its concerns and evidence, where it goes, and the
statutory clocks on the agencies' decisions.

DRAFT -> AWAITING_APPROVAL -> APPROVED -> SUBMITTED -> ACKNOWLEDGED -> DECIDED -> CLOSED, with
return (AWAITING_APPROVAL -> DRAFT) and withdrawal (DRAFT -> CLOSED). Every change records a
domain event; the service layer turns those into integration events.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from toex_kernel.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Violations
from toex_kernel.regions import Region

from toex_safeguarding.domain import anonymity, events, rules
from toex_safeguarding.domain.calendar import LONDON, calendar_for
from toex_safeguarding.domain.values import (
    DEADLINE_CLOCKS,
    DECISIONS_BY_DESTINATION,
    ESCALATE_NATIONALLY_AFTER_WORKING_DAYS,
    LA_DECISION_WORKING_DAYS,
    NRM_CONCLUSIVE_NOT_BEFORE_DAYS,
    NRM_REASONABLE_GROUNDS_WORKING_DAYS,
    NRM_RECOVERY_DAYS,
    SENT_STATES,
    AgeBand,
    ClockKind,
    Concern,
    ConsentStatus,
    DecisionKind,
    Destination,
    Escalation,
    EvidenceKind,
    Handling,
    Outcome,
    RiskLevel,
    State,
)


@dataclass(frozen=True)
class Evidence:
    kind: EvidenceKind
    ref: str
    description: str = ""
    added_by: str = ""
    added_at: datetime | None = None

    @property
    def key(self) -> tuple[EvidenceKind, str]:
        return (self.kind, self.ref)


@dataclass(frozen=True)
class Consent:
    status: ConsentStatus = ConsentStatus.NOT_RECORDED
    recorded_by: str = ""
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class Subject:
    entity_id: str
    date_of_birth: date | None = None
    age_band: AgeBand = AgeBand.UNKNOWN
    local_authority: str = ""
    consent: Consent = field(default_factory=Consent)

    def is_child(self, on: date) -> bool:
        """Under 18 on `on`; an unestablished age is presumed a child (MSA 2015 s51)."""
        if self.date_of_birth is not None:
            dob = self.date_of_birth
            try:
                eighteenth = dob.replace(year=dob.year + 18)
            except ValueError:  # born 29 February
                eighteenth = date(dob.year + 18, 3, 1)
            return on < eighteenth
        return self.age_band is not AgeBand.ADULT

    def age_established(self) -> bool:
        return self.date_of_birth is not None or self.age_band is not AgeBand.UNKNOWN


def _combined_subject(mine: Subject, theirs: Subject) -> tuple[Subject, list[str]]:
    """`mine` with the details it lacks taken from `theirs`; and the details both recorded,
    differently (mine kept)."""
    differ = []
    dob = mine.date_of_birth
    if dob is None:
        dob = theirs.date_of_birth
    elif theirs.date_of_birth is not None and theirs.date_of_birth != dob:
        differ.append("date of birth")
    band = mine.age_band
    if band is AgeBand.UNKNOWN:
        band = theirs.age_band
    elif theirs.age_band is not AgeBand.UNKNOWN and theirs.age_band is not band:
        differ.append("age band")
    authority = mine.local_authority
    if not authority:
        authority = theirs.local_authority
    elif theirs.local_authority and theirs.local_authority != authority:
        differ.append("local authority")
    consent = mine.consent
    if consent.status is ConsentStatus.NOT_RECORDED:
        consent = theirs.consent
    elif theirs.consent.status not in (ConsentStatus.NOT_RECORDED, consent.status):
        differ.append("consent")
    return Subject(mine.entity_id, dob, band, authority, consent), differ


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    outcome: Outcome
    detail: str
    decided_at: datetime
    recorded_by: str
    recorded_at: datetime


@dataclass
class Progress:
    destination: Destination
    submitted_at: datetime | None = None
    agency_reference: str = ""
    acknowledged_at: datetime | None = None
    decisions: list[Decision] = field(default_factory=list)

    def decided(self, kind: DecisionKind) -> Decision | None:
        return next((d for d in reversed(self.decisions) if d.kind is kind), None)


@dataclass
class Clock:
    kind: ClockKind
    destination: Destination
    started_at: datetime
    due_at: datetime | None = None
    not_before: datetime | None = None
    satisfied_at: datetime | None = None
    escalation: Escalation = Escalation.NONE
    escalated_at: datetime | None = None

    @property
    def is_deadline(self) -> bool:
        return self.kind in DEADLINE_CLOCKS

    def is_overdue(self, now: datetime) -> bool:
        return (
            self.is_deadline and self.satisfied_at is None and self.due_at is not None and now >= self.due_at
        )

    @property
    def description(self) -> str:
        return CLOCK_DESCRIPTIONS[self.kind]

    def national_escalation_at(self, region: Region) -> datetime | None:
        """The end of the next working day after the due day."""
        if self.due_at is None:
            return None
        return calendar_for(region).deadline(
            self.due_at - timedelta(microseconds=1), ESCALATE_NATIONALLY_AFTER_WORKING_DAYS
        )

    def next_escalation_at(self, region: Region) -> datetime | None:
        """When the escalation scan should next look at this clock; None when never again."""
        if not self.is_deadline or self.satisfied_at is not None or self.due_at is None:
            return None
        if self.escalation is Escalation.NONE:
            return self.due_at
        if self.escalation is Escalation.SUPERVISOR:
            return self.national_escalation_at(region)
        return None


CLOCK_DESCRIPTIONS = {
    ClockKind.LOCAL_AUTHORITY_DECISION: "local authority decides within 1 working day of a children's "
    "referral (England and Wales bank holidays excluded)",
    ClockKind.NRM_REASONABLE_GROUNDS: "NRM reasonable-grounds decision within 5 working days of referral "
    "(England and Wales bank holidays excluded)",
    ClockKind.NRM_RECOVERY_PERIOD: "recovery period: at least 45 days from a positive reasonable-grounds decision",
    ClockKind.NRM_CONCLUSIVE_GROUNDS: "conclusive-grounds decision no sooner than 30 days after reasonable grounds",
}


@dataclass(frozen=True)
class DutyToNotify:
    """MS1 content: nothing that identifies the subject, by construction."""

    reference: str
    concerns: tuple[Concern, ...]
    first_responder: Region
    created_at: datetime
    age_band: AgeBand = AgeBand.ADULT


def new_referral_id() -> str:
    return uuid.uuid4().hex[:16]


def referral_name(region: Region, referral_id: str) -> str:
    return f"regions/{region.value}/referrals/{referral_id}"


def _stamp(value: datetime, now: datetime, field: str) -> datetime:
    if value > now + timedelta(minutes=5):
        raise InvalidArgument.field(field, "must not be in the future")
    return value


@dataclass
class Referral:
    id: str
    region: Region
    subject: Subject
    concerns: list[Concern]
    risk_level: RiskLevel
    created_by: str
    created_at: datetime
    updated_at: datetime
    state: State = State.DRAFT
    evidence: list[Evidence] = field(default_factory=list)
    destinations: list[Destination] = field(default_factory=list)
    # False: the destinations follow the rules' proposals until approval fixes them.
    destinations_chosen: bool = False
    progress: list[Progress] = field(default_factory=list)
    clocks: list[Clock] = field(default_factory=list)
    linked_job: str = ""
    handling: Handling = Handling.C
    submitted_for_approval_by: str = ""
    approved_by: str = ""
    approved_at: datetime | None = None
    return_reason: str = ""
    close_reason: str = ""
    duty_to_notify: DutyToNotify | None = None
    events: list[events.DomainEvent] = field(default_factory=list, repr=False, compare=False)

    @property
    def name(self) -> str:
        return referral_name(self.region, self.id)

    @property
    def is_open(self) -> bool:
        return self.state is not State.CLOSED

    def is_overdue(self, now: datetime) -> bool:
        return any(c.is_overdue(now) for c in self.clocks)

    def is_child(self, now: datetime) -> bool:
        return self.subject.is_child(now.astimezone(LONDON).date())

    def proposals(self, now: datetime) -> list[rules.Proposal]:
        return rules.propose(
            child=self.is_child(now),
            age_established=self.subject.age_established(),
            consent=self.subject.consent.status,
            concerns=self.concerns,
            risk=self.risk_level,
        )

    def follow_proposals(self, now: datetime) -> None:
        if not self.destinations_chosen and self.state is State.DRAFT:
            self.destinations = [p.destination for p in self.proposals(now)]

    # -- creation and drafting -------------------------------------------------------------

    @classmethod
    def draft(
        cls,
        *,
        region: Region,
        subject: Subject,
        concerns: list[Concern],
        risk_level: RiskLevel,
        evidence: list[Evidence],
        destinations: list[Destination],
        linked_job: str,
        handling: Handling,
        created_by: str,
        now: datetime,
        referral_id: str | None = None,
    ) -> Referral:
        if not subject.entity_id.strip():
            raise InvalidArgument.field("referral.subject.entity_id", "name the subject's entity id")
        if not concerns:
            raise InvalidArgument.field("referral.concerns", "name at least one concern")
        referral = cls(
            id=referral_id or new_referral_id(),
            region=region,
            subject=subject,
            concerns=list(dict.fromkeys(concerns)),
            risk_level=risk_level,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            linked_job=linked_job,
            handling=handling,
        )
        referral.destinations = list(dict.fromkeys(destinations))
        referral.destinations_chosen = bool(referral.destinations)
        referral.follow_proposals(now)
        for item in evidence:
            referral._attach(item, by=created_by, now=now)
        referral.events.append(events.ReferralDrafted(referral.name, created_by, referral.state))
        return referral

    def _require(self, *states: State, action: str) -> None:
        if self.state not in states:
            allowed = " or ".join(s.value for s in states)
            raise FailedPrecondition(
                f"cannot {action} a referral that is {self.state.value}; it must be {allowed}",
                type="STATE",
                subject=self.name,
                description=f"referral is {self.state.value}",
            )

    def _attach(self, item: Evidence, *, by: str, now: datetime) -> Evidence | None:
        if not item.ref.strip():
            return None
        if any(e.key == item.key for e in self.evidence):
            return None
        added = Evidence(item.kind, item.ref.strip(), item.description.strip(), item.added_by or by, now)
        self.evidence.append(added)
        return added

    def add_evidence(self, items: list[Evidence], *, by: str, now: datetime) -> list[Evidence]:
        """Attach evidence not already attached (any open state: late evidence still matters).
        Returns what was new."""
        if not self.is_open:
            raise FailedPrecondition("a closed referral takes no more evidence", subject=self.name)
        added = [a for a in (self._attach(i, by=by, now=now) for i in items) if a is not None]
        if added:
            self.updated_at = now
            self.events.append(events.EvidenceAdded(self.name, tuple(added), self.state))
        return added

    def link_job(self, job: str, now: datetime) -> None:
        if job and not self.linked_job:
            self.linked_job = job
            self.updated_at = now

    # -- identity changes -------------------------------------------------------------------

    def follow_subject(self, entity_id: str, *, now: datetime) -> None:
        """The subject is now known as `entity_id` (its entity was merged into another, or the
        number it was raised on was linked to an entity). The same person: nothing the
        referral says of them, or was sent about them, changes; its keys follow it."""
        if not self.is_open:
            raise FailedPrecondition("a closed referral keeps the subject it closed with", subject=self.name)
        if not entity_id.strip():
            raise InvalidArgument.field("referral.subject.entity_id", "name the subject's entity id")
        self.subject = replace(self.subject, entity_id=entity_id.strip())
        self.updated_at = now

    def absorb(self, other: Referral, *, by: str, reason: str, now: datetime) -> list[str]:
        """Take in `other`, a draft that turned out to be about the same person, and close it
        as merged into this one. Both are drafts: nothing here has been approved or sent.

        Its evidence is copied with who added it and when, marked with where it came from (its
        own trail stays on it, closed, not deleted); its concerns join these; the higher risk,
        the stricter handling code and the destinations an officer chose on either are kept; a
        detail of the subject this one lacks is taken from it. Returns the subject's details the
        two recorded differently (this one's are kept), for the officer to check."""
        self._require(State.DRAFT, action="combine")
        other._require(State.DRAFT, action="combine into another referral")
        copied = []
        for item in other.evidence:
            if any(e.key == item.key for e in self.evidence):
                continue
            marked = f"{item.description} (from {other.name})" if item.description else f"from {other.name}"
            copy = Evidence(item.kind, item.ref, marked, item.added_by, item.added_at or now)
            self.evidence.append(copy)
            copied.append(copy)
        self.concerns = list(dict.fromkeys([*self.concerns, *other.concerns]))
        risks = list(RiskLevel)
        self.risk_level = max(self.risk_level, other.risk_level, key=risks.index)
        if Handling.C in (self.handling, other.handling):
            self.handling = Handling.C
        if not self.linked_job:
            self.linked_job = other.linked_job
        chosen = [
            *(self.destinations if self.destinations_chosen else []),
            *(other.destinations if other.destinations_chosen else []),
        ]
        if chosen:
            self.destinations = list(dict.fromkeys(chosen))
            self.destinations_chosen = True
        self.subject, differ = _combined_subject(self.subject, other.subject)
        self.follow_proposals(now)
        self.updated_at = now
        if copied:
            self.events.append(events.EvidenceAdded(self.name, tuple(copied), self.state))
        other.close(by=by, reason=f"merged into {self.name}: {reason}", now=now)
        return differ

    def revise(
        self,
        *,
        now: datetime,
        by: str,
        date_of_birth: date | bool | None = False,
        age_band: AgeBand | None = None,
        local_authority: str | None = None,
        consent: ConsentStatus | None = None,
        concerns: list[Concern] | None = None,
        risk_level: RiskLevel | None = None,
        destinations: list[Destination] | None = None,
        linked_job: str | None = None,
        handling: Handling | None = None,
    ) -> None:
        """Change a draft. `date_of_birth=False` means "leave it"; None clears it."""
        self._require(State.DRAFT, action="change")
        subject = self.subject
        if date_of_birth is not False:
            subject = Subject(
                subject.entity_id,
                date_of_birth if isinstance(date_of_birth, date) else None,
                subject.age_band,
                subject.local_authority,
                subject.consent,
            )
        if age_band is not None:
            subject = Subject(
                subject.entity_id, subject.date_of_birth, age_band, subject.local_authority, subject.consent
            )
        if local_authority is not None:
            subject = Subject(
                subject.entity_id,
                subject.date_of_birth,
                subject.age_band,
                local_authority.strip(),
                subject.consent,
            )
        if consent is not None:
            subject = Subject(
                subject.entity_id,
                subject.date_of_birth,
                subject.age_band,
                subject.local_authority,
                Consent(consent, by, now),
            )
        self.subject = subject
        if concerns is not None:
            if not concerns:
                raise InvalidArgument.field("referral.concerns", "name at least one concern")
            self.concerns = list(dict.fromkeys(concerns))
        if risk_level is not None:
            self.risk_level = risk_level
        if destinations is not None:
            self.destinations = list(dict.fromkeys(destinations))
            self.destinations_chosen = bool(self.destinations)
        if linked_job is not None:
            self.linked_job = linked_job
        if handling is not None:
            self.handling = handling
        self.follow_proposals(now)
        self.updated_at = now

    # -- approval ---------------------------------------------------------------------------

    def _check_anonymous(self, now: datetime) -> None:
        """An MS1 Duty to Notify is anonymous: officers' free text on such a referral must not
        look as if it names, dates, locates or gives the number of the person. The answer
        names the field and what it seems to hold, never the text."""
        if Destination.DUTY_TO_NOTIFY not in self.destinations:
            return
        found = anonymity.identifying_fields(
            ((f"referral.evidence[{i}].description", e.description) for i, e in enumerate(self.evidence)),
            now.date(),
        )
        if found:
            problems = Violations()
            for field_name, kind in found:
                problems.add(
                    field_name,
                    f"looks like it holds {kind}; the MS1 Duty to Notify route carries nothing that "
                    "identifies the person: reword it",
                )
            problems.raise_if_any()

    def submit_for_approval(self, *, by: str, now: datetime) -> None:
        self._require(State.DRAFT, action="send for approval")
        self.follow_proposals(now)
        rules.check_destinations(
            destinations=self.destinations,
            child=self.is_child(now),
            consent=self.subject.consent.status,
            local_authority=self.subject.local_authority,
        )
        self._check_anonymous(now)
        self.state = State.AWAITING_APPROVAL
        self.submitted_for_approval_by = by
        self.return_reason = ""
        self.updated_at = now

    def approve(self, *, by: str, now: datetime) -> None:
        self._require(State.AWAITING_APPROVAL, action="approve")
        if by == self.submitted_for_approval_by:
            raise PermissionDenied(
                "a referral is approved by a supervisor other than the officer who sent it"
            )
        # The rules are checked again: consent or age may have changed the answer since.
        rules.check_destinations(
            destinations=self.destinations,
            child=self.is_child(now),
            consent=self.subject.consent.status,
            local_authority=self.subject.local_authority,
        )
        self._check_anonymous(now)
        self.state = State.APPROVED
        self.approved_by = by
        self.approved_at = now
        self.updated_at = now
        self.progress = [Progress(d) for d in self.destinations]
        if Destination.DUTY_TO_NOTIFY in self.destinations:
            self.duty_to_notify = DutyToNotify(
                reference=f"MS1-{secrets.token_hex(6).upper()}",
                concerns=tuple(self.concerns),
                first_responder=self.region,
                created_at=now,
            )
        self.events.append(events.ReferralApproved(self.name, by, tuple(self.destinations), self.state))

    def return_to_draft(self, *, by: str, reason: str, now: datetime) -> None:
        self._require(State.AWAITING_APPROVAL, action="return")
        if not reason.strip():
            raise InvalidArgument.field("reason", "say what must change")
        self.state = State.DRAFT
        self.return_reason = reason.strip()
        self.updated_at = now
        self.events.append(events.ReferralReturned(self.name, by, self.return_reason, self.state))

    # -- destinations -----------------------------------------------------------------------

    def _progress(self, destination: Destination) -> Progress:
        found = next((p for p in self.progress if p.destination is destination), None)
        if found is None:
            chosen = ", ".join(d.value for d in self.destinations)
            raise FailedPrecondition(
                f"{destination.value} is not a destination of this referral (approved: {chosen})",
                type="DESTINATION",
                subject=self.name,
            )
        return found

    def record_submission(
        self, destination: Destination, *, reference: str, submitted_at: datetime, now: datetime
    ) -> Clock | None:
        self._require(State.APPROVED, *SENT_STATES, action="record a submission on")
        progress = self._progress(destination)
        if progress.submitted_at is not None:
            raise FailedPrecondition(
                f"{destination.value} was already sent this referral", type="DESTINATION", subject=self.name
            )
        if self.approved_at is not None and submitted_at < self.approved_at:
            raise InvalidArgument.field("submit_time", "cannot be before the approval")
        progress.submitted_at = _stamp(submitted_at, now, "submit_time")
        progress.agency_reference = reference.strip()
        clock = self._start_clock(destination, submitted_at)
        if self.state is State.APPROVED:
            self.state = State.SUBMITTED
        self.updated_at = now
        self.events.append(
            events.ReferralSubmitted(
                self.name, destination, submitted_at, clock.due_at if clock else None, self.state
            )
        )
        return clock

    def _start_clock(self, destination: Destination, start: datetime) -> Clock | None:
        working = calendar_for(self.region)
        clock = None
        if destination is Destination.CHILDRENS_SOCIAL_CARE:
            clock = Clock(
                ClockKind.LOCAL_AUTHORITY_DECISION,
                destination,
                start,
                due_at=working.deadline(start, LA_DECISION_WORKING_DAYS),
            )
        elif destination is Destination.NRM:
            clock = Clock(
                ClockKind.NRM_REASONABLE_GROUNDS,
                destination,
                start,
                due_at=working.deadline(start, NRM_REASONABLE_GROUNDS_WORKING_DAYS),
            )
        if clock is not None:
            self.clocks.append(clock)
        return clock

    def record_acknowledgement(
        self, destination: Destination, *, acknowledged_at: datetime, now: datetime
    ) -> None:
        self._require(*SENT_STATES, action="record an acknowledgement on")
        progress = self._progress(destination)
        if progress.submitted_at is None:
            raise FailedPrecondition(
                f"{destination.value} has not been sent the referral yet; record the submission first",
                type="DESTINATION",
                subject=self.name,
            )
        if progress.acknowledged_at is not None:
            return
        if acknowledged_at < progress.submitted_at:
            raise InvalidArgument.field("acknowledge_time", "cannot be before the submission")
        progress.acknowledged_at = _stamp(acknowledged_at, now, "acknowledge_time")
        if self.state is State.SUBMITTED:
            self.state = State.ACKNOWLEDGED
        self.updated_at = now

    def _clock(self, kind: ClockKind) -> Clock | None:
        return next((c for c in reversed(self.clocks) if c.kind is kind), None)

    def record_decision(
        self,
        destination: Destination,
        kind: DecisionKind,
        outcome: Outcome,
        *,
        detail: str,
        decided_at: datetime,
        by: str,
        now: datetime,
    ) -> Decision:
        self._require(State.ACKNOWLEDGED, State.DECIDED, action="record a decision on")
        progress = self._progress(destination)
        if kind not in DECISIONS_BY_DESTINATION[destination]:
            fits = ", ".join(sorted(k.value for k in DECISIONS_BY_DESTINATION[destination])) or "none"
            raise InvalidArgument.field("kind", f"{destination.value} makes these decisions: {fits}")
        if progress.acknowledged_at is None:
            raise FailedPrecondition(
                f"{destination.value} has not acknowledged the referral; record the acknowledgement first",
                type="DESTINATION",
                subject=self.name,
            )
        assert progress.submitted_at is not None
        if decided_at < progress.submitted_at:
            raise InvalidArgument.field("decision_time", "cannot be before the submission")
        _stamp(decided_at, now, "decision_time")
        if progress.decided(kind) is not None:
            raise FailedPrecondition(f"a {kind.value} decision is already recorded", subject=self.name)
        if kind is DecisionKind.NRM_CONCLUSIVE_GROUNDS:
            self._check_conclusive(progress, decided_at)
        decision = Decision(kind, outcome, detail.strip(), decided_at, by, now)
        progress.decisions.append(decision)
        self._satisfy_clocks(kind, outcome, decided_at)
        self.state = State.DECIDED
        self.updated_at = now
        self.events.append(events.DecisionRecorded(self.name, destination, decision, self.state))
        return decision

    def _check_conclusive(self, progress: Progress, decided_at: datetime) -> None:
        reasonable = progress.decided(DecisionKind.NRM_REASONABLE_GROUNDS)
        if reasonable is None or reasonable.outcome is not Outcome.POSITIVE:
            raise FailedPrecondition(
                "a conclusive-grounds decision follows a positive reasonable-grounds decision",
                type="NRM",
                subject=self.name,
            )
        earliest = reasonable.decided_at + timedelta(days=NRM_CONCLUSIVE_NOT_BEFORE_DAYS)
        if decided_at < earliest:
            raise FailedPrecondition(
                f"a conclusive-grounds decision comes no sooner than {NRM_CONCLUSIVE_NOT_BEFORE_DAYS} days "
                f"after reasonable grounds (not before {earliest.isoformat()})",
                type="NRM",
                subject=self.name,
            )

    def _satisfy_clocks(self, kind: DecisionKind, outcome: Outcome, at: datetime) -> None:
        wanted = {
            DecisionKind.LOCAL_AUTHORITY: ClockKind.LOCAL_AUTHORITY_DECISION,
            DecisionKind.NRM_REASONABLE_GROUNDS: ClockKind.NRM_REASONABLE_GROUNDS,
            DecisionKind.NRM_CONCLUSIVE_GROUNDS: ClockKind.NRM_CONCLUSIVE_GROUNDS,
        }.get(kind)
        clock = self._clock(wanted) if wanted else None
        if clock is not None and clock.satisfied_at is None:
            clock.satisfied_at = at
        if kind is DecisionKind.NRM_REASONABLE_GROUNDS and outcome is Outcome.POSITIVE:
            self.clocks.append(
                Clock(
                    ClockKind.NRM_RECOVERY_PERIOD,
                    Destination.NRM,
                    at,
                    due_at=at + timedelta(days=NRM_RECOVERY_DAYS),
                )
            )
            self.clocks.append(
                Clock(
                    ClockKind.NRM_CONCLUSIVE_GROUNDS,
                    Destination.NRM,
                    at,
                    not_before=at + timedelta(days=NRM_CONCLUSIVE_NOT_BEFORE_DAYS),
                )
            )

    # -- closing ----------------------------------------------------------------------------

    def close(self, *, by: str, reason: str, now: datetime) -> None:
        previous = self.state
        if self.state is State.DRAFT:
            if not reason.strip():
                raise InvalidArgument.field("reason", "say why the draft is withdrawn")
        elif self.state is State.ACKNOWLEDGED and all(
            not DECISIONS_BY_DESTINATION[p.destination] for p in self.progress if p.submitted_at
        ):
            pass  # only notifications were sent (MS1): nothing to wait for
        else:
            self._require(State.DECIDED, action="close")
        waiting = [c for c in self.clocks if c.is_deadline and c.satisfied_at is None]
        if waiting:
            raise FailedPrecondition(
                "still waiting for: " + ", ".join(c.kind.value for c in waiting),
                type="CLOCK",
                subject=self.name,
            )
        self.state = State.CLOSED
        self.close_reason = reason.strip()
        self.updated_at = now
        self.events.append(events.ReferralClosed(self.name, by, self.close_reason, previous, self.state))

    # -- overdue ----------------------------------------------------------------------------

    def escalate_overdue(self, now: datetime) -> list[Clock]:
        """Raise each overdue clock's escalation when due: the region's supervisors as soon as it
        is overdue, the national coordinator once it is still unmet at the end of the next
        working day. Each level is announced once; a scan that finds both due announces both."""
        raised = []
        for clock in self.clocks:
            if not clock.is_overdue(now):
                continue
            national_at = clock.national_escalation_at(self.region)
            assert national_at is not None
            target = Escalation.NATIONAL_COORDINATOR if now >= national_at else Escalation.SUPERVISOR
            if target <= clock.escalation:
                continue
            for level in (Escalation.SUPERVISOR, Escalation.NATIONAL_COORDINATOR):
                if clock.escalation < level <= target:
                    clock.escalation = level
                    clock.escalated_at = now
                    self.events.append(events.ReferralOverdue(self.name, clock.kind, level, self.state))
            raised.append(clock)
        return raised
