"""Records other services publish: tasking job subjects and PND results."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

from .test_entity_service import decode, md, person, unique_person

pytestmark = pytest.mark.integration


async def publish(nats_url: str, envelope) -> None:  # type: ignore[no-untyped-def]
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(envelope.subject, envelope.payload, headers=envelope.headers)
    finally:
        await nc.close()


async def eventually(check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(0.3)


async def test_national_job_subject_held_by_a_region_raises_deconfliction(
    entity_service, nats_server
) -> None:
    held = await entity_service.stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())),
        metadata=md(entity_service.token("researcher.emsou")),
    )
    job = tasking_events.JobCreated(
        job=f"regions/NATIONAL/jobs/{uuid.uuid4().hex}", subject_entity_ids=[held.entity.name.split("/")[1]]
    )
    envelope = build_event(job, domain="tasking", source="toex/tasking", region=Region.NATIONAL)
    await publish(nats_server.url, envelope)
    await publish(nats_server.url, envelope)  # a redelivery changes nothing

    async def notices() -> list:
        found = []
        for region in ("emsou", "national"):
            events = await stream_messages(
                nats_server.url, f"toex.{region}.entity.DeconflictionNotice", wait=1.0
            )
            found += [n for n in decode(events, ev.DeconflictionNotice) if n.entity == held.entity.name]
        return found if len(found) >= 2 else []

    found = await eventually(notices)
    assert {(n.label.region, n.other_region) for n in found} == {
        (region_pb2.REGION_EMSOU, region_pb2.REGION_NATIONAL),
        (region_pb2.REGION_NATIONAL, region_pb2.REGION_EMSOU),
    }
    assert next(n for n in found if n.label.region == region_pb2.REGION_NATIONAL).trigger_record == job.job


async def test_pnd_result_becomes_source_records(entity_service, nats_server) -> None:
    tag = uuid.uuid4().hex[:8]
    job = f"regions/EMSOU/jobs/{tag}"
    number = f"+4477009{uuid.uuid4().int % 100000:05d}"
    grading = pole_pb2.Grading(
        source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
        intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_A,
        handling=security_pb2.HANDLING_CODE_P,
    )
    result = pnd_events.PndResultReceived(
        # A search made for an EMSOU job: its results are that job's records.
        search=sync_pb2.PndSearch(name=f"regions/EMSOU/searches/{tag}", job=job),
        results=[
            pole_pb2.PndSourceRecord(
                source_record_id=f"pnd/P{tag}@1",
                pnd_id=f"P{tag}",
                kind=pole_pb2.POLE_KIND_PERSON,
                entity=pole_pb2.PoleEntity(
                    person=pole_pb2.Person(
                        names=[pole_pb2.PersonName(given_names=["Lee"], family_name=f"Pnd{tag}")],
                        date_of_birth=pole_pb2.PartialDate(year=1990, month=5, day=17),
                    )
                ),
                grading=grading,
                links=[pole_pb2.PoleLink(target=f"pnd/T{tag}@1", type=pole_pb2.LINK_TYPE_USES)],
            ),
            pole_pb2.PndSourceRecord(
                source_record_id=f"pnd/T{tag}@1",
                pnd_id=f"T{tag}",
                kind=pole_pb2.POLE_KIND_PHONE,
                entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number)),
                grading=grading,
            ),
        ],
    )
    envelope = build_event(result, domain="pnd", source="toex/pnd", region=Region.EMSOU)
    await publish(nats_server.url, envelope)

    def ours(events: list) -> list:
        return [
            e
            for e in decode(events, ev.RecordLinked)
            if e.source.source_system == "pnd" and tag in e.source.source_record_id
        ]

    async def linked() -> list:
        # Read until ours are there: the stream holds other tests' events before them.
        events = await stream_messages(
            nats_server.url,
            "toex.emsou.entity.RecordLinked",
            until=lambda found: len(ours(found)) >= 2,
            wait=10.0,
        )
        return ours(events)

    found = await eventually(lambda: _at_least(linked, 2))
    by_type = {e.entity_type: e for e in found}
    assert list(by_type[pb.RECORD_TYPE_PERSON].identifiers.e164_numbers) == [number]
    assert list(by_type[pb.RECORD_TYPE_PERSON].identifiers.official_ids) == [f"PND:P{tag.upper()}"]
    assert by_type[pb.RECORD_TYPE_PHONE].label.region == region_pb2.REGION_EMSOU
    search = await entity_service.stub.SearchEntities(
        pb.SearchEntitiesRequest(phone_number=number), metadata=md(entity_service.token("researcher.emsou"))
    )
    assert len(search.matches) == 2
    got = await entity_service.stub.GetEntity(
        pb.GetEntityRequest(name=by_type[pb.RECORD_TYPE_PHONE].entity),
        metadata=md(entity_service.token("researcher.emsou")),
    )
    assert {r.job for r in got.entity.records if tag in r.ref.source_record_id} == {job}


async def _at_least(check, n: int) -> list:  # type: ignore[no-untyped-def]
    found = await check()
    return found if len(found) >= n else []
