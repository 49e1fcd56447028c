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
from sqlalchemy import select
from toex.entity.v1 import entity_pb2 as pb
from toex_cli.main import main
from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.relations import SqlRelationRepository
from toex_entity.adapters.tables import source_records
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands
from toex_entity.domain.records import Grading, Handling, PersonData, RecordType
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
        await handlers.merge(commands.MergeEntities(ANALYST, students[0], [students[1]], "same person"), deps)
        async with sessions() as session:
            held = await SqlRelationRepository(session).relations_of([students[0]])
        assert {r["target"] for r in held if r["kind"] == "HOLDS_ACCOUNT" and r["region"] == "EMSOU"} == {
            "acct0",
            "acct1",
        }
        assert all(r["subject"] != students[1] and r["target"] != students[1] for r in held)
        census = [r for r in held if r["source_record_id"] == "census"]
        assert len(census) == 1  # the two rows of one source record became one, not a conflict
    finally:
        await engine.dispose()


def _md(token: str, purpose: str | None = "Op KINGFISHER") -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


async def test_analyse_mules_rpc_is_the_regions_own_both_ways(entity_service: Any) -> None:
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


async def test_record_relation_rpc_both_ways(entity_service: Any) -> None:
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
