"""Comms datasets' identifiers (DatasetIdentifiersObserved) become source records: phone and
vehicle records of the subject's region, one per dataset and identifier, attached to the
dataset's job only when it is a job of that region."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.type.v1 import security_pb2
from toex_common.events import build_event, decode
from toex_common.events.consumer import PermanentError
from toex_entity.bootstrap import message_bus
from toex_entity.config import Settings
from toex_entity.domain.records import Grading, Handling, PhoneData, RecordType, VehicleData
from toex_entity.entrypoints import consumers
from toex_entity.service_layer import handlers
from toex_kernel.events import IncomingEvent
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NUMBERS = ["+447700900101", "+447700900102"]
VRMS = ["AB12CDE"]
IMEI = "356938035643809"


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork(FakeRepository())


@pytest.fixture
def deps(uow: FakeUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def observed(
    region: Region,
    *,
    dataset: str = "",
    job: str | None = None,
    numbers: list[str] = NUMBERS,
    vrms: list[str] = VRMS,
    handling: int = security_pb2.HANDLING_CODE_P,
) -> IncomingEvent:
    """The event as it arrives on `region`'s subject."""
    dataset = dataset or f"regions/{region.value}/datasets/{uuid.uuid4().hex}"
    message = comms_events.DatasetIdentifiersObserved(
        dataset=dataset,
        job=f"regions/{region.value}/jobs/op-1" if job is None else job,
        e164_numbers=numbers,
        vrms=vrms,
        imeis=[IMEI],
        part=1,
        parts=1,
    )
    envelope = build_event(message, domain="comms", source="toex/comms", region=region, handling=handling)
    return decode(envelope.subject, envelope.payload, envelope.headers)


def test_the_consumer_reads_comms_identifiers_a_few_parts_at_a_time(deps: handlers.Deps) -> None:
    bus = message_bus(Settings(consume=True), deps)
    assert bus.subjects("entity-comms-identifiers") == ["toex.*.comms.DatasetIdentifiersObserved"]
    [made] = [
        c for c in bus.consumers(lambda **kw: kw, uow_factory=None) if c["name"] == "entity-comms-identifiers"
    ]  # type: ignore[arg-type]
    assert made["stream"].name == "COMMS"
    assert made["batch"] == consumers.COMMS_IDENTIFIER_BATCH


async def test_numbers_and_vehicles_become_records_of_the_subjects_region(
    deps: handlers.Deps, uow: FakeUnitOfWork
) -> None:
    event = observed(Region.ERSOU)
    dataset = event.message.dataset  # type: ignore[union-attr]

    await consumers.on_comms_identifiers(event, uow, deps)

    records = sorted(uow.repo.records.values(), key=lambda r: r.source_record_id)
    assert [(r.record_type, r.source_record_id) for r in records] == [
        (RecordType.PHONE, f"{dataset}/+447700900101"),
        (RecordType.PHONE, f"{dataset}/+447700900102"),
        (RecordType.VEHICLE, f"{dataset}/AB12CDE"),
    ]
    assert {r.region for r in records} == {Region.ERSOU}
    assert {r.source_system for r in records} == {"comms"}
    assert {r.job for r in records} == {"regions/ERSOU/jobs/op-1"}
    assert {r.grading for r in records} == {Grading(1, "A", Handling.P)}
    assert [r.content for r in records] == [
        PhoneData(NUMBERS[0]),
        PhoneData(NUMBERS[1]),
        VehicleData("AB12CDE"),
    ]
    # IMEIs make no record: a record holds no handset identifier to match on.
    assert not any(IMEI in r.source_record_id for r in records)
    assert len({r.entity_id for r in records}) == 3


async def test_a_redelivered_or_republished_part_duplicates_nothing(
    deps: handlers.Deps, uow: FakeUnitOfWork
) -> None:
    event = observed(Region.EMSOU)
    await consumers.on_comms_identifiers(event, uow, deps)
    first = {r.id: r.entity_id for r in uow.repo.records.values()}

    await consumers.on_comms_identifiers(event, uow, deps)
    # The same dataset's identifiers under a new event id (a part published again).
    again = comms_events.DatasetIdentifiersObserved()
    again.CopyFrom(event.message)  # type: ignore[arg-type]
    again.event_id = ""
    envelope = build_event(again, domain="comms", source="toex/comms", region=Region.EMSOU)
    await consumers.on_comms_identifiers(
        decode(envelope.subject, envelope.payload, envelope.headers), uow, deps
    )

    assert {r.id: r.entity_id for r in uow.repo.records.values()} == first


async def test_the_same_number_in_two_datasets_is_two_records_of_one_entity(
    deps: handlers.Deps, uow: FakeUnitOfWork
) -> None:
    await consumers.on_comms_identifiers(observed(Region.EMSOU, numbers=[NUMBERS[0]], vrms=[]), uow, deps)
    await consumers.on_comms_identifiers(observed(Region.EMSOU, numbers=[NUMBERS[0]], vrms=[]), uow, deps)

    records = list(uow.repo.records.values())
    assert len(records) == 2 and len({r.source_record_id for r in records}) == 2
    assert len({r.entity_id for r in records}) == 1


async def test_a_job_of_another_region_is_not_attached(deps: handlers.Deps, uow: FakeUnitOfWork) -> None:
    await consumers.on_comms_identifiers(observed(Region.ERSOU, job="regions/EMSOU/jobs/op-1"), uow, deps)

    records = list(uow.repo.records.values())
    assert len(records) == 3
    assert {(r.region, r.job) for r in records} == {(Region.ERSOU, "")}


async def test_a_dataset_of_another_region_makes_no_records(deps: handlers.Deps, uow: FakeUnitOfWork) -> None:
    event = observed(Region.ERSOU, dataset="regions/EMSOU/datasets/d1")

    with pytest.raises(PermanentError):
        await consumers.on_comms_identifiers(event, uow, deps)

    assert not uow.repo.records


async def test_an_identifier_that_is_not_one_is_skipped_and_the_rest_resolved(
    deps: handlers.Deps, uow: FakeUnitOfWork
) -> None:
    event = observed(
        Region.EMSOU, numbers=["+1", NUMBERS[0]], vrms=["A", "AB12CDE"], handling=security_pb2.HANDLING_CODE_C
    )

    await consumers.on_comms_identifiers(event, uow, deps)

    records = uow.repo.records.values()
    assert sorted(r.source_record_id.rsplit("/", 1)[1] for r in records) == [NUMBERS[0], "AB12CDE"]
    assert {r.grading.handling for r in records} == {Handling.C}
