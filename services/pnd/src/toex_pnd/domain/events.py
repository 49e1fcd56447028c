"""Domain events of the PND sync service (internal: at commit the unit of work turns each into
its protobuf integration event through the service's one mapping, in the adapters).

A record records the PND's answer to one of its submissions. A search's answer and a
reconciliation belong to no one record: handlers record them on the unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toex_pnd.domain.model import RegionFigures, Report, SearchRow, Submission


@dataclass(frozen=True)
class SubmissionAnswered:
    """The PND accepted, rejected or refused (conflict) a submission: its state and answer are
    on the submission, which no longer changes."""

    submission: Submission


@dataclass(frozen=True)
class SearchAnswered:
    """The PND answered a search: its results as source records in the bulk format's JSON form."""

    search: SearchRow
    results: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class ReconciliationCompleted:
    """One region's figures of a completed reconciliation (one event per region)."""

    report: Report
    figures: RegionFigures


DomainEvent = SubmissionAnswered | SearchAnswered | ReconciliationCompleted
