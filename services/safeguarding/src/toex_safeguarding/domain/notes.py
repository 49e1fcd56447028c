"""What a referral's linked tasking job is told of each change: a note in plain words. The
referral is named; its subject never is."""

from __future__ import annotations

from toex_safeguarding.domain import events
from toex_safeguarding.domain.model import Referral


def _label(value: object) -> str:
    return str(getattr(value, "value", value)).replace("_", " ").lower()


def note_for(referral: Referral, event: events.DomainEvent) -> str | None:
    """What the linked tasking job is told. Names the referral, never details of its subject."""
    name = referral.name
    if isinstance(event, events.ReferralDrafted):
        concerns = ", ".join(_label(c) for c in referral.concerns)
        return f"Safeguarding referral {name} drafted ({concerns}) by {event.by}."
    if isinstance(event, events.ReferralApproved):
        where = ", ".join(_label(d) for d in event.destinations)
        return f"Safeguarding referral {name} approved by {event.by}; going to: {where}."
    if isinstance(event, events.ReferralSubmitted):
        due = f"; decision due by {event.due_at.isoformat()}" if event.due_at else ""
        return f"Safeguarding referral {name} sent to {_label(event.destination)}{due}."
    if isinstance(event, events.DecisionRecorded):
        d = event.decision
        detail = f": {d.detail}" if d.detail else ""
        return (
            f"Safeguarding referral {name}: {_label(event.destination)} decision "
            f"{_label(d.kind)} {_label(d.outcome)} on {d.decided_at.date().isoformat()}{detail}"
        )
    if isinstance(event, events.ReferralOverdue):
        return (
            f"Safeguarding referral {name}: {_label(event.clock)} is overdue; "
            f"escalated to the {_label(event.escalation.name)}."
        )
    if isinstance(event, events.ReferralClosed):
        why = f": {event.reason}" if event.reason else ""
        return f"Safeguarding referral {name} closed{why}."
    return None
