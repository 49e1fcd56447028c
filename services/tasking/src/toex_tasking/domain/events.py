"""Domain events of the job aggregate (internal; see adapters/integration.py for the
protobuf integration events they become)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toex_tasking.domain.model import Assignee


@dataclass(frozen=True)
class JobCreated:
    job: str


@dataclass(frozen=True)
class JobAssigned:
    job: str
    added: tuple[Assignee, ...]
    by: str


@dataclass(frozen=True)
class JobReassigned:
    job: str
    previous: tuple[Assignee, ...]
    assignee: Assignee
    reason: str
    by: str


@dataclass(frozen=True)
class JobStatusChanged:
    job: str
    previous: Any
    state: Any
    reason: str
    by: str


@dataclass(frozen=True)
class JobUpdated:
    job: str
    # The attributes of JobChanges whose values changed, in its order.
    changed: tuple[str, ...]
    by: str


@dataclass(frozen=True)
class JobOverdue:
    job: str


@dataclass(frozen=True)
class FeedbackRecorded:
    job: str


@dataclass(frozen=True)
class FeedbackRequested:
    job: str
    # The one-time token itself: only the event carries it (the job keeps its hash).
    token: str = field(repr=False)
    expires_at: datetime


DomainEvent = (
    JobCreated
    | JobAssigned
    | JobReassigned
    | JobStatusChanged
    | JobUpdated
    | JobOverdue
    | FeedbackRecorded
    | FeedbackRequested
)
