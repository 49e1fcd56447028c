"""The platform publishes domain events: aggregates' and the unit of work's own, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from toex_common.testing.fakes import FakeUnitOfWorkBase


@dataclass
class Happened:
    what: str


@dataclass
class Aggregate:
    name: str
    events: list[Any] = field(default_factory=list)


class MappingUow(FakeUnitOfWorkBase):
    def __init__(self) -> None:
        super().__init__()
        self.mapped: list[tuple[str | None, str]] = []

    def integration_events(self, aggregate: Any, event: Any) -> list[Any]:
        self.mapped.append((aggregate.name if aggregate is not None else None, event.what))
        return [f"{aggregate.name if aggregate else '-'}:{event.what}"]


@pytest.mark.asyncio
async def test_recorded_events_reach_the_mapping_with_no_aggregate_after_the_aggregates() -> None:
    uow = MappingUow()
    async with uow:
        job = Aggregate("jobs/1", [Happened("created")])
        uow.track(job)
        uow.record(Happened("reconciled"))
        uow.record(Happened("reported"))
        uow.track(job)  # stored twice: its events still go once
        await uow.commit()
    assert uow.mapped == [("jobs/1", "created"), (None, "reconciled"), (None, "reported")]
    assert uow.committed_events == ["jobs/1:created", "-:reconciled", "-:reported"]
    assert job.events == []


@pytest.mark.asyncio
async def test_recorded_events_of_work_rolled_back_are_never_published() -> None:
    uow = MappingUow()
    async with uow:
        uow.record(Happened("lost"))
        await uow.rollback()
    async with uow:
        await uow.commit()
    assert uow.mapped == [] and uow.committed_events == []
