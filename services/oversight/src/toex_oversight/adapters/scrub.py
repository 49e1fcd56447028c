"""What a region reports to the hub: each event it counts, with only the fields the national
read model reads (`adapters/events.py`), every other field cleared.

The allow-list is explicit per event type and nested: a field not named here is cleared,
including one added to an event later, until someone allows it here (and says why it holds no
personal data). Allowed are ids used as keys (job and referral names, the reconciliation's
name), region, states, types, priorities, times, revisions, counts, ratings and assignees'
*regions*; never free text, usernames, record names or contents, subjects or numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from toex_oversight.adapters import events

# A field's allowance: True keeps it whole (a scalar, an enum, a Timestamp); a mapping keeps
# only those fields of the message (of each element, when repeated).
Allowed = Mapping[str, "bool | Allowed"]

_LABEL: Allowed = {"region": True, "handling": True}
_COMMON: Allowed = {"event_id": True, "occur_time": True, "label": _LABEL}
_ACCESS: Allowed = {"revision": True, "state": True, "assignees": {"region": True}}
_JOB: Allowed = {**_COMMON, "job": True, "job_type": True, "access": _ACCESS}
_REFERRAL: Allowed = {**_COMMON, "referral": True, "state": True}
_AGED: Allowed = {"count": True}
# What the products group jobs by: code lists, not personal data. (FeedbackRequested, which
# carries the officer's one-time token, has no allow-list: it is never reported.)
_GROUPING: Allowed = {"requesting_force": True, "threat_category": True}

ALLOWED: dict[str, Allowed] = {
    # tasking v2: the job's name (its key), type, priority, due time, access (revision, state,
    # the assignees' regions: never their usernames).
    "toex.tasking.events.v2.JobCreated": {**_JOB, "priority": True, "due_time": True, **_GROUPING},
    "toex.tasking.events.v2.JobAssigned": _JOB,
    "toex.tasking.events.v2.JobReassigned": _JOB,
    "toex.tasking.events.v2.JobStatusChanged": {**_JOB, "state": True},
    "toex.tasking.events.v2.JobUpdated": {
        **_COMMON,
        "job": True,
        "access": _ACCESS,
        "priority": True,
        "due_time": True,
        **_GROUPING,
    },
    # The rating and when: never the comment or who gave it.
    "toex.tasking.events.v2.FeedbackRecorded": {
        **_COMMON,
        "job": True,
        "rating": True,
        "record_time": True,
        "has_comment": True,
    },
    # safeguarding: the referral's name and state; the clock's destination, due and met times.
    "toex.safeguarding.events.v1.ReferralDrafted": _REFERRAL,
    "toex.safeguarding.events.v1.ReferralEvidenceAdded": _REFERRAL,
    "toex.safeguarding.events.v1.ReferralApproved": _REFERRAL,
    "toex.safeguarding.events.v1.ReferralReturned": _REFERRAL,
    "toex.safeguarding.events.v1.ReferralSubmitted": {
        **_REFERRAL,
        "destination": True,
        "decision_due_time": True,
    },
    "toex.safeguarding.events.v1.ReferralOverdue": _REFERRAL,
    "toex.safeguarding.events.v1.ReferralDecisionRecorded": {
        **_REFERRAL,
        "destination": True,
        "decision": {"kind": True, "decision_time": True},
    },
    "toex.safeguarding.events.v1.ReferralClosed": _REFERRAL,
    # PND: that an answer was given, and when (never the record, its contents or the reasons).
    "toex.pnd.events.v1.SubmissionAccepted": _COMMON,
    "toex.pnd.events.v1.SubmissionRejected": _COMMON,
    "toex.pnd.events.v1.SubmissionConflict": _COMMON,
    "toex.pnd.events.v1.ReconciliationCompleted": {
        **_COMMON,
        "reconciliation": True,
        "summary": {
            "region": True,
            "local_records": True,
            "in_sync": True,
            "missing": _AGED,
            "stale": _AGED,
            "rejected": _AGED,
            "held": _AGED,
            "conflict": _AGED,
        },
    },
    # entity: the other region named, never the entity, records or contact.
    "toex.entity.events.v1.DeconflictionNotice": {**_COMMON, "other_region": True},
}

# Every event type the aggregator counts has an allow-list, and no other is reported.
REPORTED: tuple[type[Message], ...] = (
    *events.JOB_EVENTS,
    *events.REFERRAL_EVENTS,
    *events.PND_RESULTS,
    events.RECONCILIATION_COMPLETED,
    events.DECONFLICTION_NOTICE,
)


class NotReported(ValueError):
    """An event type with no allow-list: nothing of it goes to the hub."""


def _keep_only(message: Message, allowed: Allowed) -> None:
    for field, value in message.ListFields():
        allowance = allowed.get(field.name, False)
        if allowance is False:
            message.ClearField(field.name)
        elif allowance is not True:
            # A message field kept in part (each element, when repeated).
            items: Any = value if field.is_repeated else [value]
            for item in items:
                _keep_only(item, allowance)
    # Unknown fields (a newer producer's, not in this descriptor) are never reported.
    message.DiscardUnknownFields()


def scrub(message: Message) -> Message:
    """A copy of `message` holding only its type's allowed fields."""
    allowed = ALLOWED.get(message.DESCRIPTOR.full_name)
    if allowed is None:
        raise NotReported(f"{message.DESCRIPTOR.full_name} has no allow-list: it is not reported")
    copy = type(message)()
    copy.CopyFrom(message)
    _keep_only(copy, allowed)
    return copy
