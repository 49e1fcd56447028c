"""What national oversight keeps of each job and referral, and what each one counts for.

The read model holds states, counts, clocks and labels, nothing personal: of a job, its region,
type, priority, state, due time, when it was raised and first delivered, the regions of the
researchers who worked it (never who they were) and its rating (never the comment or who gave
it); of a referral, its region, state, when it was drafted and its decision deadlines. Names of
jobs and referrals are kept as the keys events arrive under; they name a record, not a person.

Order does not matter. Every record is a merge of what its events said, and each attribute
merges by a rule that gives the same answer in any order and when told twice: the value of the
highest revision (tasking's `JobAccess.revision`, the grants' rule), the earliest time, the union
of regions, the latest of two times. A referral's events carry no revision: its state is the one
of the event that happened last (occurrence time, then event id). What a record counts for is a
function of the record alone (`contributions`), so the counters are the sum over records
whatever order their events came in: a change moves the record's counts from the old
contributions to the new.

The period chooses jobs by the day they were raised and referrals by the day they were drafted
(Europe/London days); their states, open work and clocks are as they are now. A record whose
first event has not arrived yet (a region catching up out of order) waits, uncounted, until it
does.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from toex_kernel.regions import Region

LONDON = ZoneInfo("Europe/London")


def day_of(moment: datetime) -> date:
    """The Europe/London day of `moment`: the days the programme counts in."""
    return moment.astimezone(LONDON).date()


class Figure(enum.StrEnum):
    """What a counter counts; its value says which kind (a state, a type, a region...)."""

    JOB_STATE = "jobs.state"
    JOB_TYPE = "jobs.type"
    JOB_PRIORITY = "jobs.priority"
    JOB_DELIVERY = "jobs.delivery"
    # Jobs worked by a researcher of another region (value empty), and by which region.
    JOB_TAKEN = "jobs.taken"
    JOB_TAKEN_BY = "jobs.taken_by"
    JOB_RATING = "jobs.rating"
    # Jobs whose latest feedback came with a comment (value empty); never the comment.
    JOB_COMMENTED = "jobs.commented"
    # By threat category (its short code, `cce`).
    JOB_THREAT = "jobs.threat"
    REFERRAL_STATE = "referrals.state"
    REFERRAL_CLOCK = "referrals.clock"
    PND_RESULT = "pnd.result"
    DECONFLICTION = "deconfliction.notice"


OPEN_JOB_STATES = frozenset({"RAISED", "ASSIGNED", "IN_PROGRESS"})
ON_TIME, LATE = "ON_TIME", "LATE"
MET_ON_TIME, MET_LATE = "MET_ON_TIME", "MET_LATE"


class Key(NamedTuple):
    """One counter: a figure's value for a day, a region and a requesting force. A tuple, not a
    dataclass: every event builds and hashes a dozen of these, and a tuple's hash and comparison
    are the interpreter's own (a third of the projection's time went to a dataclass's)."""

    day: date
    region: str
    force: str
    figure: str
    value: str


# The figures as plain strings, for the keys built on every event (an enum's `.value` is a
# descriptor call each time).
_JOB_STATE, _JOB_TYPE, _JOB_PRIORITY, _JOB_THREAT = (
    Figure.JOB_STATE.value,
    Figure.JOB_TYPE.value,
    Figure.JOB_PRIORITY.value,
    Figure.JOB_THREAT.value,
)
_JOB_DELIVERY, _JOB_TAKEN, _JOB_TAKEN_BY = (
    Figure.JOB_DELIVERY.value,
    Figure.JOB_TAKEN.value,
    Figure.JOB_TAKEN_BY.value,
)
_JOB_RATING, _JOB_COMMENTED = Figure.JOB_RATING.value, Figure.JOB_COMMENTED.value
_REFERRAL_STATE, _REFERRAL_CLOCK = Figure.REFERRAL_STATE.value, Figure.REFERRAL_CLOCK.value

_Record = TypeVar("_Record")


def _with(record: _Record, changes: Mapping[str, Any]) -> _Record:
    """`record` with `changes`, or `record` itself when they change nothing. What
    `dataclasses.replace` does, without running the frozen `__init__` field by field again (the
    records have no `__post_init__` to skip)."""
    if all(getattr(record, name) == value for name, value in changes.items()):
        return record
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy


def difference(new: Mapping[Key, int], old: Mapping[Key, int]) -> dict[Key, int]:
    """What moves the counters from `old` contributions to `new` (negative where one goes)."""
    delta = {key: count - old.get(key, 0) for key, count in new.items()}
    delta.update({key: -count for key, count in old.items() if key not in new})
    return {key: count for key, count in delta.items() if count}


class DeadlineKind(enum.StrEnum):
    JOB = "job"
    CLOCK = "clock"


