"""The entity service against real PostgreSQL, nats-server and Keycloak."""

from __future__ import annotations

import random
import string
import uuid

import grpc
import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import region_pb2, security_pb2
from toex_common.testing.streams import stream_messages

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"
SUP_EMSOU = "supervisor.emsou"
RES_EMSOU = "researcher.emsou"
RES_ERSOU = "researcher.ersou"
ANA_EMSOU = "analyst.emsou"


def md(token: str, purpose: str | None = "Op SANDPIPER") -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


GRADING = pb.Grading(
    source_evaluation=pb.SOURCE_EVALUATION_2,
    intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def person(source_id: str, system: str = "niche", **fields: object) -> pb.SourceRecord:
    addresses = fields.pop("addresses", None)
    record = pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system=system, source_record_id=source_id),
        grading=GRADING,
        person=pb.Person(**fields),  # type: ignore[arg-type]
    )
    if addresses:
        record.person.addresses.extend(addresses)  # type: ignore[arg-type]
    return record


def unique_person(tag: str = "") -> dict[str, object]:
    """A person no other test creates: a made-up surname, date of birth and address, each drawn
    on its own. (Drawing them all from one number gave only 1,800 different people, whose
    surnames shared a prefix: two tests' people could be similar enough to be linked.)"""
    rng = random.Random(uuid.uuid4().int)
    surname = "".join(rng.choice(string.ascii_lowercase) for _ in range(9)).capitalize()
    return {
        "given_name": "Daniel",
        "surname": f"{surname}{tag}",
        # Day 12-19: its two digits differ, so transposing them is a typo.
        "birth_date": f"{rng.randrange(1930, 2000)}-0{rng.randrange(1, 10)}-1{rng.randrange(2, 10)}",
        "gender": pb.GENDER_MALE,
        "addresses": [
            pb.Address(
                lines=[f"{rng.randrange(1, 1000)} Mill Lane"],
                town="Derby",
                postcode=f"de{rng.randrange(1, 100)} {rng.randrange(1, 10)}ab",
            )
        ],
    }


def decode(messages: list, cls: type) -> list:
    out = []
    for m in messages:
        if m.headers.get("ce-type") == cls.DESCRIPTOR.full_name:
            item = cls()
            item.ParseFromString(m.data)
            out.append(item)
    return out


async def test_resolve_link_explain_and_events(entity_service, nats_server) -> None:
    stub, token = entity_service.stub, entity_service.token(RES_EMSOU)
    fields = unique_person()
    first = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(f"A-{uuid.uuid4().hex}", **fields)),
        metadata=md(token),
    )
    assert first.outcome == pb.RESOLVE_OUTCOME_NEW_ENTITY
    assert first.record.name.startswith("regions/EMSOU/records/")
    sent = fields["addresses"][0].postcode  # type: ignore[index]
    assert first.record.person.addresses[0].postcode == sent.upper()  # "de4 6ab" -> "DE4 6AB"
    entity = first.entity.name

    # The same person from another system, with the day and month digits transposed.
    dob = str(fields["birth_date"])
    typo = dict(fields, birth_date=dob[:8] + dob[9] + dob[8], given_name="Danial")
    second = await stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU", record=person(f"B-{uuid.uuid4().hex}", "pnc", **typo)
        ),
        metadata=md(token),
    )
    assert second.outcome == pb.RESOLVE_OUTCOME_LINKED_PROBABILISTIC, second.explanation.text
    assert second.entity.name == entity
    explanation = second.explanation
    assert explanation.decision == pb.MATCH_DECISION_AUTO_LINK
    assert explanation.probability >= 0.99
    by_name = {c.comparison: c for c in explanation.contributions}
    assert by_name["surname"].level == "exact" and by_name["surname"].match_weight > 0
    assert by_name["birth_date"].level == "one digit wrong or two transposed"
    total = explanation.prior_match_weight + sum(c.match_weight for c in explanation.contributions)
    assert total == pytest.approx(explanation.match_weight)
    assert "linked automatically" in explanation.text

    # Re-sending the same record changes nothing.
    again = await stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU", record=person(first.record.ref.source_record_id, **fields)
        ),
        metadata=md(token),
    )
    assert again.outcome == pb.RESOLVE_OUTCOME_UNCHANGED and again.entity.name == entity

    got = (await stub.GetEntity(pb.GetEntityRequest(name=entity), metadata=md(token))).entity
    assert [r.name for r in got.records] == [first.record.name, second.record.name]
    assert got.records[1].ref.source_system == "pnc"
    assert got.records[1].grading.intelligence_assessment == pb.INTELLIGENCE_ASSESSMENT_B

    explained = await stub.ExplainMatch(
        pb.ExplainMatchRequest(record_a=first.record.name, record_b=second.record.name), metadata=md(token)
    )
    assert explained.explanation.probability == pytest.approx(explanation.probability)

    def mine(events: list) -> list:
        return [e for e in decode(events, ev.RecordLinked) if e.entity == entity]

    events = await stream_messages(
        nats_server.url,
        "toex.emsou.entity.>",
        until=lambda found: (
            len(mine(found)) >= 2 and any(e.entity == entity for e in decode(found, ev.EntityCreated))
        ),
    )
    linked = mine(events)
    assert {e.record for e in linked} == {first.record.name, second.record.name}
    assert all(e.label.region == region_pb2.REGION_EMSOU for e in linked)
    assert any(e.entity_id == entity.split("/")[1] and e.source.source_system == "pnc" for e in linked)
    created = [e for e in decode(events, ev.EntityCreated) if e.entity == entity]
    assert len(created) == 1


