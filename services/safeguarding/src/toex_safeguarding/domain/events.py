"""Domain events of the referral aggregate (internal; adapters/integration.py turns them into
protobuf integration events). Each records the referral's state as the change left it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ReferralDrafted:
    referral: str
    by: str
    state: Any


@dataclass(frozen=True)
class EvidenceAdded:
    referral: str
    evidence: tuple[Any, ...]
    state: Any


@dataclass(frozen=True)
class ReferralApproved:
    referral: str
    by: str
    destinations: tuple[Any, ...]
    state: Any


@dataclass(frozen=True)
class ReferralReturned:
    referral: str
    by: str
    reason: str
    state: Any


@dataclass(frozen=True)
class ReferralSubmitted:
    referral: str
    destination: Any
    submitted_at: datetime
    due_at: datetime | None
    state: Any


@dataclass(frozen=True)
class ReferralOverdue:
    referral: str
    clock: Any
    escalation: Any
    state: Any


@dataclass(frozen=True)
class DecisionRecorded:
    referral: str
    destination: Any
    decision: Any
    state: Any


@dataclass(frozen=True)
class ReferralClosed:
    referral: str
    by: str
    reason: str
    previous: Any
    state: Any


DomainEvent = (
    ReferralDrafted
    | EvidenceAdded
    | ReferralApproved
    | ReferralReturned
    | ReferralSubmitted
    | ReferralOverdue
    | DecisionRecorded
    | ReferralClosed
)
