"""Safeguarding referrals linked to a job: a read model of the safeguarding service's referral
events, shown on the job.

Each event (drafted, evidence added, approved, returned, sent, overdue, decided, closed) is kept
as one change of its referral, on the job the event names. What the job shows of a referral is
what its latest change says (the latest event time wins, whatever order the events arrive in):
its state, and the concerns and risk level of the latest change that told them. A referral
whose latest change names another job has been linked to that job since: it shows there only.

Changes name the referral and the staff who moved it, never the referral's subject.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from toex_kernel.regions import Region

if TYPE_CHECKING:  # the job (model.py) holds its referrals' changes
    from toex_tasking.domain.model import Handling

T = TypeVar("T")


class ChangeKind(enum.StrEnum):
    DRAFTED = "DRAFTED"
    EVIDENCE_ADDED = "EVIDENCE_ADDED"
    APPROVED = "APPROVED"
    RETURNED = "RETURNED"
    SUBMITTED = "SUBMITTED"
    OVERDUE = "OVERDUE"
    DECISION_RECORDED = "DECISION_RECORDED"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class ReferralChange:
    """One safeguarding event about a referral linked to job `job_id` (of `region`, the event's
    region and the referral's)."""

    event_id: str
    job_id: str
    referral: str
    kind: ChangeKind
    # The referral's state after the change, in the safeguarding service's words; "" when the
    # event did not say.
    state: str
    occurred_at: datetime
    region: Region
    handling: Handling
    # The change in plain words (what the job may be told of it).
    summary: str
    # Who made it: a user name or `trigger:<event type>`; "" when the event names nobody.
    actor: str = ""
    # Told only by some events: the concerns (drafted) and the risk level (drafted, overdue).
    concerns: tuple[str, ...] = ()
    risk_level: str = ""

    @property
    def order(self) -> tuple[datetime, str]:
        """Which of two changes is the later: the event time, then (equal times) the event id."""
        return self.occurred_at, self.event_id


@dataclass(frozen=True)
class LinkedReferral:
    referral: str
    state: str
    concerns: tuple[str, ...]
    risk_level: str
    handling: Handling
    updated_at: datetime
    # Its changes on this job, oldest first.
    changes: tuple[ReferralChange, ...]


def linked_referrals(job_id: str, changes: Iterable[ReferralChange]) -> list[LinkedReferral]:
    """The referrals linked to job `job_id`, from `changes`: those of the referrals that ever
    named the job (their changes on other jobs included, to tell a referral linked elsewhere
    since). Oldest first, by each referral's first change on the job."""
    by_referral: dict[str, list[ReferralChange]] = {}
    for change in sorted(changes, key=lambda c: c.order):
        by_referral.setdefault(change.referral, []).append(change)
    found = []
    for referral, history in by_referral.items():
        latest = history[-1]
        if latest.job_id != job_id:
            continue  # linked to another job since
        told = tuple(c for c in history if c.job_id == job_id)
        found.append(
            LinkedReferral(
                referral=referral,
                state=_latest(history, lambda c: c.state, ""),
                concerns=_latest(history, lambda c: c.concerns, ()),
                risk_level=_latest(history, lambda c: c.risk_level, ""),
                handling=latest.handling,
                updated_at=latest.occurred_at,
                changes=told,
            )
        )
    found.sort(key=lambda r: r.changes[0].order)
    return found


def _latest(history: list[ReferralChange], told: Callable[[ReferralChange], T], default: T) -> T:
    """What the latest change that tells it says (an event without it leaves it as it was)."""
    for change in reversed(history):
        if value := told(change):
            return value
    return default
