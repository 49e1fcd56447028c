"""Local POLE intelligence records and their submissions to the PND.

A record is an aggregate: every change raises its version and queues one Submission for that
version. Submissions of one record go to the PND strictly in version order; each carries a
submission id derived from the record and version, so a retry is recognisably the same
submission. The PND's answer (accepted, rejected, conflict) is stored on the submission and
moves the record's sync state, and the record records it (`events`) for the unit of work to
publish. Searches made and reconciliation reports are what the PND tells of itself.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from toex_kernel.regions import Region

from toex_pnd.domain import events

SUBMISSION_NAMESPACE = uuid.UUID("6f1d2f4e-3c55-4b8e-9a57-2d8e1f0c9b31")


class Kind(enum.StrEnum):
    PERSON = "PERSON"
    PHONE = "PHONE"
    VEHICLE = "VEHICLE"
    ONLINE_ACCOUNT = "ONLINE_ACCOUNT"
    LOCATION = "LOCATION"
    EVENT = "EVENT"

    @property
    def entity_key(self) -> str:
        """The key of this kind in the entity object (`person`, `online_account`...)."""
        return self.value.lower()


class Handling(enum.StrEnum):
    P = "P"
    C = "C"


class SyncState(enum.StrEnum):
    PENDING = "PENDING"
    HELD = "HELD"
    SYNCED = "SYNCED"
    REJECTED = "REJECTED"
    CONFLICT = "CONFLICT"


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class SubmissionState(enum.StrEnum):
    QUEUED = "QUEUED"
    HELD = "HELD"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    CONFLICT = "CONFLICT"
    SUPERSEDED = "SUPERSEDED"

    @property
    def open(self) -> bool:
        return self in (SubmissionState.QUEUED, SubmissionState.HELD)


class Outcome(enum.StrEnum):
    """What the PND answered for one submission."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    CONFLICT = "CONFLICT"


LINK_TYPES = frozenset({"USES", "OWNS", "AT", "INVOLVED_IN", "ASSOCIATE_OF", "CONTROLS"})


@dataclass(frozen=True)
class Grading:
    source_evaluation: str  # "1".."3"
    intelligence_assessment: str  # "A".."E"
    handling: Handling
    handling_conditions: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "source_evaluation": self.source_evaluation,
            "intelligence_assessment": self.intelligence_assessment,
            "handling": self.handling.value,
            "handling_conditions": self.handling_conditions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grading:
        return cls(
            str(data["source_evaluation"]),
            str(data["intelligence_assessment"]),
            Handling(data["handling"]),
            str(data.get("handling_conditions", "")),
        )


@dataclass(frozen=True)
class Link:
    target: str  # a record name regions/{region}/intelligence/{id}
    type: str  # one of LINK_TYPES
    description: str = ""

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "type": self.type, "description": self.description}


@dataclass(frozen=True)
class Reason:
    code: str
    field: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "description": self.description}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reason:
        return cls(str(data.get("code", "")), str(data.get("field", "")), str(data.get("description", "")))


@dataclass(frozen=True)
class Answer:
    """The PND's answer to one submission."""

    submission_id: str
    outcome: Outcome
    pnd_id: str = ""
    pnd_version: int = 0
    reasons: tuple[Reason, ...] = ()


def record_name(region: Region, record_id: str) -> str:
    return f"regions/{region.value}/intelligence/{record_id}"


def submission_id(record_id: str, version: int) -> str:
    """Stable per record version: every retry of a version carries the same id."""
    return str(uuid.uuid5(SUBMISSION_NAMESPACE, f"{record_id}@{version}"))


def backoff_delay(attempts: int, *, base: float, cap: float, rand: float) -> timedelta:
    """Exponential backoff with "equal jitter": half the exponential step is fixed, half random
    (rand in [0, 1)), so retries of many records spread out yet never retry at once."""
    step = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=step / 2 + step / 2 * rand)