async def test_deterministic_phone_and_vehicle_and_search(entity_service, nats_server) -> None:
    stub, token = entity_service.stub, entity_service.token(SUP_EMSOU)
    number = f"07700 9{uuid.uuid4().int % 100000:05d}"
    phone = pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="comms", source_record_id=uuid.uuid4().hex),
        grading=GRADING,
        phone=pb.Phone(number=number),
    )
    first = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=phone), metadata=md(token)
    )
    assert first.record.phone.e164.startswith("+447700")
    phone2 = pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="pnd", source_record_id=uuid.uuid4().hex),
        grading=GRADING,
        phone=pb.Phone(number="+44" + number.replace(" ", "")[1:]),
    )
    second = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=phone2), metadata=md(token)
    )
    assert second.outcome == pb.RESOLVE_OUTCOME_LINKED_DETERMINISTIC
    assert second.entity.name == first.entity.name
    assert list(second.explanation.shared_identifiers) == [f"tel:{first.record.phone.e164}"]

    # A person who uses the number is found by the number in any format, as is the phone.
    fields = unique_person()
    who = person(uuid.uuid4().hex, **fields)
    who.person.phone_numbers.append(number.replace(" ", "-"))
    owner = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=who), metadata=md(token)
    )
    found = await stub.SearchEntities(
        pb.SearchEntitiesRequest(phone_number=first.record.phone.e164), metadata=md(token)
    )
    names = {m.entity.name for m in found.matches}
    assert {first.entity.name, owner.entity.name} <= names
    by_name = await stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Daniel {fields['surname']}", birth_date=str(fields["birth_date"])),
        metadata=md(token),
    )
    assert by_name.matches[0].entity.name == owner.entity.name

    def attributed_to_owner(events: list) -> list:
        return [e for e in decode(events, ev.RecordLinked) if e.entity == owner.entity.name]

    events = await stream_messages(
        nats_server.url,
        "toex.emsou.entity.RecordLinked",
        until=lambda found: bool(attributed_to_owner(found)),
    )
    attributed = attributed_to_owner(events)
    assert list(attributed[0].identifiers.e164_numbers) == [first.record.phone.e164]


async def test_scope_and_deconfliction_across_regions(entity_service, nats_server) -> None:
    stub = entity_service.stub
    fields = unique_person("x")
    emsou = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **fields)),
        metadata=md(entity_service.token(RES_EMSOU)),
    )
    # A researcher may not submit into another region.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.ResolveRecord(
            pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **fields)),
            metadata=md(entity_service.token(RES_ERSOU)),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ersou = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/ERSOU", record=person(uuid.uuid4().hex, **fields)),
        metadata=md(entity_service.token(RES_ERSOU)),
    )
    assert ersou.entity.name == emsou.entity.name
    assert [d.region for d in ersou.deconflictions] == [region_pb2.REGION_EMSOU]
    # The ERSOU researcher sees only the ERSOU record, and that EMSOU holds records.
    seen = ersou.entity
    assert [r.name for r in seen.records] == [ersou.record.name]
    assert [d.region for d in seen.other_regions] == [region_pb2.REGION_EMSOU]
    assert "EMSOU" in seen.other_regions[0].contact_role
    # ...and the explanation does not show EMSOU's values.
    assert all(not c.value_b for c in ersou.explanation.contributions)
    # The EMSOU record itself is out of ERSOU's scope.
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.ExplainMatch(
            pb.ExplainMatchRequest(record_a=ersou.record.name, record_b=emsou.record.name),
            metadata=md(entity_service.token(RES_ERSOU)),
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    national = (
        await stub.GetEntity(
            pb.GetEntityRequest(name=emsou.entity.name), metadata=md(entity_service.token(NC))
        )
    ).entity
    assert len(national.records) == 2 and not national.other_regions

    # Both regions get a notice naming the other and a contact role, and nothing else.
    notices = []
    for region in ("emsou", "ersou"):

        def about_entity(events: list) -> list:
            return [n for n in decode(events, ev.DeconflictionNotice) if n.entity == emsou.entity.name]

        events = await stream_messages(
            nats_server.url,
            f"toex.{region}.entity.DeconflictionNotice",
            until=lambda found: bool(about_entity(found)),
        )
        notices += about_entity(events)
    by_region = {n.label.region: n for n in notices}
    assert by_region[region_pb2.REGION_EMSOU].other_region == region_pb2.REGION_ERSOU
    assert by_region[region_pb2.REGION_ERSOU].other_region == region_pb2.REGION_EMSOU
    assert list(by_region[region_pb2.REGION_EMSOU].own_records) == [emsou.record.name]
    assert list(by_region[region_pb2.REGION_ERSOU].own_records) == [ersou.record.name]
    assert all(n.label.handling == security_pb2.HANDLING_CODE_C for n in notices)
