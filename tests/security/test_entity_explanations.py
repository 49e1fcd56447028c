"""Finding 1 (critical) and 11: no value, record name or entity id of a record the caller may
not see reaches them through a match explanation, an entity's history or an event.

The attack: an EMSOU researcher resolves a record with the surname of an ERSOU person. The
resolver compares it with the ERSOU record; what it says about that comparison must not carry
the ERSOU person's date of birth, address or record name to EMSOU.
"""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf import text_format
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import security_pb2
from toex_common.testing.streams import stream_messages

RES_EMSOU = "researcher.emsou"
RES_ERSOU = "researcher.ersou"
NC = "national_coordinator.national"

GRADING = pb.Grading(
    source_evaluation=pb.SOURCE_EVALUATION_2,
    intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def person(street: str, town: str, postcode: str, **fields: object) -> pb.SourceRecord:
    record = pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="niche", source_record_id=uuid.uuid4().hex),
        grading=GRADING,
        person=pb.Person(gender=pb.GENDER_FEMALE, **fields),  # type: ignore[arg-type]
    )
    record.person.addresses.append(pb.Address(lines=[street], town=town, postcode=postcode))
    return record


def secrets_of(ersou: pb.ResolveRecordResponse, birth_date: str, street: str, postcode: str) -> list[str]:
    """What EMSOU must never see of the ERSOU record."""
    return [
        birth_date,
        birth_date.replace("-", ""),
        street.lower(),
        postcode.replace(" ", "").upper(),
        postcode.upper(),
        ersou.record.name,
        ersou.record.name.rsplit("/", 1)[-1],
    ]


def leaks(message: object, secrets: list[str]) -> list[str]:
    text = text_format.MessageToString(message, as_utf8=True).lower()  # type: ignore[arg-type]
    raw = message.SerializeToString()  # type: ignore[attr-defined]
    return [s for s in secrets if s.lower() in text or s.encode() in raw]


async def test_another_regions_values_never_reach_the_caller(entity, nats_server) -> None:
    # Events are read back from here on: this test's own, not every earlier test's first.
    began = datetime.now(UTC) - timedelta(seconds=1)
    rng = random.Random(uuid.uuid4().int)
    surname = "".join(rng.choice(string.ascii_lowercase) for _ in range(10)).capitalize()
    year = rng.randrange(1960, 1999)
    ersou_dob = f"{year}-0{rng.randrange(1, 10)}-1{rng.randrange(2, 10)}"
    # EMSOU's record: the same name, its date of birth with two digits transposed (close enough
    # to compare closely), another address.
    emsou_dob = ersou_dob[:8] + ersou_dob[9] + ersou_dob[8]
    ersou_street, ersou_postcode = (
        f"{rng.randrange(100, 999)} Quayside Walk",
        f"cb{rng.randrange(10, 99)} 7xq",
    )
    ersou = await entity.stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/ERSOU",
            record=person(
                ersou_street,
                "Cambridge",
                ersou_postcode,
                given_name="Kezia",
                surname=surname,
                birth_date=ersou_dob,
            ),
        ),
        metadata=entity.md(RES_ERSOU),
    )
    secrets = secrets_of(ersou, ersou_dob, ersou_street, ersou_postcode)

    emsou_resolved = await entity.stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU",
            record=person(
                f"{rng.randrange(1, 99)} Friar Gate",
                "Derby",
                f"de{rng.randrange(10, 99)} 1aa",
                given_name="Kezia",
                surname=surname,
                birth_date=emsou_dob,
            ),
        ),
        metadata=entity.md(RES_EMSOU),
    )
    # The resolver did compare the two (or the test proves nothing).
    assert emsou_resolved.explanation.contributions, emsou_resolved
    assert leaks(emsou_resolved, secrets) == []

    emsou_entity = emsou_resolved.entity.name
    got = await entity.stub.GetEntity(pb.GetEntityRequest(name=emsou_entity), metadata=entity.md(RES_EMSOU))
    assert got.entity.history, got
    assert leaks(got, secrets) == []

    found = await entity.stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Kezia {surname}"), metadata=entity.md(RES_EMSOU)
    )
    assert found.matches
    assert leaks(found, secrets) == []

    # The national team sees both records, so it may see both sides of the comparison.
    explained = await entity.stub.ExplainMatch(
        pb.ExplainMatchRequest(record_a=emsou_resolved.record.name, record_b=ersou.record.name),
        metadata=entity.md(NC),
    )
    assert ersou_dob in {c.value_b for c in explained.explanation.contributions} | {
        c.value_a for c in explained.explanation.contributions
    }

    # Nothing published on EMSOU's subjects carries the ERSOU values either.
    def mine(messages: list) -> bool:
        return any(emsou_resolved.record.name.encode() in m.data for m in messages)

    events = await stream_messages(nats_server.url, "toex.emsou.entity.>", until=mine, since=began)
    assert mine(events)
    for message in events:
        assert [s for s in secrets if s.encode() in message.data] == [], message.subject