@dataclass
class Submission:
    submission_id: str
    record_id: str
    region: Region
    version: int
    operation: Operation
    state: SubmissionState
    payload: dict[str, Any]  # the bulk-format line for this version
    queued_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    last_error: str = ""
    answered_at: datetime | None = None
    pnd_version: int = 0
    reasons: tuple[Reason, ...] = ()
    released_by: str = ""
    # Who made the change it carries (username): the PND's answer is news for them.
    submitted_by: str = ""

    @property
    def name(self) -> str:
        return record_name(self.region, self.record_id)

    def failed_attempt(self, error: str, now: datetime, delay: timedelta) -> None:
        self.attempts += 1
        self.last_error = error[:500]
        self.next_attempt_at = now + delay


@dataclass
class IntelligenceRecord:
    id: str
    region: Region
    kind: Kind
    entity: dict[str, Any]  # {"person": {...}} in the bulk format's JSON form
    grading: Grading
    links: list[Link]
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    sync_state: SyncState = SyncState.PENDING
    pnd_id: str = ""
    pnd_version: int = 0
    rejection: tuple[Reason, ...] = ()
    released_by: str = ""
    # Whether any version was ever sent (a record never sent needs no withdrawal).
    ever_sent: bool = False
    # The job it was made for (`regions/{region}/jobs/{id}`, of the record's region), "" if none:
    # the job's grant holders reach it. Set at creation, never changed.
    job: str = ""
    events: list[events.DomainEvent] = field(default_factory=list, repr=False, compare=False)

    @property
    def name(self) -> str:
        return record_name(self.region, self.id)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def held_for_conditions(self) -> bool:
        return self.grading.handling is Handling.C

    # -- changes -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        record_id: str,
        region: Region,
        kind: Kind,
        entity: dict[str, Any],
        grading: Grading,
        links: list[Link],
        created_by: str,
        now: datetime,
        job: str = "",
    ) -> tuple[IntelligenceRecord, Submission]:
        record = cls(
            id=record_id,
            region=region,
            kind=kind,
            entity=entity,
            grading=grading,
            links=links,
            version=1,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            job=job,
        )
        return record, record._queue(Operation.CREATE, now, by=created_by)

    def update(
        self,
        *,
        entity: dict[str, Any] | None,
        grading: Grading | None,
        links: list[Link] | None,
        open_submissions: list[Submission],
        now: datetime,
        by: str,
    ) -> tuple[Submission, list[Submission]]:
        """A new version. Held versions that were never released are superseded: the PND
        gets the newest content instead (which is held again if it is still code C)."""
        if entity is not None:
            self.entity = entity
        if grading is not None:
            self.grading = grading
        if links is not None:
            self.links = links
        self.version += 1
        self.updated_at = now
        superseded = self._supersede_held(open_submissions, now)
        earlier = self.ever_sent or any(s.state is SubmissionState.QUEUED for s in open_submissions)
        return self._queue(Operation.UPDATE if earlier else Operation.CREATE, now, by=by), superseded

    def delete(
        self, *, open_submissions: list[Submission], now: datetime, by: str
    ) -> tuple[Submission | None, list[Submission]]:
        """Deleted locally; the PND is asked to withdraw the record unless it never left."""
        self.version += 1
        self.updated_at = now
        self.deleted_at = now
        superseded = self._supersede_held(open_submissions, now)
        still_open = [s for s in open_submissions if s.state is SubmissionState.QUEUED]
        if not self.ever_sent and not still_open:
            self.sync_state = SyncState.SYNCED  # nothing ever reached the PND; nothing to withdraw
            return None, superseded
        # A withdrawal shares nothing, so it is never held.
        return self._queue(Operation.DELETE, now, by=by, hold=False), superseded

    def release(self, held: list[Submission], by: str) -> list[Submission]:
        released = [s for s in held if s.state is SubmissionState.HELD]
        for submission in released:
            submission.state = SubmissionState.QUEUED
            submission.released_by = by
        if released:
            self.released_by = by
            self.sync_state = SyncState.PENDING
        return released

    def _supersede_held(self, open_submissions: list[Submission], now: datetime) -> list[Submission]:
        superseded = []
        for submission in open_submissions:
            if submission.state is SubmissionState.HELD:
                submission.state = SubmissionState.SUPERSEDED
                submission.answered_at = now
                superseded.append(submission)
        return superseded

    def _queue(self, operation: Operation, now: datetime, *, by: str, hold: bool | None = None) -> Submission:
        held = self.held_for_conditions if hold is None else hold
        self.sync_state = SyncState.HELD if held else SyncState.PENDING
        self.released_by = ""
        return Submission(
            submission_id=submission_id(self.id, self.version),
            record_id=self.id,
            region=self.region,
            version=self.version,
            operation=operation,
            state=SubmissionState.HELD if held else SubmissionState.QUEUED,
            payload=self.bulk_line(operation, now),
            queued_at=now,
            next_attempt_at=now,
            submitted_by=by,
        )

    def bulk_line(self, operation: Operation, now: datetime) -> dict[str, Any]:
        """This version as one line of the bulk submission format (docs/pnd-bulk-format.md)."""
        line: dict[str, Any] = {
            "submission_id": submission_id(self.id, self.version),
            "operation": operation.value,
            "source_ref": self.name,
            "record_version": self.version,
            "region": self.region.value,
            "kind": self.kind.value,
            "changed": now.isoformat(),
        }
        if operation is not Operation.DELETE:
            line["grading"] = self.grading.to_json()
            line["entity"] = self.entity
            line["links"] = [link.to_json() for link in self.links]
        return line

    # -- the PND's answers ---------------------------------------------------------------

    def mark_sent(self) -> None:
        self.ever_sent = True

    def apply_answer(self, submission: Submission, answer: Answer, now: datetime) -> None:
        """Store the answer on the submission and record it (every answer is published); it
        moves the record only if it is about the newest version (an answer for an older version
        is history)."""
        submission.answered_at = now
        submission.reasons = answer.reasons
        submission.pnd_version = answer.pnd_version
        if answer.outcome is Outcome.ACCEPTED:
            submission.state = SubmissionState.ACCEPTED
            if answer.pnd_id:
                self.pnd_id = answer.pnd_id
            self.pnd_version = max(self.pnd_version, submission.version)
        elif answer.outcome is Outcome.REJECTED:
            submission.state = SubmissionState.REJECTED
        else:
            submission.state = SubmissionState.CONFLICT
        self.events.append(events.SubmissionAnswered(submission))
        if submission.version != self.version:
            return
        if answer.outcome is Outcome.ACCEPTED:
            self.sync_state = SyncState.SYNCED
            self.rejection = ()
        elif answer.outcome is Outcome.REJECTED:
            self.sync_state = SyncState.REJECTED
            self.rejection = answer.reasons
        else:
            self.sync_state = SyncState.CONFLICT