@dataclass(frozen=True)
class Deadline:
    """Open work with a due time, counted when asked as due or overdue (which depends on when
    it is asked, so it cannot be a counter): an open job, or a statutory clock still running."""

    kind: DeadlineKind
    item: str
    # The clock's destination; empty for a job.
    part: str
    region: str
    force: str
    # The day its job was raised or its referral drafted: what the period chooses by.
    cohort: date
    due_at: datetime

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind.value, self.item, self.part)


def _latest(a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str]:
    """Of two (revision, value), the higher revision's; on a tie the greater value, so that the
    answer is the same whichever was told first."""
    return max(a, b)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFacts:
    """What one tasking event says of a job. `revision` orders the state, priority and due time
    it carries; an event without one (feedback) carries none of them."""

    job: str
    region: Region
    revision: int = -1
    job_type: str = ""
    state: str = ""
    priority: str = ""
    due_at: datetime | None = None
    created_at: datetime | None = None
    # When the job moved to DELIVERED (a status change to it).
    delivered_at: datetime | None = None
    # Regions of researchers assigned to the job that are not the job's own.
    taken_by: frozenset[Region] = frozenset()
    rating: int | None = None
    rated_at: datetime | None = None
    # Whether that feedback came with a comment (FeedbackRecorded's has_comment).
    commented: bool = False
    # The requesting force's code and the threat category's (`NOTTS`, `cce`), as JobCreated and
    # JobUpdated name them now: the latest revision's, like the priority.
    force: str = ""
    threat: str = ""


@dataclass(frozen=True)
class JobRecord:
    job: str
    region: Region
    force: str = ""
    force_revision: int = -1
    threat: str = ""
    threat_revision: int = -1
    job_type: str = ""
    state: str = ""
    state_revision: int = -1
    priority: str = ""
    priority_revision: int = -1
    due_at: datetime | None = None
    due_revision: int = -1
    created_at: datetime | None = None
    delivered_at: datetime | None = None
    taken_by: frozenset[str] = frozenset()
    rating: int | None = None
    rated_at: datetime | None = None
    commented: bool = False

    def merge(self, facts: JobFacts) -> JobRecord:
        """This record with what `facts` adds; the same whatever order facts come in."""
        if facts.job != self.job or facts.region is not self.region:
            raise ValueError(f"facts of {facts.job} ({facts.region}) merged into {self.job} ({self.region})")
        changes: dict[str, object] = {}
        if facts.job_type and facts.job_type > self.job_type:
            changes["job_type"] = facts.job_type
        if facts.force:
            changes["force_revision"], changes["force"] = _latest(
                (self.force_revision, self.force), (facts.revision, facts.force)
            )
        if facts.threat:
            changes["threat_revision"], changes["threat"] = _latest(
                (self.threat_revision, self.threat), (facts.revision, facts.threat)
            )
        if facts.state:
            changes["state_revision"], changes["state"] = _latest(
                (self.state_revision, self.state), (facts.revision, facts.state)
            )
        if facts.priority:
            changes["priority_revision"], changes["priority"] = _latest(
                (self.priority_revision, self.priority), (facts.revision, facts.priority)
            )
        if facts.due_at is not None and (
            self.due_at is None or (facts.revision, facts.due_at) > (self.due_revision, self.due_at)
        ):
            changes["due_revision"], changes["due_at"] = facts.revision, facts.due_at
        changes["created_at"] = _earliest(self.created_at, facts.created_at)
        changes["delivered_at"] = _earliest(self.delivered_at, facts.delivered_at)
        taken = frozenset(r.value for r in facts.taken_by if r is not self.region)
        if not taken <= self.taken_by:
            changes["taken_by"] = self.taken_by | taken
        if facts.rating is not None and facts.rated_at is not None:
            latest = (facts.rated_at, facts.rating, facts.commented)
            if self.rated_at is None or latest > (self.rated_at, self.rating or 0, self.commented):
                changes["rating"], changes["rated_at"] = facts.rating, facts.rated_at
                changes["commented"] = facts.commented
        return _with(self, changes)

    @property
    def placed(self) -> bool:
        """Counted: its JobCreated has arrived, so the day it was raised is known."""
        return self.created_at is not None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_JOB_STATES

    def contributions(self) -> dict[Key, int]:
        """The counters this job adds one to, as it stands (each key once: they differ in
        figure or value)."""
        if self.created_at is None:
            return {}
        day, region, force = day_of(self.created_at), self.region.value, self.force
        keys = [
            Key(day, region, force, figure, value)
            for figure, value in (
                (_JOB_STATE, self.state),
                (_JOB_TYPE, self.job_type),
                (_JOB_PRIORITY, self.priority),
                (_JOB_THREAT, self.threat),
            )
            if value
        ]
        if self.delivered_at is not None and self.due_at is not None:
            on_time = ON_TIME if self.delivered_at <= self.due_at else LATE
            keys.append(Key(day, region, force, _JOB_DELIVERY, on_time))
        if self.taken_by:
            keys.append(Key(day, region, force, _JOB_TAKEN, ""))
            keys += [Key(day, region, force, _JOB_TAKEN_BY, taker) for taker in sorted(self.taken_by)]
        if self.rating is not None:
            keys.append(Key(day, region, force, _JOB_RATING, str(self.rating)))
            if self.commented:
                keys.append(Key(day, region, force, _JOB_COMMENTED, ""))
        return dict.fromkeys(keys, 1)

    def deadlines(self) -> list[Deadline]:
        """Open with a due time: due or overdue, depending on when it is asked."""
        if self.created_at is None or self.due_at is None or not self.is_open:
            return []
        return [
            Deadline(
                DeadlineKind.JOB,
                self.job,
                "",
                self.region.value,
                self.force,
                day_of(self.created_at),
                self.due_at,
            )
        ]


