"""Domain events -> integration events (toex.safeguarding.events.v1) in their envelopes.

Events name the referral but carry nothing about its subject (see the events proto). Each names
the tasking job the referral is linked to and the state the change left it in: tasking shows a
referral's outcomes on its job from these events alone. (`JobNoteRequested`, the notes asked of
tasking before, is no longer published: its message stays for the stream's retained history.)"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf.message import Message
from toex.safeguarding.events.v1 import events_pb2 as ev
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import SAFEGUARDING_STREAM

from toex_safeguarding.adapters.mapping import (
    clock_to_proto,
    concern_to_proto,
    decision_to_proto,
    destination_to_proto,
    escalation_to_proto,
    evidence_to_proto,
    handling_to_proto,
    risk_to_proto,
    state_to_proto,
    ts,
)
from toex_safeguarding.domain import events
from toex_safeguarding.domain.model import Referral

DOMAIN = "safeguarding"
SOURCE = "toex/safeguarding"
STREAM = SAFEGUARDING_STREAM


def to_message(referral: Referral, event: events.DomainEvent) -> Message:
    """The integration event of `event`. Every one names the referral, the job it is linked to
    (what tasking shows it on) and the state the change left it in; none names its subject."""
    name = referral.name
    state: Any = state_to_proto(event.state)
    if isinstance(event, events.ReferralDrafted):
        return ev.ReferralDrafted(
            referral=name,
            concerns=[concern_to_proto(c) for c in referral.concerns],  # type: ignore[misc]
            risk_level=risk_to_proto(referral.risk_level),  # type: ignore[arg-type]
            linked_job=referral.linked_job,
            created_by=event.by,
            state=state,
        )
    if isinstance(event, events.EvidenceAdded):
        return ev.ReferralEvidenceAdded(
            referral=name,
            evidence=[evidence_to_proto(e) for e in event.evidence],
            state=state,
            linked_job=referral.linked_job,
        )
    if isinstance(event, events.ReferralApproved):
        return ev.ReferralApproved(
            referral=name,
            approved_by=event.by,
            destinations=[destination_to_proto(d) for d in event.destinations],  # type: ignore[misc]
            linked_job=referral.linked_job,
            state=state,
        )
    if isinstance(event, events.ReferralReturned):
        return ev.ReferralReturned(
            referral=name,
            returned_by=event.by,
            reason=event.reason,
            linked_job=referral.linked_job,
            state=state,
        )
    if isinstance(event, events.ReferralSubmitted):
        return ev.ReferralSubmitted(
            referral=name,
            destination=destination_to_proto(event.destination),  # type: ignore[arg-type]
            submit_time=ts(event.submitted_at),
            decision_due_time=ts(event.due_at),
            linked_job=referral.linked_job,
            state=state,
        )
    if isinstance(event, events.ReferralOverdue):
        clock = next(c for c in reversed(referral.clocks) if c.kind is event.clock)
        # One scan may raise both levels; each event carries the clock as its own level left it.
        clock = dataclasses.replace(clock, escalation=event.escalation)
        return ev.ReferralOverdue(
            referral=name,
            clock=clock_to_proto(clock, None),
            escalation=escalation_to_proto(event.escalation),  # type: ignore[arg-type]
            linked_job=referral.linked_job,
            risk_level=risk_to_proto(referral.risk_level),  # type: ignore[arg-type]
            state=state,
        )
    if isinstance(event, events.DecisionRecorded):
        return ev.ReferralDecisionRecorded(
            referral=name,
            destination=destination_to_proto(event.destination),  # type: ignore[arg-type]
            decision=decision_to_proto(event.decision),
            linked_job=referral.linked_job,
            state=state,
        )
    if isinstance(event, events.ReferralClosed):
        return ev.ReferralClosed(
            referral=name,
            reason=event.reason,
            closed_by=event.by,
            previous_state=state_to_proto(event.previous),  # type: ignore[arg-type]
            linked_job=referral.linked_job,
            state=state,
        )
    raise TypeError(f"no integration event for {event!r}")


def envelope(referral: Referral, event: events.DomainEvent) -> EventEnvelope:
    """The integration event of `event`, under the referral's region and label."""
    return build_event(
        to_message(referral, event),
        domain=DOMAIN,
        source=SOURCE,
        region=referral.region,
        handling=handling_to_proto(referral.handling),
        resource=referral.name,
    )


def integration_events(referral: Referral, event: events.DomainEvent) -> list[EventEnvelope]:
    """The safeguarding service's one mapping of a domain event (what the unit of work
    publishes at commit): its integration event, which also tells the linked job."""
    return [envelope(referral, event)]
