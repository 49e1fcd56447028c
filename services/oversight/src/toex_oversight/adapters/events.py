"""Other services' integration events -> what the read model keeps of them (the only module that
reads their protobuf). Only states, times, regions, kinds and ratings are taken: names,
descriptions, comments, usernames, subjects and records never leave the event."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from google.protobuf.message import Message
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.safeguarding.events.v1 import events_pb2 as safeguarding_events
from toex.safeguarding.v1 import safeguarding_pb2 as safeguarding
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.events.consumer import PermanentError, region_of
from toex_common.events.envelope import IncomingEvent
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.grants import is_job_of
from toex_kernel.regions import Region
from toex_kernel.timestamps import to_datetime

from toex_oversight.domain.model import (
    DEADLINE_DECISIONS,
    ClockRecord,
    JobFacts,
    Reconciliation,
    ReferralFacts,
)

JOB_STATES = tasking_events.JobState
JOB_TYPES = tasking_events.JobType
PRIORITIES = tasking_events.Priority

# What each event type is, for the consumers.
JOB_EVENTS: tuple[type[Message], ...] = (
    tasking_events.JobCreated,
    tasking_events.JobAssigned,
    tasking_events.JobReassigned,
    tasking_events.JobStatusChanged,
    tasking_events.JobUpdated,
    tasking_events.FeedbackRecorded,
)
REFERRAL_EVENTS: tuple[type[Message], ...] = (
    safeguarding_events.ReferralDrafted,
    safeguarding_events.ReferralEvidenceAdded,
    safeguarding_events.ReferralApproved,
    safeguarding_events.ReferralReturned,
    safeguarding_events.ReferralSubmitted,
    safeguarding_events.ReferralOverdue,
    safeguarding_events.ReferralDecisionRecorded,
    safeguarding_events.ReferralClosed,
)
PND_RESULTS: dict[type[Message], str] = {
    pnd_events.SubmissionAccepted: "ACCEPTED",
    pnd_events.SubmissionRejected: "REJECTED",
    pnd_events.SubmissionConflict: "CONFLICT",
}


@lru_cache(maxsize=1024)
def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`JOB_STATE_IN_PROGRESS` as `IN_PROGRESS`; "" for an unset or unknown value."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return ""
    return "" if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix)


def occurred_at(event: IncomingEvent) -> datetime:
    """When the event happened: its `occur_time`, else the CloudEvents time it was sent with."""
    message: Any = event.message
    stamp = getattr(message, "occur_time", None)
    if stamp is not None and (stamp.seconds or stamp.nanos):
        return to_datetime(stamp)
    header = event.headers.get("ce-time", "")
    try:
        return datetime.fromisoformat(header.replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError("event has no occurrence time (occur_time or ce-time)") from None


@lru_cache(maxsize=256)
def force_code(value: int) -> str:
    """The requesting force's short code (`NOTTS`), what the read model counts by and GetOverview
    filters on; "" when unset or a number this build does not know."""
    if not value:
        return ""
    try:
        return Force.from_proto(value).code
    except ValueError:
        return ""


@lru_cache(maxsize=256)
def threat_code(value: int) -> str:
    """The threat category's short code (`cce`); "" when unset or unknown to this build."""
    if not value:
        return ""
    try:
        return ThreatCategory.from_proto(value).code
    except ValueError:
        return ""


def _job_of_region(job: str, region: Region) -> str:
    # The subject's region is what NATS vouches for: a job of another region named on it would
    # let one region change another's figures.
    if not is_job_of(job, region):
        raise PermanentError(f"job {job!r} is not of the region {region.value} the event came from")
    return job


# The events that carry a job's priority, due time, force and threat.
_PLANNED = (tasking_events.JobCreated, tasking_events.JobUpdated)


