"""Commands: what callers ask the service to do (imperative names). `purpose` is the call's
stated purpose: when it names a job, a holder of that job's grant works under it (policy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_entity.domain.model import ReviewState
from toex_entity.domain.records import Content, Grading, RecordType


@dataclass(frozen=True)
class IncomingRecord:
    """A record as submitted, before validation."""

    region: Region
    source_system: str
    source_record_id: str
    record_type: RecordType | None
    grading: Grading
    content: Content | None


@dataclass(frozen=True)
class ResolveRecords:
    actor: Principal
    records: list[IncomingRecord]
    # One record (ResolveRecord) raises on a bad record; a stream reports it and goes on.
    single: bool = True
    idempotency: Idempotency | None = None
    # The call's purpose: records of the region whose job it names are attached to that job.
    purpose: str = ""


@dataclass(frozen=True)
class GetEntity:
    actor: Principal
    entity_id: str
    purpose: str = ""


@dataclass(frozen=True)
class GetNeighbourhood:
    actor: Principal
    entity_id: str
    depth: int = 1
    max_nodes: int = 100
    purpose: str = ""


@dataclass(frozen=True)
class SearchEntities:
    actor: Principal
    name: str = ""
    birth_date: str = ""
    phone_number: str = ""
    vrm: str = ""
    handle: str = ""
    email: str = ""
    limit: int = 20
    offset: int = 0
    purpose: str = ""


@dataclass(frozen=True)
class ExplainMatch:
    actor: Principal
    record_a: tuple[Region, str]
    record_b: tuple[Region, str]
    purpose: str = ""


@dataclass(frozen=True)
class ListReviewTasks:
    actor: Principal
    region: Region | None
    state: ReviewState
    limit: int
    after: tuple[datetime, str] | None
    purpose: str = ""


@dataclass(frozen=True)
class DecideReview:
    actor: Principal
    region: Region
    task_id: str
    confirm: bool
    reason: str
    idempotency: Idempotency | None = None
    purpose: str = ""


@dataclass(frozen=True)
class MergeEntities:
    actor: Principal
    entity_id: str
    others: list[str]
    reason: str
    idempotency: Idempotency | None = None
    purpose: str = ""


@dataclass(frozen=True)
class SplitEntity:
    actor: Principal
    entity_id: str
    records: list[tuple[Region, str]]
    undo_change: str
    reason: str
    idempotency: Idempotency | None = None
    purpose: str = ""
