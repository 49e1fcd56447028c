"""Finding 8: consumers trust the subject's region, never a label that says otherwise.

The attack: a publisher allowed on EMSOU's subjects (a leaked EMSOU credential) publishes a
PND result labelled ERSOU on `toex.emsou.pnd.PndResultReceived`. Before the fix the entity
service resolved its people as ERSOU records, writing into another region's holdings.
"""

from __future__ import annotations

import asyncio
import uuid

import nats
from toex.entity.v1 import entity_pb2 as pb
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import pole_pb2
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

NC = "national_coordinator.national"


def pnd_result(family_name: str) -> pnd_events.PndResultReceived:
    grading = pole_pb2.Grading(
        source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
        intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_A,
        handling=security_pb2.HANDLING_CODE_P,
    )
    tag = uuid.uuid4().hex[:8]
    return pnd_events.PndResultReceived(
        results=[
            pole_pb2.PndSourceRecord(
                source_record_id=f"pnd/P{tag}@1",
                pnd_id=f"P{tag}",
                kind=pole_pb2.POLE_KIND_PERSON,
                entity=pole_pb2.PoleEntity(
                    person=pole_pb2.Person(
                        names=[pole_pb2.PersonName(given_names=["Ivo"], family_name=family_name)],
                        date_of_birth=pole_pb2.PartialDate(year=1991, month=4, day=16),
                    )
                ),
                grading=grading,
            )
        ]
    )


async def publish(nats_url: str, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(subject, payload, headers=headers)
    finally:
        await nc.close()


async def regions_holding(entity, family_name: str) -> set[int]:  # type: ignore[no-untyped-def]
    found = await entity.stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Ivo {family_name}"), metadata=entity.md(NC)
    )
    return {
        region
        for match in found.matches
        for record in match.entity.records
        if record.person.surname == family_name
        for region in [region_pb2.Region.Value("REGION_" + record.name.split("/")[1])]
    }


async def test_a_forged_label_creates_nothing_and_is_dead_lettered(entity, nats_server) -> None:
    forged_name = f"Forged{uuid.uuid4().hex[:8]}"
    # Labelled ERSOU in the payload and the header, published on an EMSOU subject.
    forged = build_event(pnd_result(forged_name), domain="pnd", source="toex/pnd", region=Region.ERSOU)
    emsou_subject = forged.subject.replace("toex.ersou.", "toex.emsou.")
    await publish(nats_server.url, emsou_subject, forged.payload, dict(forged.headers))

    # A genuine EMSOU result published after it is handled: the consumer got past the forgery.
    genuine_name = f"Genuine{uuid.uuid4().hex[:8]}"
    genuine = build_event(pnd_result(genuine_name), domain="pnd", source="toex/pnd", region=Region.EMSOU)
    await publish(nats_server.url, genuine.subject, genuine.payload, dict(genuine.headers))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await regions_holding(entity, genuine_name) and loop.time() < deadline:
        await asyncio.sleep(0.3)
    assert await regions_holding(entity, genuine_name) == {region_pb2.REGION_EMSOU}
    assert await regions_holding(entity, forged_name) == set()

    # The forgery sits in EMSOU's dead letters (the subject's region, not the label's).
    def dead(messages: list) -> list:
        return [m for m in messages if forged_name.encode() in m.data]

    letters = await stream_messages(
        nats_server.url, "toex.*.deadletter.>", until=lambda found: bool(dead(found))
    )
    assert [m.subject.split(".")[1] for m in dead(letters)] == ["emsou"]
    assert "label" in dead(letters)[0].headers["toex-dead-reason"]


async def test_a_job_naming_an_entity_its_region_cannot_see_learns_nothing(entity, nats_server) -> None:
    """Finding 11: job subject ids were not checked, so a job of one region naming any entity
    id made deconfliction notices tell that region which regions held it."""
    from toex.entity.events.v1 import events_pb2 as ev
    from toex.tasking.events.v2 import events_pb2 as tasking_events

    held = await entity.stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU",
            record=pb.SourceRecord(
                ref=pb.SourceRecordRef(source_system="niche", source_record_id=uuid.uuid4().hex),
                grading=pb.Grading(
                    source_evaluation=pb.SOURCE_EVALUATION_2,
                    intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_B,
                    handling=security_pb2.HANDLING_CODE_P,
                ),
                person=pb.Person(
                    given_name="Una", surname=f"Probe{uuid.uuid4().hex[:8]}", birth_date="1985-05-15"
                ),
            ),
        ),
        metadata=entity.md("researcher.emsou"),
    )
    entity_id = held.entity.name.split("/")[1]
    for region in (Region.ERSOU, Region.NATIONAL):
        job = tasking_events.JobCreated(
            job=f"regions/{region.value}/jobs/{uuid.uuid4().hex}", subject_entity_ids=[entity_id]
        )
        envelope = build_event(job, domain="tasking", source="toex/tasking", region=region)
        await publish(nats_server.url, envelope.subject, envelope.payload, dict(envelope.headers))

    def about(messages: list) -> list:
        out = []
        for m in messages:
            if m.headers.get("ce-type") == ev.DeconflictionNotice.DESCRIPTOR.full_name:
                notice = ev.DeconflictionNotice.FromString(m.data)
                if notice.entity == held.entity.name:
                    out.append(notice)
        return out

    # The national job (the national team sees every entity) is deconflicted...
    national = await stream_messages(
        nats_server.url, "toex.national.entity.DeconflictionNotice", until=lambda found: bool(about(found))
    )
    assert [n.other_region for n in about(national)] == [region_pb2.REGION_EMSOU]
    # ...the ERSOU job, naming an entity ERSOU holds nothing of, is told nothing.
    ersou = await stream_messages(nats_server.url, "toex.ersou.entity.DeconflictionNotice", wait=2.0)
    assert about(ersou) == []
