"""Commands: what callers ask the service to do (imperative names)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_pnd.domain.model import Kind, SyncState


@dataclass(frozen=True)
class SubmitIntelligence:
    actor: Principal
    region: Region
    entity: dict[str, Any]
    grading: dict[str, Any] | None
    links: list[dict[str, Any]]
    idempotency: Idempotency | None = None
    # The call's purpose: a job named there attaches new material to it and is the only job
    # whose grant can reach another region's material in the call.
    purpose: str = ""


@dataclass(frozen=True)
class UpdateIntelligence:
    actor: Principal
    region: Region
    record_id: str
    entity: dict[str, Any] | None
    grading: dict[str, Any] | None
    links: list[dict[str, Any]] | None
    expected_version: int = 0
    idempotency: Idempotency | None = None
    purpose: str = ""


@dataclass(frozen=True)
class DeleteIntelligence:
    actor: Principal
    region: Region
    record_id: str
    expected_version: int = 0
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class GetIntelligence:
    actor: Principal
    region: Region
    record_id: str
    purpose: str = ""


@dataclass(frozen=True)
class ListIntelligence:
    actor: Principal
    region: Region | None
    sync_states: frozenset[SyncState]
    kind: Kind | None
    show_deleted: bool
    page_size: int
    after: tuple[datetime, str] | None
    purpose: str = ""
    job: str = ""  # only the records attached to this job ("": any)


@dataclass(frozen=True)
class ReleaseIntelligence:
    actor: Principal
    region: Region
    record_id: str
    reason: str
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class SearchPnd:
    actor: Principal
    region: Region
    kind: str  # PERSON, PHONE, VEHICLE, ONLINE_ACCOUNT
    criteria: dict[str, Any]
    purpose: str
    max_results: int


@dataclass(frozen=True)
class RunReconciliation:
    requested_by: str  # empty when scheduled
    scheduled: bool


@dataclass(frozen=True)
class DispatchOnce:
    sender: int
    senders: int
    batch_size: int
