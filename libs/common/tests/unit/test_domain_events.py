"""The platform publishes domain events: aggregates' and the unit of work's own, in order."""

from __future__ import annotations

import asyncio
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


@pytest.mark.asyncio
async def test_events_mapped_meanwhile_are_committed_as_if_mapped_at_commit() -> None:
    """Mapped in the background while the unit waits, with events recorded before, between and
    after two `map_meanwhile` calls: the same envelopes, in the same order, each mapped once."""

    async def run(meanwhile: bool) -> tuple[list[Any], list[Any]]:
        uow = MappingUow()
        async with uow:
            job = Aggregate("jobs/1", [Happened(f"created {i}") for i in range(40)])
            uow.track(job)
            for i in range(40):
                uow.record(Happened(f"linked {i}"))
            if meanwhile:
                uow.map_meanwhile()
                await asyncio.sleep(0.01)  # the unit waits on its database
                assert len(uow.mapped) == 80  # mapped meanwhile, before commit
            job.events.append(Happened("updated"))
            for i in range(30):
                uow.record(Happened(f"related {i}"))
            if meanwhile:
                uow.map_meanwhile()
            uow.record(Happened("touched"))
            await uow.commit()
        return uow.mapped, uow.committed_events

    mapped_at_commit, committed_at_commit = await run(meanwhile=False)
    mapped_meanwhile, committed_meanwhile = await run(meanwhile=True)
    assert committed_meanwhile == committed_at_commit
    assert sorted(map(str, mapped_meanwhile)) == sorted(map(str, mapped_at_commit))  # each once
    assert committed_at_commit[:3] == ["jobs/1:created 0", "jobs/1:created 1", "jobs/1:created 2"]
    assert committed_at_commit[40] == "jobs/1:updated" and committed_at_commit[-1] == "-:touched"


class FailingUow(MappingUow):
    def integration_events(self, aggregate: Any, event: Any) -> list[Any]:
        if event.what == "bad":
            raise ValueError("no mapping for this event")
        return super().integration_events(aggregate, event)


@pytest.mark.asyncio
async def test_an_error_in_the_mapping_meanwhile_is_raised_by_commit_and_nothing_is_published() -> None:
    uow = FailingUow()
    async with uow:
        uow.record(Happened("good"))
        uow.record(Happened("bad"))
        uow.map_meanwhile()
        await asyncio.sleep(0.01)
        with pytest.raises(ValueError, match="no mapping"):
            await uow.commit()
    assert uow.committed_events == []


@pytest.mark.asyncio
async def test_work_rolled_back_while_mapping_meanwhile_publishes_nothing() -> None:
    uow = MappingUow()
    async with uow:
        for i in range(500):
            uow.record(Happened(f"lost {i}"))
        uow.map_meanwhile()
        await uow.rollback()
    async with uow:
        uow.record(Happened("kept"))
        await uow.commit()
    await asyncio.sleep(0.01)
    assert uow.committed_events == ["-:kept"]