def job_facts(event: IncomingEvent) -> JobFacts:
    message: Any = event.message
    region = region_of(event)
    job = _job_of_region(message.job, region)
    if isinstance(message, tasking_events.FeedbackRecorded):
        rated_at = to_datetime(message.record_time) if message.HasField("record_time") else occurred_at(event)
        if not 1 <= message.rating <= 5:
            raise PermanentError(f"rating {message.rating} is not 1 to 5")
        return JobFacts(job, region, rating=message.rating, rated_at=rated_at, commented=message.has_comment)
    access = message.access
    taken = set()
    for assignee in access.assignees:
        try:
            taken.add(Region.from_proto(assignee.region))
        except ValueError:
            continue  # an assignee without a region: nothing to count
    facts: dict[str, Any] = {
        "revision": access.revision,
        "state": enum_name(JOB_STATES, access.state, "JOB_STATE_"),
        "taken_by": frozenset(taken - {region}),
    }
    if hasattr(message, "job_type"):
        facts["job_type"] = enum_name(JOB_TYPES, message.job_type, "JOB_TYPE_")
    if isinstance(message, _PLANNED):
        facts["priority"] = enum_name(PRIORITIES, message.priority, "PRIORITY_")
        if message.HasField("due_time"):
            facts["due_at"] = to_datetime(message.due_time)
        facts["force"] = force_code(message.requesting_force)
        facts["threat"] = threat_code(message.threat_category)
    if isinstance(message, tasking_events.JobCreated):
        facts["created_at"] = occurred_at(event)
    if (
        isinstance(message, tasking_events.JobStatusChanged)
        and message.state == tasking_events.JOB_STATE_DELIVERED
    ):
        facts["delivered_at"] = occurred_at(event)
    return JobFacts(job, region, **facts)


def referral_facts(event: IncomingEvent) -> ReferralFacts:
    message: Any = event.message
    region = region_of(event)
    referral: str = message.referral
    if not referral.startswith(f"regions/{region.value}/referrals/"):
        raise PermanentError(f"referral {referral!r} is not of the region {region.value} the event came from")
    clock = None
    if isinstance(message, safeguarding_events.ReferralSubmitted) and message.HasField("decision_due_time"):
        destination = enum_name(safeguarding.Destination, message.destination, "DESTINATION_")
        if destination in DEADLINE_DECISIONS:
            clock = ClockRecord(destination, due_at=to_datetime(message.decision_due_time))
    if isinstance(message, safeguarding_events.ReferralDecisionRecorded):
        destination = enum_name(safeguarding.Destination, message.destination, "DESTINATION_")
        kind = enum_name(safeguarding.DecisionKind, message.decision.kind, "DECISION_KIND_")
        if DEADLINE_DECISIONS.get(destination) == kind and message.decision.HasField("decision_time"):
            clock = ClockRecord(destination, met_at=to_datetime(message.decision.decision_time))
    return ReferralFacts(
        referral=referral,
        region=region,
        occurred_at=occurred_at(event),
        event_id=event.event_id,
        state=enum_name(safeguarding.ReferralState, message.state, "REFERRAL_STATE_"),
        drafted=isinstance(message, safeguarding_events.ReferralDrafted),
        clock=clock,
    )


def pnd_result(event: IncomingEvent) -> str:
    found = PND_RESULTS.get(type(event.message))  # type: ignore[arg-type]
    if found is None:
        raise PermanentError(f"{event.event_type} is not a PND answer")
    return found


def reconciliation(event: IncomingEvent) -> Reconciliation:
    message: Any = event.message
    region = region_of(event)
    summary = message.summary
    if summary.region != region.to_proto():
        raise PermanentError(f"a reconciliation of another region on {region.value}'s subject")
    return Reconciliation(
        region=region,
        completed_at=occurred_at(event),
        name=message.reconciliation,
        local_records=summary.local_records,
        in_sync=summary.in_sync,
        held=summary.held.count,
        stale=summary.stale.count,
        missing=summary.missing.count,
        rejected=summary.rejected.count,
        conflict=summary.conflict.count,
    )


def deconfliction_with(event: IncomingEvent) -> str:
    """The other region a deconfliction notice names (never what either region holds)."""
    message: Any = event.message
    try:
        other = Region.from_proto(message.other_region)
    except ValueError:
        raise PermanentError("a deconfliction notice naming no other region") from None
    return other.value


DECONFLICTION_NOTICE = entity_events.DeconflictionNotice
RECONCILIATION_COMPLETED = pnd_events.ReconciliationCompleted
