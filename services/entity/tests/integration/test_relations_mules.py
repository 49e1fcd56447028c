"""Relations, person attributes and the mule analysis on real PostgreSQL: relations stored once
per source record, following a merge of their endpoints, grouped by the database for the
analysis, which finds the ring seeded here and only in its own region."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import region_pb2
from toex_cli.main import main
from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_common.testing.streams import stream_messages
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.relations import SqlRelationRepository
from toex_entity.adapters.tables import relations, source_records
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands
from toex_entity.domain.mules import Cluster, cluster_id
from toex_entity.domain.records import (
    Address,
    Grading,
    Handling,
    PersonData,
    PhoneData,
    RecordType,
    VehicleData,
)
from toex_entity.domain.relations import PersonAttributes, Relation, RelationKind, address_key
from toex_entity.service_layer import handlers
from toex_entity.service_layer.mules import analyse_region
from toex_kernel.clock import utcnow
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

ANALYST = Principal("a", "analyst.emsou", Region.EMSOU, frozenset({Role.ANALYST}))
GRADING = Grading(2, "B", Handling.P)
SURNAMES = ["Okafor", "Lindqvist", "Marchetti", "Tanaka", "Quigley", "Vasquez"]


def _decode(messages: list[Any], cls: type) -> list[Any]:
    out = []
    for m in messages:
        if m.headers.get("ce-type") == cls.DESCRIPTOR.full_name:
            item = cls()
            item.ParseFromString(m.data)
            out.append(item)
    return out


def _rel(region: str, kind: RelationKind, subject: str, target: str, source: str, **kw: object) -> Relation:
    return Relation(region, kind, subject, target, "bank-returns", source, GRADING, **kw)  # type: ignore[arg-type]


async def test_relations_follow_merges_and_the_analysis_finds_the_ring(database: str) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database, pool_size=2)
    sessions = session_factory(engine)
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type]
        incoming = [
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"n{i}",
                RecordType.PERSON,
                GRADING,
                PersonData(given_name="Sam", surname=s),
            )
            for i, s in enumerate(SURNAMES)
        ]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, incoming, single=False), deps)
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(source_records.c.source_record_id, source_records.c.id, source_records.c.entity_id)
                )
            ).all()
        record = {r[0]: r[1] for r in rows}
        entity = {r[0]: r[2] for r in rows}
        assert len(set(entity.values())) == len(SURNAMES)
        controller, students = entity["n0"], [entity[f"n{i}"] for i in range(1, 5)]
        flat = address_key("NG7 2RD", "Flat 3 21 Derby Road")
        relations = [
            *(
                _rel("EMSOU", RelationKind.ASSOCIATED_WITH, controller, s, f"a{i}")
                for i, s in enumerate(students)
            ),
            *(_rel("EMSOU", RelationKind.LIVES_AT, s, flat, f"l{i}") for i, s in enumerate(students)),
            *(
                _rel(
                    "EMSOU",
                    RelationKind.HOLDS_ACCOUNT,
                    s,
                    f"acct{i}",
                    f"h{i}",
                    valid_from=date(2025, 10, 1 + i),
                )
                for i, s in enumerate(students)
            ),
            # One source record saying both students live at the flat (one row each).
            _rel("EMSOU", RelationKind.LIVES_AT, students[0], flat, "census"),
            _rel("EMSOU", RelationKind.LIVES_AT, students[1], flat, "census"),
            # Another region's copy of the same pattern is not this region's to analyse.
            *(
                _rel("LONDON", RelationKind.HOLDS_ACCOUNT, s, f"lacct{i}", f"x{i}")
                for i, s in enumerate(students)
            ),
        ]
        for r in relations:
            r.validate()
        async with sessions() as session, session.begin():
            repo = SqlRelationRepository(session)
            assert await repo.add_relations(relations, "analyst.emsou", utcnow()) == len(relations)
            # The same source records again: nothing new.
            assert await repo.add_relations(relations[:3], "analyst.emsou", utcnow()) == 0
            for i in range(1, 5):
                await repo.set_attributes(
                    record[f"n{i}"], PersonAttributes(student=True, visa_type="Student")
                )
        async with sessions() as session:
            report = await analyse_region(SqlRelationRepository(session), "EMSOU")
        assert [c.holders for c in report.clusters] == [tuple(sorted(students))]
        cluster = report.clusters[0]
        assert cluster.controller == controller and cluster.alert
        assert cluster.accounts == ("acct0", "acct1", "acct2", "acct3")  # EMSOU's only
        assert any(f.kind == "CROWDED_ADDRESS" and f.subject == flat for f in report.findings)
        assert any("4 of the holders are recorded as students" in r for r in cluster.reasons)
        async with sessions() as session:
            london = await analyse_region(SqlRelationRepository(session), "LONDON")
        assert london.clusters == [] and london.findings == []

        # A merge of two students' entities (the service's merge): their relations now join
        # the survivor.
        def rows_of(found: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
            return {(r["id"], r["kind"], r["subject"], r["target"], r["source_record_id"]) for r in found}

        async with sessions() as session:
            before = rows_of(await SqlRelationRepository(session).relations_of(students[:2]))
        _, merge_change = await handlers.merge(
            commands.MergeEntities(ANALYST, students[0], [students[1]], "same person"), deps
        )
        async with sessions() as session:
            held = await SqlRelationRepository(session).relations_of([students[0]])
        assert {r["target"] for r in held if r["kind"] == "HOLDS_ACCOUNT" and r["region"] == "EMSOU"} == {
            "acct0",
            "acct1",
        }
        assert all(r["subject"] != students[1] and r["target"] != students[1] for r in held)
        census = [r for r in held if r["source_record_id"] == "census"]
        assert len(census) == 1  # the two rows of one source record became one, not a conflict

        # Undoing the merge puts each relation back on the entity it came from, the row the
        # merge dropped (the census's for students[1]) included.
        await handlers.split(
            commands.SplitEntity(ANALYST, students[0], [], merge_change, "not the same person"), deps
        )
        async with sessions() as session:
            after = rows_of(await SqlRelationRepository(session).relations_of(students[:2]))
        assert after == before
        assert {r[3] for r in after if r[1] == "HOLDS_ACCOUNT" and r[2] == students[1]} == {"acct1", "lacct1"}
    finally:
        await engine.dispose()


async def _entities_of_test(sessions: Any, sid: str) -> dict[str, Any]:
    """The entity of each of this test's records (`<prefix>-<sid>`), by the record's prefix."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(source_records.c.source_record_id, source_records.c.entity_id).where(
                    source_records.c.source_record_id.like(f"%-{sid}")
                )
            )
        ).all()
    return {r[0].split("-")[0]: r[1] for r in rows}