# --- referrals ----------------------------------------------------------------------------------

# The destinations whose decision has a statutory deadline, and the decision that meets it
# (children's social care: the local authority's decision within one working day; the NRM: the
# reasonable-grounds decision within five). Other decisions and destinations set no deadline.
DEADLINE_DECISIONS = {
    "CHILDRENS_SOCIAL_CARE": "LOCAL_AUTHORITY",
    "NRM": "NRM_REASONABLE_GROUNDS",
}


@dataclass(frozen=True)
class ClockRecord:
    destination: str
    due_at: datetime | None = None
    met_at: datetime | None = None

    def merge(self, other: ClockRecord) -> ClockRecord:
        return ClockRecord(
            self.destination, _earliest(self.due_at, other.due_at), _earliest(self.met_at, other.met_at)
        )


@dataclass(frozen=True)
class ReferralFacts:
    """What one safeguarding event says of a referral: its state after the event, ordered by
    when the event happened (then its id); when it was drafted; a deadline started or met."""

    referral: str
    region: Region
    occurred_at: datetime
    event_id: str
    state: str = ""
    drafted: bool = False
    clock: ClockRecord | None = None


@dataclass(frozen=True)
class ReferralRecord:
    referral: str
    region: Region
    drafted_at: datetime | None = None
    state: str = ""
    # (occurrence time, event id) of the event whose state is kept.
    state_at: datetime | None = None
    state_event: str = ""
    clocks: tuple[ClockRecord, ...] = field(default_factory=tuple)

    def merge(self, facts: ReferralFacts) -> ReferralRecord:
        if facts.referral != self.referral or facts.region is not self.region:
            raise ValueError(f"facts of {facts.referral} merged into {self.referral}")
        changes: dict[str, object] = {}
        if facts.drafted:
            changes["drafted_at"] = _earliest(self.drafted_at, facts.occurred_at)
        if facts.state and (
            self.state_at is None or (facts.occurred_at, facts.event_id) > (self.state_at, self.state_event)
        ):
            changes.update(state=facts.state, state_at=facts.occurred_at, state_event=facts.event_id)
        if facts.clock is not None:
            clocks = {c.destination: c for c in self.clocks}
            found = clocks.get(facts.clock.destination)
            clocks[facts.clock.destination] = found.merge(facts.clock) if found else facts.clock
            changes["clocks"] = tuple(clocks[d] for d in sorted(clocks))
        return _with(self, changes)

    def contributions(self) -> Counter[Key]:
        counted: Counter[Key] = Counter()
        if self.drafted_at is None:
            return counted
        day, region = day_of(self.drafted_at), self.region.value
        if self.state:
            counted[Key(day, region, "", _REFERRAL_STATE, self.state)] += 1
        for clock in self.clocks:
            if clock.due_at is not None and clock.met_at is not None:
                outcome = MET_ON_TIME if clock.met_at <= clock.due_at else MET_LATE
                counted[Key(day, region, "", _REFERRAL_CLOCK, outcome)] += 1
        return counted

    def deadlines(self) -> list[Deadline]:
        if self.drafted_at is None:
            return []
        cohort = day_of(self.drafted_at)
        return [
            Deadline(
                DeadlineKind.CLOCK, self.referral, c.destination, self.region.value, "", cohort, c.due_at
            )
            for c in self.clocks
            if c.due_at is not None and c.met_at is None
        ]


# --- events counted as they come --------------------------------------------------------------


def counted_once(region: Region, occurred_at: datetime, figure: Figure, value: str) -> dict[Key, int]:
    """An event that is a count in itself (a PND answer, a deconfliction notice), on its day."""
    return {Key(day_of(occurred_at), region.value, "", figure.value, value): 1}


@dataclass(frozen=True)
class Reconciliation:
    """A region's newest reconciliation with the PND: counts only."""

    region: Region
    completed_at: datetime
    name: str
    local_records: int = 0
    in_sync: int = 0
    held: int = 0
    stale: int = 0
    missing: int = 0
    rejected: int = 0
    conflict: int = 0

    def newer_than(self, other: Reconciliation | None) -> bool:
        return other is None or (self.completed_at, self.name) > (other.completed_at, other.name)