# -- searches and reconciliations ---------------------------------------------------------


@dataclass(frozen=True)
class SearchRow:
    """A search made on the PND, as stored (the criteria normalised)."""

    id: str
    region: Region
    kind: str
    criteria: dict[str, Any]
    requested_by: str
    purpose: str
    searched_at: datetime
    result_count: int
    truncated: bool
    # The job it was made for (of the search's region), "" if none.
    job: str = ""


@dataclass(frozen=True)
class Aged:
    """How many records of a category, how long ago the oldest of them changed, how many over a day."""

    count: int = 0
    oldest_age_seconds: float = 0.0
    older_than_day: int = 0


@dataclass
class RegionFigures:
    """One region's side of a reconciliation: its records, in step or out of step by category."""

    region: Region
    local_records: int = 0
    in_sync: int = 0
    categories: dict[str, Aged] = field(default_factory=dict)

    def get(self, category: str) -> Aged:
        return self.categories.get(category, Aged())

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region.value,
            "local_records": self.local_records,
            "in_sync": self.in_sync,
            "categories": {
                k: [v.count, v.oldest_age_seconds, v.older_than_day] for k, v in self.categories.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegionFigures:
        return cls(
            Region(data["region"]),
            int(data["local_records"]),
            int(data["in_sync"]),
            {k: Aged(int(v[0]), float(v[1]), int(v[2])) for k, v in data["categories"].items()},
        )


@dataclass(frozen=True)
class Report:
    """A reconciliation: what the PND held, compared with every local record, per region."""

    id: str
    scheduled: bool
    requested_by: str
    started_at: datetime
    completed_at: datetime
    pnd_records: int
    regions: list[RegionFigures]

    @property
    def name(self) -> str:
        return f"reconciliations/{self.id}"