def _md(token: str, purpose: str | None = "Op KINGFISHER") -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


async def test_analyse_mules_rpc_is_the_regions_own_both_ways(entity_service: Any, nats_server: Any) -> None:
    """EMSOU's analyst gets EMSOU's ring with its reasons; ERSOU's analyst may not analyse
    EMSOU (the analysis reads every relation of the region); a researcher may not at all; a
    bad page size names its field."""
    engine = create_engine(entity_service.database, pool_size=1)
    sessions = session_factory(engine)
    boss, students = "b" * 32, [f"{i:032d}" for i in range(1, 5)]
    try:
        relations = [
            *(_rel("EMSOU", RelationKind.ASSOCIATED_WITH, boss, s, f"ra{i}") for i, s in enumerate(students)),
            # Each opens three accounts within ten days.
            *(
                _rel(
                    "EMSOU",
                    RelationKind.HOLDS_ACCOUNT,
                    s,
                    f"acc{i}-{n}",
                    f"rh{i}-{n}",
                    valid_from=date(2025, 1, 1 + 5 * n),
                )
                for i, s in enumerate(students)
                for n in range(3)
            ),
            *(
                _rel("EMSOU", RelationKind.LIVES_AT, s, address_key("LE1 7RH", "12"), f"rl{i}")
                for i, s in enumerate(students)
            ),
        ]
        async with sessions() as session, session.begin():
            await SqlRelationRepository(session).add_relations(relations, "test", utcnow())
    finally:
        await engine.dispose()
    stub, tokens = entity_service.stub, entity_service.tokens

    answer = await stub.AnalyseMules(
        pb.AnalyseMulesRequest(parent="regions/EMSOU"), metadata=_md(tokens["analyst.emsou"])
    )
    assert answer.clusters_total == 1 and answer.clusters[0].controller == boss
    assert answer.clusters[0].alert
    assert list(answer.clusters[0].holders) == students
    assert any(f.kind == "CROWDED_ADDRESS" for f in answer.findings)
    assert any("connected to 4 of the holders" in r for r in answer.clusters[0].reasons)

    # The same through `toex entity mules`, under a job as its purpose.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        [
            "--entity-addr",
            f"127.0.0.1:{entity_service.app.port}",
            "entity",
            "mules",
            "--region",
            "EMSOU",
            "--job",
            f"EMSOU/{uuid.uuid4().hex}",
        ],
        env={"TOEX_TOKEN": tokens["analyst.emsou"]},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert "ALERT cluster score" in result.stdout and f"controller {boss}" in result.stdout
    assert "CROWDED_ADDRESS" in result.stdout

    # Two analyses found the ring over the alert threshold: one MuleClusterDetected, its id from
    # the sorted members, labelled EMSOU.
    def detected(found: list[Any]) -> list[Any]:
        return [e for e in _decode(found, ev.MuleClusterDetected) if f"entities/{boss}" == e.controller]

    await stream_messages(nats_server.url, "toex.emsou.entity.>", until=lambda found: bool(detected(found)))
    await asyncio.sleep(1.0)  # the relay polls every 0.2 s: a second event would be out by now
    events = detected(await stream_messages(nats_server.url, "toex.emsou.entity.>"))
    assert len(events) == 1
    assert list(events[0].holders) == [f"entities/{s}" for s in students]
    assert events[0].cluster_id == cluster_id(
        Cluster(tuple(sorted([boss, *students])), (), (), "", 0, True, ())
    )
    assert events[0].label.region == region_pb2.REGION_EMSOU and events[0].score >= 15

    with pytest.raises(grpc.aio.AioRpcError) as other_region:
        await stub.AnalyseMules(
            pb.AnalyseMulesRequest(parent="regions/EMSOU"), metadata=_md(tokens["analyst.ersou"])
        )
    assert other_region.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert boss not in (other_region.value.details() or "")
    # ERSOU's analyst analyses ERSOU: nothing of EMSOU's.
    own = await stub.AnalyseMules(
        pb.AnalyseMulesRequest(parent="regions/ERSOU"), metadata=_md(tokens["analyst.ersou"])
    )
    assert own.findings_total == 0 and own.clusters_total == 0

    with pytest.raises(grpc.aio.AioRpcError) as researcher:
        await stub.AnalyseMules(
            pb.AnalyseMulesRequest(parent="regions/EMSOU"), metadata=_md(tokens["researcher.emsou"])
        )
    assert researcher.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.AnalyseMules(
            pb.AnalyseMulesRequest(parent="regions/EMSOU", page_size=-1),
            metadata=_md(tokens["analyst.emsou"]),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in (bad.value.details() or "")


async def test_record_relation_rpc_both_ways(entity_service: Any, nats_server: Any) -> None:
    """EMSOU's researcher records that an EMSOU person lives at an address and holds an account
    (an IBAN, its GB form one key); the same source record again creates nothing; ERSOU's
    analyst can neither record against EMSOU's person under ERSOU (NOT_FOUND, as missing) nor
    into EMSOU (PERMISSION_DENIED); bad input names its fields."""
    engine = create_engine(entity_service.database, pool_size=1)
    sessions = session_factory(engine)
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type]
        sid = uuid.uuid4().hex[:8]
        incoming = [
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"rr-{sid}",
                RecordType.PERSON,
                GRADING,
                PersonData(surname=f"Abara{sid}"),
            )
        ]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, incoming, single=False), deps)
        async with sessions() as session:
            person = (
                await session.execute(
                    select(source_records.c.entity_id).where(source_records.c.source_record_id == f"rr-{sid}")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    stub, tokens = entity_service.stub, entity_service.tokens
    grading = pb.Grading(source_evaluation=2, intelligence_assessment=2, handling=1)

    def relation(**kw: Any) -> pb.Relation:
        return pb.Relation(
            subject=f"entities/{person}",
            source_system="bank-returns",
            source_record_id="r1",
            grading=grading,
            **kw,
        )

    holds = relation(
        kind=pb.RELATION_KIND_HOLDS_ACCOUNT,
        account=pb.BankAccountDetails(iban="GB33 BUKB 2020 1555 5555 55"),
        valid_from="2025-09-01",
    )
    first = await stub.RecordRelation(
        pb.RecordRelationRequest(parent="regions/EMSOU", relation=holds),
        metadata=_md(tokens["researcher.emsou"]),
    )
    assert first.created and first.relation.target == "bank:GB:202015:55555555"
    again = await stub.RecordRelation(
        pb.RecordRelationRequest(parent="regions/EMSOU", relation=holds),
        metadata=_md(tokens["researcher.emsou"]),
    )
    assert not again.created
    lives = relation(
        kind=pb.RELATION_KIND_LIVES_AT, address=pb.AddressKey(postcode="ng72rd", premises="Flat 3 21")
    )
    at = await stub.RecordRelation(
        pb.RecordRelationRequest(parent="regions/EMSOU", relation=lives),
        metadata=_md(tokens["analyst.emsou"]),
    )
    assert at.created and at.relation.target == "addr:NG7 2RD|FLAT 3 21"

    # One RelationRecorded per relation stored (the repeat stored nothing, so published nothing).
    def recorded(found: list[Any]) -> list[Any]:
        return [e for e in _decode(found, ev.RelationRecorded) if e.subject == f"entities/{person}"]

    await stream_messages(
        nats_server.url, "toex.emsou.entity.>", until=lambda found: len(recorded(found)) >= 2
    )
    await asyncio.sleep(1.0)
    published = recorded(await stream_messages(nats_server.url, "toex.emsou.entity.>"))
    assert sorted(e.kind for e in published) == [pb.RELATION_KIND_HOLDS_ACCOUNT, pb.RELATION_KIND_LIVES_AT]
    held = next(e for e in published if e.kind == pb.RELATION_KIND_HOLDS_ACCOUNT)
    assert held.target == "bank:GB:202015:55555555" and held.valid_from == "2025-09-01"
    assert held.source.source_system == "bank-returns" and held.source.source_record_id == "r1"
    assert held.label.region == region_pb2.REGION_EMSOU and held.grading.source_evaluation == 2

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.RecordRelation(
            pb.RecordRelationRequest(parent="regions/ERSOU", relation=lives),
            metadata=_md(tokens["analyst.ersou"]),
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.RecordRelation(
            pb.RecordRelationRequest(parent="regions/EMSOU", relation=lives),
            metadata=_md(tokens["analyst.ersou"]),
        )
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED

    bad = relation(
        kind=pb.RELATION_KIND_HOLDS_ACCOUNT,
        account=pb.BankAccountDetails(iban="GB34 BUKB 2020 1555 5555 55"),
        valid_from="1 Sept",
    )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.RecordRelation(
            pb.RecordRelationRequest(parent="regions/EMSOU", relation=bad),
            metadata=_md(tokens["analyst.emsou"]),
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = invalid.value.details() or ""
    assert "relation.account.iban" in details and "relation.valid_from" in details
    with pytest.raises(grpc.aio.AioRpcError) as unspecified:
        await stub.RecordRelation(
            pb.RecordRelationRequest(parent="regions/EMSOU", relation=relation(target=f"entities/{person}")),
            metadata=_md(tokens["analyst.emsou"]),
        )
    assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "relation.kind" in (unspecified.value.details() or "")


async def test_get_entity_shows_relations_only_where_the_caller_sees_both_ends(entity_service: Any) -> None:
    """An EMSOU person uses an EMSOU phone and an ERSOU-only phone and holds an account.
    EMSOU's analyst sees the EMSOU phone and the account with their source record, grading, time
    span and provenance, and nothing of the ERSOU phone (not its id) though EMSOU recorded that
    relation; ERSOU's analyst, reading the ERSOU phone, sees neither relation of it (one said by
    EMSOU, one whose other end is the EMSOU person); the national coordinator sees all."""
    engine = create_engine(entity_service.database, pool_size=1)
    sessions = session_factory(engine)
    sid = uuid.uuid4().hex[:8]
    digits = f"{uuid.uuid4().int % 1000:03d}"
    analyst_ersou = Principal("b", "analyst.ersou", Region.ERSOU, frozenset({Role.ANALYST}))
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type]
        emsou = [
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"gp-{sid}",
                RecordType.PERSON,
                GRADING,
                PersonData(surname=f"Ibe{sid}"),
            ),
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"gx-{sid}",
                RecordType.PHONE,
                GRADING,
                PhoneData(f"+447700900{digits}"),
            ),
        ]
        ersou = [
            commands.IncomingRecord(
                Region.ERSOU,
                "athena",
                f"gy-{sid}",
                RecordType.PHONE,
                GRADING,
                PhoneData(f"+447700901{digits}"),
            )
        ]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, emsou, single=False), deps)
        await handlers.resolve_records(commands.ResolveRecords(analyst_ersou, ersou, single=False), deps)
        entity = await _entities_of_test(sessions, sid)
        person, phone_x, phone_y = entity["gp"], entity["gx"], entity["gy"]
        assert len({person, phone_x, phone_y}) == 3
        account = "bank:GB:202015:55555555"
        async with sessions() as session, session.begin():
            await SqlRelationRepository(session).add_relations(
                [
                    _rel(
                        "EMSOU",
                        RelationKind.USES_PHONE,
                        person,
                        phone_x,
                        f"gr1-{sid}",
                        valid_from=date(2025, 3, 1),
                    ),
                    _rel("EMSOU", RelationKind.HOLDS_ACCOUNT, person, account, f"gr2-{sid}"),
                    _rel("EMSOU", RelationKind.USES_PHONE, person, phone_y, f"gr3-{sid}"),
                    _rel("ERSOU", RelationKind.USES_PHONE, person, phone_y, f"gr4-{sid}"),
                ],
                "analyst.emsou",
                utcnow(),
            )
    finally:
        await engine.dispose()
    stub, tokens = entity_service.stub, entity_service.tokens

    seen = await stub.GetEntity(
        pb.GetEntityRequest(name=f"entities/{person}"), metadata=_md(tokens["analyst.emsou"])
    )
    shown = {r.source_record_id: r for r in seen.entity.relations}
    assert set(shown) == {f"gr1-{sid}", f"gr2-{sid}"}
    uses = shown[f"gr1-{sid}"]
    assert uses.kind == pb.RELATION_KIND_USES_PHONE
    assert uses.subject == f"entities/{person}" and uses.target == f"entities/{phone_x}"
    assert uses.source_system == "bank-returns" and uses.valid_from == "2025-03-01" and uses.valid_to == ""
    assert uses.grading.source_evaluation == 2 and uses.grading.intelligence_assessment == 2
    assert uses.region == "regions/EMSOU" and uses.recorded_by == "analyst.emsou"
    assert uses.record_time.seconds > 0
    assert shown[f"gr2-{sid}"].target == account
    assert phone_y not in str(seen)

    # The phone's own page shows the EMSOU-recorded relation from the other end.
    phone_page = await stub.GetEntity(
        pb.GetEntityRequest(name=f"entities/{phone_x}"), metadata=_md(tokens["analyst.emsou"])
    )
    assert [r.source_record_id for r in phone_page.entity.relations] == [f"gr1-{sid}"]

    # ERSOU sees its phone, but not the EMSOU person at the other end of either relation.
    other = await stub.GetEntity(
        pb.GetEntityRequest(name=f"entities/{phone_y}"), metadata=_md(tokens["analyst.ersou"])
    )
    assert list(other.entity.relations) == []
    assert person not in str(other)
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetEntity(
            pb.GetEntityRequest(name=f"entities/{person}"), metadata=_md(tokens["analyst.ersou"])
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

    # The national team sees across regions: all four.
    national = await stub.GetEntity(
        pb.GetEntityRequest(name=f"entities/{person}"), metadata=_md(tokens["national_coordinator.national"])
    )
    assert {r.source_record_id for r in national.entity.relations} == {f"gr{i}-{sid}" for i in range(1, 5)}


async def test_neighbourhood_follows_only_what_the_caller_may_see(entity_service: Any, tmp_path: Any) -> None:
    """Two EMSOU people share a phone and an account; one also uses an ERSOU-only phone. From
    the first, depth 1 reaches the phone and account, depth 2 the second person through both;
    EMSOU's analyst never reaches the ERSOU phone, the national coordinator does; ERSOU's analyst
    from its phone reaches nobody and may not start from the EMSOU person. The CLI writes the
    graph as GraphML and an i2 link table; bad depth names its field."""
    engine = create_engine(entity_service.database, pool_size=1)
    sessions = session_factory(engine)
    sid = uuid.uuid4().hex[:8]
    digits = f"{uuid.uuid4().int % 1000:03d}"
    analyst_ersou = Principal("b", "analyst.ersou", Region.ERSOU, frozenset({Role.ANALYST}))
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type]
        emsou = [
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"na-{sid}",
                RecordType.PERSON,
                GRADING,
                PersonData(surname=f"Adeyemi{sid}"),
            ),
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"nb-{sid}",
                RecordType.PERSON,
                GRADING,
                PersonData(surname=f"Brennan{sid}"),
            ),
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                f"nx-{sid}",
                RecordType.PHONE,
                GRADING,
                PhoneData(f"+447700902{digits}"),
            ),
        ]
        ersou = [
            commands.IncomingRecord(
                Region.ERSOU,
                "athena",
                f"ny-{sid}",
                RecordType.PHONE,
                GRADING,
                PhoneData(f"+447700903{digits}"),
            )
        ]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, emsou, single=False), deps)
        await handlers.resolve_records(commands.ResolveRecords(analyst_ersou, ersou, single=False), deps)
        entity = await _entities_of_test(sessions, sid)
        a, b, x, y = entity["na"], entity["nb"], entity["nx"], entity["ny"]
        account = f"bank:GB:202015:{uuid.uuid4().int % 10**8:08d}"
        async with sessions() as session, session.begin():
            await SqlRelationRepository(session).add_relations(
                [
                    _rel("EMSOU", RelationKind.USES_PHONE, a, x, f"nr1-{sid}", valid_from=date(2025, 2, 1)),
                    _rel("EMSOU", RelationKind.USES_PHONE, b, x, f"nr2-{sid}"),
                    _rel("EMSOU", RelationKind.HOLDS_ACCOUNT, a, account, f"nr3-{sid}"),
                    _rel("EMSOU", RelationKind.HOLDS_ACCOUNT, b, account, f"nr4-{sid}"),
                    _rel("EMSOU", RelationKind.USES_PHONE, a, y, f"nr5-{sid}"),
                ],
                "analyst.emsou",
                utcnow(),
            )
    finally:
        await engine.dispose()
    stub, tokens = entity_service.stub, entity_service.tokens

    def names(response: Any) -> set[str]:
        return {n.name for n in response.nodes}

    one = await stub.GetNeighbourhood(
        pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=1), metadata=_md(tokens["analyst.emsou"])
    )
    assert one.nodes[0].name == f"entities/{a}" and one.nodes[0].depth == 0
    assert names(one) == {f"entities/{a}", f"entities/{x}", account}
    assert {n.node_type for n in one.nodes} == {"PERSON", "PHONE", "BANK_ACCOUNT"}
    assert {e.relation.source_record_id for e in one.edges} == {f"nr1-{sid}", f"nr3-{sid}"}
    reasons = {e.relation.source_record_id: e.reason for e in one.edges}
    assert reasons[f"nr1-{sid}"] == f"USES_PHONE per bank-returns/nr1-{sid}, graded 2BP, from 2025-02-01"
    assert y not in str(one) and not one.truncated

    two = await stub.GetNeighbourhood(
        pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=2), metadata=_md(tokens["analyst.emsou"])
    )
    assert names(two) == {f"entities/{a}", f"entities/{x}", account, f"entities/{b}"}
    assert {n.depth for n in two.nodes if n.name == f"entities/{b}"} == {2}
    assert {e.relation.source_record_id for e in two.edges} == {f"nr{i}-{sid}" for i in range(1, 5)}
    assert y not in str(two)

    capped = await stub.GetNeighbourhood(
        pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=2, max_nodes=2),
        metadata=_md(tokens["analyst.emsou"]),
    )
    assert len(capped.nodes) == 2 and capped.truncated

    national = await stub.GetNeighbourhood(
        pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=1),
        metadata=_md(tokens["national_coordinator.national"]),
    )
    assert f"entities/{y}" in names(national)

    from_y = await stub.GetNeighbourhood(
        pb.GetNeighbourhoodRequest(name=f"entities/{y}", depth=3), metadata=_md(tokens["analyst.ersou"])
    )
    assert names(from_y) == {f"entities/{y}"} and list(from_y.edges) == []
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetNeighbourhood(
            pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=1), metadata=_md(tokens["analyst.ersou"])
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetNeighbourhood(
            pb.GetNeighbourhoodRequest(name=f"entities/{a}", depth=4), metadata=_md(tokens["analyst.emsou"])
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "depth" in (bad.value.details() or "")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(
            main,
            [
                "--entity-addr",
                f"127.0.0.1:{entity_service.app.port}",
                "--purpose",
                "Op KINGFISHER",
                "entity",
                "neighbourhood",
                a,
                "--depth",
                "2",
                *args,
            ],
            env={"TOEX_TOKEN": tokens["analyst.emsou"]},
            catch_exceptions=False,
        )

    graph_file = tmp_path / "n.graphml"
    result = await asyncio.to_thread(cli, "--format", "graphml", "-o", str(graph_file))
    assert result.exit_code == 0, result.stderr
    import networkx as nx

    graph = nx.read_graphml(graph_file)
    assert set(graph.nodes) == {a, b, x, account}
    assert graph.number_of_edges() == 4 and graph.nodes[b]["depth"] == 2
    assert {d["kind"] for _, _, d in graph.edges(data=True)} == {"USES_PHONE", "HOLDS_ACCOUNT"}

    i2_file = tmp_path / "n.csv"
    result = await asyncio.to_thread(cli, "--format", "i2", "-o", str(i2_file))
    assert result.exit_code == 0, result.stderr
    lines = i2_file.read_bytes().decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Entity1 Identity,Entity1 Type") and len(lines) == 5
    assert any(",Person," in line and ",Telephone," in line for line in lines[1:])

    result = await asyncio.to_thread(cli, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert y not in result.stdout and f"entities/{b}" in result.stdout
    result = await asyncio.to_thread(cli)
    assert "4 nodes, 4 relations" in result.stdout


@pytest.mark.parametrize(
    "same_batch", [False, True], ids=["objects-stored-before", "objects-in-the-same-batch"]
)
async def test_person_records_bring_their_relations(entity_service: Any, same_batch: bool) -> None:
    """An EMSOU person record carrying a phone number, a VRM and an address: it uses the phone
    entity, drives the vehicle entity and lives at the address, each with the person record as
    the source and its grading; the same record again adds nothing. The phone and vehicle
    records stored before, or in the person's own batch (found in the batch, not yet in the
    index keys)."""
    engine = create_engine(entity_service.database, pool_size=1)
    sessions = session_factory(engine)
    sid = uuid.uuid4().hex[:8]
    number = f"+447700904{uuid.uuid4().int % 1000:03d}"
    vrm = f"AB{uuid.uuid4().int % 90 + 10}XYZ"
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type]
        objects = [
            commands.IncomingRecord(
                Region.EMSOU, "comms", f"ip-{sid}", RecordType.PHONE, GRADING, PhoneData(number)
            ),
            commands.IncomingRecord(
                Region.EMSOU, "anpr", f"iv-{sid}", RecordType.VEHICLE, GRADING, VehicleData(vrm)
            ),
        ]
        if not same_batch:
            await handlers.resolve_records(commands.ResolveRecords(ANALYST, objects, single=False), deps)
        person = commands.IncomingRecord(
            Region.EMSOU,
            "niche",
            f"ic-{sid}",
            RecordType.PERSON,
            Grading(3, "C", Handling.C, "no onward sharing"),
            PersonData(
                given_name="Tomasz",
                surname=f"Kowal{sid}",
                phone_numbers=(number,),
                vrms=(vrm,),
                addresses=(Address(lines=("14 Derby Road",), postcode="ng72rd"),),
            ),
        )
        first = [*objects, person] if same_batch else [person]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, first, single=False), deps)
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, [person], single=False), deps)
        entity = await _entities_of_test(sessions, sid)
    finally:
        await engine.dispose()
    stub, tokens = entity_service.stub, entity_service.tokens
    got = await stub.GetEntity(
        pb.GetEntityRequest(name=f"entities/{entity['ic']}"),
        metadata=_md(tokens["national_coordinator.national"]),
    )
    shown = {(r.kind, r.target) for r in got.entity.relations}
    assert shown == {
        (pb.RELATION_KIND_USES_PHONE, f"entities/{entity['ip']}"),
        (pb.RELATION_KIND_DRIVES_VEHICLE, f"entities/{entity['iv']}"),
        (pb.RELATION_KIND_LIVES_AT, "addr:NG7 2RD|14"),
    }
    assert len(got.entity.relations) == 3
    for r in got.entity.relations:
        assert (r.source_system, r.source_record_id, r.region) == ("niche", f"ic-{sid}", "regions/EMSOU")
        assert r.grading.source_evaluation == 3 and r.grading.handling_conditions == "no onward sharing"
        assert r.subject == f"entities/{entity['ic']}" and r.recorded_by == "analyst.emsou"


