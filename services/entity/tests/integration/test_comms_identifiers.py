"""Comms datasets' identifiers, as comms publishes them (DatasetIdentifiersObserved on the COMMS
stream), become source records of the subject's region, linked and published (RecordLinked)
for comms to attribute; a repeat makes nothing new, a forged label makes nothing at all."""

from __future__ import annotations

import dataclasses
import uuid

import nats
import pytest
from sqlalchemy import text
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.consumer import Outcome
from toex_common.events.streams import COMMS_STREAM, ensure_stream
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

from .test_consumers import eventually
from .test_entity_service import decode

pytestmark = pytest.mark.integration

CONSUMER = "entity-comms-identifiers"


async def publish(nats_url: str, envelope: EventEnvelope) -> None:
    """Publish on the COMMS stream as comms would (declared as comms declares it, so a test that
    runs before the consumer has bound finds it there)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, COMMS_STREAM)
        await js.publish(envelope.subject, envelope.payload, headers=envelope.headers)
    finally:
        await nc.close()


def observed(region: Region, job: str, numbers: list[str], vrms: list[str]) -> tuple[str, EventEnvelope]:
    dataset = f"regions/{region.value}/datasets/{uuid.uuid4().hex}"
    message = comms_events.DatasetIdentifiersObserved(
        dataset=dataset, job=job, e164_numbers=numbers, vrms=vrms, imeis=["356938035643809"], part=1, parts=1
    )
    envelope = build_event(
        message,
        domain="comms",
        source="toex/comms",
        region=region,
        handling=security_pb2.HANDLING_CODE_P,
        resource=dataset,
    )
    return dataset, envelope


def unique_number() -> str:
    return f"+4477009{uuid.uuid4().int % 100000:05d}"


def unique_vrm() -> str:
    return f"CX{uuid.uuid4().int % 100:02d}{''.join(chr(65 + (uuid.uuid4().int % 26)) for _ in range(3))}"


async def records_of(entity_service, dataset: str) -> list[tuple[str, str, str, str, str, str]]:  # type: ignore[no-untyped-def]
    async with entity_service.app.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT region, record_type, source_record_id, job, source_evaluation || assessment || handling, "
                "entity_id FROM source_records WHERE source_system = 'comms' AND source_record_id LIKE :prefix "
                "ORDER BY source_record_id"
            ),
            {"prefix": f"{dataset}/%"},
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def consumer_of(entity_service):  # type: ignore[no-untyped-def]
    return next(c for c in entity_service.app.consumers if c.name == CONSUMER)


async def test_a_datasets_identifiers_become_linked_records_of_its_region(
    entity_service, nats_server
) -> None:
    number, vrm = unique_number(), unique_vrm()
    dataset, envelope = observed(Region.EMSOU, "regions/EMSOU/jobs/op-heron", [number], [vrm])

    await publish(nats_server.url, envelope)

    async def linked() -> list[ev.RecordLinked]:
        events = await stream_messages(nats_server.url, "toex.emsou.entity.RecordLinked", wait=1.0)
        found = [
            e
            for e in decode(events, ev.RecordLinked)
            if e.source.source_system == "comms" and e.source.source_record_id.startswith(dataset)
        ]
        return found if len(found) >= 2 else []

    found = await eventually(linked)
    assert {(e.entity_type, e.source.source_record_id) for e in found} == {
        (pb.RECORD_TYPE_PHONE, f"{dataset}/{number}"),
        (pb.RECORD_TYPE_VEHICLE, f"{dataset}/{vrm}"),
    }
    assert {e.label.region for e in found} == {region_pb2.REGION_EMSOU}
    phone = next(e for e in found if e.entity_type == pb.RECORD_TYPE_PHONE)
    assert list(phone.identifiers.e164_numbers) == [number]  # what comms attributes
    assert [(r[0], r[1], r[3], r[4]) for r in await records_of(entity_service, dataset)] == [
        ("EMSOU", "PHONE", "regions/EMSOU/jobs/op-heron", "1AP"),
        ("EMSOU", "VEHICLE", "regions/EMSOU/jobs/op-heron", "1AP"),
    ]


async def test_a_repeat_of_a_part_makes_no_new_record(entity_service, nats_server) -> None:
    dataset, envelope = observed(Region.EMSOU, "", [unique_number(), unique_number()], [])
    await publish(nats_server.url, envelope)
    first = await eventually(lambda: _records(entity_service, dataset, 2))
    consumer = consumer_of(entity_service)
    duplicates = consumer.counts[Outcome.DUPLICATE]

    # Delivered again (the same event id under another message id, which the stream keeps) ...
    headers = dict(envelope.headers, **{"Nats-Msg-Id": uuid.uuid4().hex})
    await publish(nats_server.url, dataclasses.replace(envelope, headers=headers))
    await eventually(lambda: _true(consumer.counts[Outcome.DUPLICATE] > duplicates))
    # ... and published again as a new event (say, the import's events replayed).
    again = comms_events.DatasetIdentifiersObserved.FromString(envelope.payload)
    again.event_id = ""
    processed = consumer.counts[Outcome.PROCESSED]
    await publish(
        nats_server.url,
        build_event(
            again,
            domain="comms",
            source="toex/comms",
            region=Region.EMSOU,
            handling=security_pb2.HANDLING_CODE_P,
        ),
    )
    await eventually(lambda: _true(consumer.counts[Outcome.PROCESSED] > processed))

    assert await records_of(entity_service, dataset) == first


async def test_a_job_of_another_region_is_not_attached(entity_service, nats_server) -> None:
    dataset, envelope = observed(Region.ERSOU, "regions/EMSOU/jobs/op-heron", [unique_number()], [])

    await publish(nats_server.url, envelope)

    [record] = await eventually(lambda: _records(entity_service, dataset, 1))
    assert (record[0], record[3]) == ("ERSOU", "")


async def test_an_event_of_one_region_on_anothers_subject_makes_no_record(
    entity_service, nats_server
) -> None:
    dataset, envelope = observed(Region.EMSOU, "", [unique_number()], [])
    forged = dataclasses.replace(envelope, subject="toex.ersou.comms.DatasetIdentifiersObserved")
    consumer = consumer_of(entity_service)
    dead = consumer.counts[Outcome.DEAD_LETTERED]

    await publish(nats_server.url, forged)

    assert await eventually(lambda: _true(consumer.counts[Outcome.DEAD_LETTERED] > dead))
    assert await records_of(entity_service, dataset) == []
    ersou = dataset.replace("regions/EMSOU/", "regions/ERSOU/")
    assert await records_of(entity_service, ersou) == []


async def _records(entity_service, dataset: str, n: int) -> list:  # type: ignore[no-untyped-def]
    found = await records_of(entity_service, dataset)
    return found if len(found) >= n else []


async def _true(value: bool) -> bool:
    return value