async def test_writes_that_answer_with_personal_data_need_a_purpose(entity) -> None:
    """ResolveRecord answers with the record and its entity: a read as much as a write."""
    import grpc

    record = person("1 Any Street", "Derby", "de1 1aa", given_name="Nell", surname=uuid.uuid4().hex[:8])
    request = pb.ResolveRecordRequest(parent="regions/EMSOU", record=record)
    try:
        await entity.stub.ResolveRecord(request, metadata=entity.md(RES_EMSOU, purpose=None))
    except grpc.aio.AioRpcError as refused:
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "x-toex-purpose" in (refused.details() or "")
    else:
        raise AssertionError("ResolveRecord answered without a purpose")
    for call, req in (
        (
            entity.stub.MergeEntities,
            pb.MergeEntitiesRequest(name="entities/x", others=["entities/y"], reason="r"),
        ),
        (entity.stub.SplitEntity, pb.SplitEntityRequest(name="entities/x", undo_change="c", reason="r")),
    ):
        try:
            await call(req, metadata=entity.md(NC, purpose=None))
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused
        else:
            raise AssertionError("a merge or split answered without a purpose")
    # With a purpose the same write works.
    done = await entity.stub.ResolveRecord(request, metadata=entity.md(RES_EMSOU))
    assert done.record.name.startswith("regions/EMSOU/records/")


async def test_history_of_a_shared_entity_names_no_other_region(entity, nats_server) -> None:
    """Finding 11: a merge made by the national team across regions shows the region that sees
    part of the entity what happened and when, not who decided it, why or which entities."""
    tag = uuid.uuid4().hex[:8]
    emsou = await entity.stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU",
            record=person(
                "2 Low Road",
                "Derby",
                "de2 2bb",
                given_name="Orla",
                surname=f"Aa{tag}",
                birth_date="1980-02-13",
            ),
        ),
        metadata=entity.md(RES_EMSOU),
    )
    ersou = await entity.stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/ERSOU",
            record=person(
                "9 High Road",
                "Ely",
                "cb7 4zz",
                given_name="Mabel",
                surname=f"Zz{tag}",
                birth_date="1951-11-28",
            ),
        ),
        metadata=entity.md(RES_ERSOU),
    )
    secret_reason = f"ERSOU source Kestrel-{tag} says so"
    merged = await entity.stub.MergeEntities(
        pb.MergeEntitiesRequest(name=emsou.entity.name, others=[ersou.entity.name], reason=secret_reason),
        metadata=entity.md(NC),
    )
    assert any(c.reason == secret_reason for c in merged.entity.history)  # the national team sees it
    seen = await entity.stub.GetEntity(
        pb.GetEntityRequest(name=emsou.entity.name), metadata=entity.md(RES_EMSOU)
    )
    assert [r.name for r in seen.entity.records] == [emsou.record.name]
    assert seen.entity.other_regions  # deconfliction: another region holds records
    assert leaks(seen, [secret_reason, ersou.entity.name, ersou.record.name, "national_coordinator"]) == []

    # EMSOU's copy of the merge event says as little.
    def this_merge(messages: list) -> list:
        return [m for m in messages if merged.change_id.encode() in m.data]

    events = await stream_messages(
        nats_server.url, "toex.emsou.entity.EntitiesMerged", until=lambda found: bool(this_merge(found))
    )
    assert this_merge(events)
    for message in this_merge(events):
        for secret in (secret_reason, ersou.entity.name, "national_coordinator"):
            assert secret.encode() not in message.data


async def test_merge_and_split_reveal_no_redirect_out_of_scope(entity) -> None:
    """Finding 12: naming another region's merged entity in a merge or split told the caller
    where it had gone (its new id) before the scope check; it now answers as if missing."""
    import grpc

    tag = uuid.uuid4().hex[:8]
    made = []
    for given, birth in (("Pia", "1970-03-14"), ("Ros", "1990-07-19")):
        made.append(
            await entity.stub.ResolveRecord(
                pb.ResolveRecordRequest(
                    parent="regions/ERSOU",
                    record=person(
                        "3 Mere Way",
                        "Ely",
                        "cb6 1ab",
                        given_name=given,
                        surname=f"{given}{tag}",
                        birth_date=birth,
                    ),
                ),
                metadata=entity.md(RES_ERSOU),
            )
        )
    gone, kept = made[0].entity.name, made[1].entity.name
    await entity.stub.MergeEntities(
        pb.MergeEntitiesRequest(name=kept, others=[gone], reason="same person"),
        metadata=entity.md("supervisor.ersou"),
    )
    for call, request in (
        (
            entity.stub.MergeEntities,
            pb.MergeEntitiesRequest(name=gone, others=["entities/x"], reason="probe"),
        ),
        (entity.stub.SplitEntity, pb.SplitEntityRequest(name=gone, undo_change="c", reason="probe")),
    ):
        try:
            await call(request, metadata=entity.md("supervisor.emsou"))
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.NOT_FOUND, refused
            assert kept not in (refused.details() or "") and kept not in str(refused.trailing_metadata())
        else:
            raise AssertionError("a merge or split of another region's entity was accepted")
    # ERSOU's own supervisor is told where it went.
    try:
        await entity.stub.SplitEntity(
            pb.SplitEntityRequest(name=gone, undo_change="c", reason="probe"),
            metadata=entity.md("supervisor.ersou"),
        )
    except grpc.aio.AioRpcError as told:
        assert told.code() == grpc.StatusCode.FAILED_PRECONDITION and kept in (told.details() or "")
