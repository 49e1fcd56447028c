"""The service's consumers on its message bus: the two it had keep their durable names (their
inboxes know what was handled), the job grants' is added, and a job subject comes only from the
job's own region."""

from __future__ import annotations

import pytest
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.events import build_event, decode
from toex_common.events.consumer import PermanentError
from toex_entity.bootstrap import message_bus
from toex_entity.config import Settings
from toex_entity.domain import commands
from toex_entity.domain.records import Grading, Handling, PhoneData, RecordType
from toex_entity.entrypoints import consumers
from toex_entity.service_layer import handlers
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork(FakeRepository())


@pytest.fixture
def deps(uow: FakeUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow)  # type: ignore[arg-type,return-value]


def test_the_consumers_keep_their_names_and_the_grants_join_them(deps: handlers.Deps) -> None:
    bus = message_bus(Settings(consume=True), deps)
    assert bus.names == [
        "entity-tasking-subjects",
        "entity-pnd-results",
        "entity-comms-identifiers",
        "entity-job-grants",
    ]
    assert bus.subjects("entity-tasking-subjects") == ["toex.*.tasking.JobCreated"]
    assert bus.subjects("entity-pnd-results") == ["toex.*.pnd.PndResultReceived"]
    assert set(bus.subjects("entity-job-grants")) >= {
        "toex.*.tasking.JobCreated",
        "toex.*.tasking.JobAssigned",
        "toex.*.tasking.JobReassigned",
        "toex.*.tasking.JobStatusChanged",
    }
    assert message_bus(Settings(consume=False), deps).names == []


async def test_a_job_subject_comes_only_from_the_jobs_region(
    deps: handlers.Deps, uow: FakeUnitOfWork
) -> None:
    record = commands.IncomingRecord(
        Region.ERSOU, "comms", "E1", RecordType.PHONE, Grading(2, "B", Handling.P), PhoneData("07700 900444")
    )
    [held] = await handlers.resolve_records(commands.ResolveRecords(consumers.CONSUMER_ACTOR, [record]), deps)

    def event(job: str, region: Region):  # type: ignore[no-untyped-def]
        envelope = build_event(
            tasking_events.JobCreated(job=job, subject_entity_ids=[held.entity_id]),
            domain="tasking",
            source="test",
            region=region,
        )
        return decode(envelope.subject, envelope.payload, envelope.headers)

    # ERSOU's subject naming an EMSOU job would put its entity into that job's compartment.
    with pytest.raises(PermanentError):
        await consumers.on_job_created(event("regions/EMSOU/jobs/j1", Region.ERSOU), uow, deps)
    assert not uow.repo.job_subjects
    await consumers.on_job_created(event("regions/ERSOU/jobs/j1", Region.ERSOU), uow, deps)
    assert uow.repo.job_subjects == {("regions/ERSOU/jobs/j1", held.entity_id): Region.ERSOU}
