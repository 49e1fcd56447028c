"""Hand-written fakes of the platform ports, for unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from toex_kernel.errors import InvalidArgument
from toex_kernel.grants import JobGrant, job_of_purpose
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_common.audit import AuditEntry
from toex_common.events.envelope import EventEnvelope
from toex_common.uow import CollectsDomainEvents


class FakeAuditSink:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


class FakeGrants:
    """Job grants held in memory: `grant(...)` what tasking's events would have said."""

    def __init__(self) -> None:
        self.grants: dict[str, JobGrant] = {}

    def grant(
        self, job: str, *holders: str, open: bool = True, collaborators: frozenset[Region] = frozenset()
    ) -> None:
        region = Region.parse(job.split("/")[1])
        self.grants[job] = JobGrant(job, region, frozenset(holders), open, collaborators)

    async def of_job(self, job: str) -> JobGrant | None:
        return self.grants.get(job)

    async def for_purpose(self, purpose: str) -> JobGrant | None:
        job = job_of_purpose(purpose)
        return self.grants.get(job) if job else None


class FakeUnitOfWorkBase(CollectsDomainEvents):
    """Collects published events; `committed_events` holds those of committed work only. Runs
    after-commit work once the work commits."""

    def __init__(self) -> None:
        self._pending: list[EventEnvelope] = []
        self.committed_events: list[EventEnvelope] = []
        self._forget_tracked()
        self.commits = 0
        self._requests: dict[tuple[str, str], tuple[str, str]] = {}
        self._after_commit: list[Callable[[], Awaitable[object]]] = []
        self.grants = FakeGrants()

    async def __aenter__(self) -> Any:
        self._pending, self._after_commit = [], []
        self._forget_tracked()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rollback()

    def publish(self, event: EventEnvelope) -> None:
        self._pending.append(event)

    def after_commit(self, callback: Callable[[], Awaitable[object]]) -> None:
        self._after_commit.append(callback)

    async def commit(self) -> None:
        self._pending.extend(await self._collect_domain_events())
        self.committed_events.extend(self._pending)
        self._pending = []
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            await callback()

    async def rollback(self) -> None:
        self._pending, self._after_commit = [], []
        self._forget_tracked()

    async def recall_request(self, scope: str, request_id: str, fingerprint: str) -> str | None:
        found = self._requests.get((scope, request_id))
        if found is None:
            return None
        if found[0] != fingerprint:
            raise InvalidArgument.field(
                "request_id", "already used for a different request; use a new request_id"
            )
        return found[1]

    async def remember_request(self, scope: str, request_id: str, fingerprint: str, resource: str) -> None:
        self._requests.setdefault((scope, request_id), (fingerprint, resource))


def principal(username: str, role: Role | str, region: Region | str | None = None) -> Principal:
    """`principal("researcher.emsou", Role.RESEARCHER)`; region defaults to the name's suffix."""
    role = Role(role)
    region = Region.parse(region) if isinstance(region, str) else region
    if region is None:
        region = Region.parse(username.rsplit(".", 1)[-1])
    return Principal(
        subject=str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
        username=username,
        region=region,
        roles=frozenset({role}),
    )