async def test_fresh_relations_go_straight_in_and_one_said_before_falls_back_to_the_stage(
    database: str,
) -> None:
    """A bulk ingest's relations (`fresh`) are copied straight in; if one was said before under
    the same source record, the copy is undone and the staged way keeps only the new ones, with
    nothing else in the transaction lost."""
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database, pool_size=2)
    sessions = session_factory(engine)
    try:
        fresh = [_rel("EMSOU", RelationKind.LIVES_AT, f"p{i}", f"addr:{i}", f"s{i}") for i in range(60)]
        more = [_rel("EMSOU", RelationKind.LIVES_AT, f"q{i}", f"addr:q{i}", f"t{i}") for i in range(60)]
        async with sessions() as session, session.begin():
            repo = SqlRelationRepository(session)
            assert len(await repo.store_relations(fresh, "bulk", utcnow(), fresh=True)) == 60
        async with sessions() as session, session.begin():
            repo = SqlRelationRepository(session)
            said_before = await repo.store_relations([*more, fresh[7]], "bulk", utcnow(), fresh=True)
            assert said_before == more  # fresh[7] is not new: left out, the rest stored
            # The transaction goes on after the undone copy.
            assert len(await repo.store_relations(more[:55], "bulk", utcnow(), fresh=True)) == 0
        async with sessions() as session:
            stored = await session.execute(select(func.count()).select_from(relations))
            assert stored.scalar_one() == 120
    finally:
        await engine.dispose()
