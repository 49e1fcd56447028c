"""Undoing a split with SplitEntity's `undo_change`, over gRPC on real PostgreSQL, NATS and
Keycloak: a re-resolution model's split (set up as in test_reresolution.py) and a person's.

The records split off come back into the entity they left with the relations they took, the
entity split off redirects to it, and an EntitiesMerged names the split undone. Refused while a
reviewer keeps the records apart, or once others have joined the entity split off."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import delete, insert, select
from toex.entity.events.v1 import events_pb2
from toex.entity.v1 import entity_pb2 as pb
from toex_common.db import create_engine
from toex_common.testing.streams import stream_messages
from toex_entity.adapters.tables import entity_changes, pair_decisions
from toex_entity.domain.matching import LevelWeights, MatchModel
from toex_entity.domain.relations import Relation, RelationKind
from toex_entity.service_layer import handlers
from toex_kernel.ids import new_id

from .conftest import Running
from .test_entity_service import decode, md, unique_person
from .test_entity_service import person as person_record
from .test_model_learning import (
    quiet_service,  # noqa: F401  (the fixture)
    run_cli,
)
from .test_reresolution import GRADING, _levels, person, resolve, rows

pytestmark = pytest.mark.integration

ANALYST = "analyst.emsou"


async def _relations(running: Running, entity_id: str) -> set[tuple[Any, ...]]:
    async with running.app.deps.uow() as uow:
        found = await uow.relations.relations_of([entity_id])
    return {(r["id"], r["kind"], r["subject"], r["target"], r["source_record_id"]) for r in found}


async def _sql(running: Running, statement: Any) -> list[Any]:
    engine = create_engine(running.database, pool_size=1)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(statement)
            return result.all() if result.returns_rows else []
    finally:
        await engine.dispose()


async def _undo(running: Running, entity_id: str, change_id: str) -> pb.SplitEntityResponse:
    return await running.stub.SplitEntity(
        pb.SplitEntityRequest(
            name=f"entities/{entity_id}", undo_change=change_id, reason="the same person after all"
        ),
        metadata=md(running.token(ANALYST)),
    )


async def _refused(running: Running, entity_id: str, change_id: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _undo(running, entity_id, change_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return refused.value.details() or ""


async def test_a_models_split_undone_restores_records_and_relations(
    quiet_service: Running,  # noqa: F811
    nats_server,
) -> None:
    running = quiet_service
    learner = running.app.learner
    assert learner is not None
    deps = running.app.deps
    tag = new_id()[-8:]
    # M1 gives a typo'd official identifier some weight; M2 counts it strongly against.
    m1 = _levels(
        handlers.default_model(),
        "official_id",
        f"m1-{tag}",
        l1=LevelWeights(0.9, 1e-5),
        l2=LevelWeights(0.08, 1e-4),
        l3=LevelWeights(0.02, 0.99),
    )
    m2 = _levels(m1, "official_id", f"m2-{tag}", l2=LevelWeights(1e-12, 0.9))
    await handlers.save_model(m1, deps)
    p = f"{tag}-"
    a1 = await resolve(
        running,
        p + "a1",
        person(
            "Kayleigh",
            "Morris",
            "2007-11-02",
            ("3 Station Road", "Chesterfield", "S40 1AA"),
            pnc="11/111111A",
        ),
    )
    a2 = await resolve(running, p + "a2", person("Kayleigh", "Morris", "2007-11-02", pnc="11/111111B"))
    d1 = await resolve(
        running,
        p + "d1",
        person("Tom", "Fletcher", "1980-01-01", ("9 High Street", "Leicester", "LE1 1AA"), pnc="22/222222A"),
    )
    d2 = await resolve(running, p + "d2", person("Tom", "Fletcher", "1980-01-01", pnc="22/222222B"))
    assert a1 == a2 and d1 == d2, "under M1 each pair is one person"
    # Each record's source says the person holds an account: a2's goes with a2 when split.
    async with deps.uow() as uow:
        accounts = [
            Relation(
                "EMSOU", RelationKind.HOLDS_ACCOUNT, a1, f"bank:GB:400000:{tag}1", "niche", p + "a1", GRADING
            ),
            Relation(
                "EMSOU", RelationKind.HOLDS_ACCOUNT, a1, f"bank:GB:400000:{tag}2", "niche", p + "a2", GRADING
            ),
        ]
        assert await uow.relations.add_relations(accounts, "svc", deps.clock()) == 2
        await uow.commit()
    records_before = await rows(running, p)
    relations_before = await _relations(running, a1)

    learner.estimate = lambda cap: _returning(m2)
    assert await learner.reestimate() == m2
    while not await learner.reresolve_step():
        pass
    # The split count is told over gRPC as it is stored.
    status = await running.stub.GetLearningStatus(
        pb.GetLearningStatusRequest(), metadata=md(running.token(ANALYST), None)
    )
    assert status.reresolve_done and status.reresolve_split == 2 and status.reresolve_model == m2.version
    code, out, err = await run_cli(running, "entity", "learning")
    assert code == 0, err
    assert f"settled: model {m2.version}, re-resolution made 0 merges and 2 splits" in out

    split = await rows(running, p)
    split_a, split_d = split[p + "a2"][1], split[p + "d2"][1]
    assert split_a != a1 and split_d != d1, "M2 splits a2 and d2 off"
    assert {r[4] for r in await _relations(running, split_a)} == {p + "a2"}
    changes = {
        c.entity_id: c.id
        for c in await _sql(
            running,
            select(entity_changes.c.entity_id, entity_changes.c.id).where(
                entity_changes.c.kind == "SPLIT", entity_changes.c.decided_by == f"model:{m2.version}"
            ),
        )
    }
    assert set(changes) == {a1, d1}

    undone = await _undo(running, a1, changes[a1])

    assert undone.entity.name == f"entities/{a1}" and not undone.split_entities
    assert await rows(running, p) == {**split, p + "a2": records_before[p + "a2"]}
    assert await _relations(running, a1) == relations_before, "the relations a2 took came back"
    assert await _relations(running, split_a) == set()
    assert f"entities/{split_a}" in undone.entity.merged_ids
    redirected = (
        await running.stub.GetEntity(
            pb.GetEntityRequest(name=f"entities/{split_a}"), metadata=md(running.token(ANALYST))
        )
    ).entity
    assert redirected.name == f"entities/{a1}" and redirected.requested_name == f"entities/{split_a}"
    history = {c.change_id: c for c in undone.entity.history}
    assert history[changes[a1]].undone
    assert history[undone.change_id].kind == pb.CHANGE_KIND_SPLIT_UNDONE
    assert await _refused(running, a1, changes[a1]) == f"split {changes[a1]} was already undone"
    # A person put a2 back: a later model does not split it off again.
    async with deps.uow() as uow:
        assert await uow.repo.confirmed_records([(split[p + "a2"][0], a1)]) == {split[p + "a2"][0]}

    def ours(found: list[Any]) -> list[events_pb2.EntitiesMerged]:
        return [m for m in decode(found, events_pb2.EntitiesMerged) if m.change_id == undone.change_id]

    [event] = ours(
        await stream_messages(
            nats_server.url, "toex.emsou.entity.EntitiesMerged", until=lambda f: bool(ours(f))
        )
    )
    assert event.entity == f"entities/{a1}" and list(event.merged) == [f"entities/{split_a}"]
    assert event.undone_change == changes[a1] and event.decided_by == ANALYST

    # A reviewer keeping d1 and d2 apart since the split: the model's split is not undone.
    d1_id, d2_id = sorted((split[p + "d1"][0], split[p + "d2"][0]))
    await _sql(
        running,
        insert(pair_decisions).values(
            record_a=d1_id,
            record_b=d2_id,
            verdict="DIFFERENT",
            decided_by="supervisor.emsou",
            reason="custody photos differ",
            at=deps.clock(),
        ),
    )
    assert "supervisor.emsou kept records" in await _refused(running, d1, changes[d1])
    await _sql(running, delete(pair_decisions).where(pair_decisions.c.record_a == d1_id))
    # Another entity merged into the one split off since: undoing would take its records too.
    other = await resolve(running, p + "z", person("Zed", "Quinn", "1960-01-01", pnc="33/333333A"))
    await running.stub.MergeEntities(
        pb.MergeEntitiesRequest(name=f"entities/{split_d}", others=[f"entities/{other}"], reason="same"),
        metadata=md(running.token(ANALYST)),
    )
    assert "linked to" in await _refused(running, d1, changes[d1])
    assert (await rows(running, p))[p + "d2"][1] == split_d


async def test_a_persons_split_undone_restores_the_record_and_lifts_its_kept_apart(entity_service) -> None:  # type: ignore[no-untyped-def]
    running = entity_service
    stub, token = running.stub, running.token(ANALYST)
    fields = unique_person("u")
    first = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person_record(uuid.uuid4().hex, **fields)),
        metadata=md(token),
    )
    second = await stub.ResolveRecord(
        pb.ResolveRecordRequest(
            parent="regions/EMSOU", record=person_record(uuid.uuid4().hex, "pnd", **fields)
        ),
        metadata=md(token),
    )
    entity = first.entity.name
    assert second.entity.name == entity
    split = await stub.SplitEntity(
        pb.SplitEntityRequest(name=entity, records=[second.record.name], reason="different custody photo"),
        metadata=md(token),
    )
    [split_off] = split.split_entities
    assert len(await _sql(running, select(pair_decisions))) == 1, "the split keeps the two apart"
    with pytest.raises(grpc.aio.AioRpcError) as merge_refused:
        await stub.MergeEntities(
            pb.MergeEntitiesRequest(name=entity, others=[split_off.name], reason="same"), metadata=md(token)
        )
    assert merge_refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    code, out, _ = await run_cli(running, "entity", "split", "--help")
    assert code == 0 and "or undo a merge or a split exactly" in " ".join(out.split())
    code, out, err = await run_cli(
        running, "entity", "split", entity, "--undo", split.change_id, "--reason", "the same person after all"
    )
    assert code == 0, err
    assert first.record.name in out and second.record.name in out

    undone = (await stub.GetEntity(pb.GetEntityRequest(name=split_off.name), metadata=md(token))).entity
    assert undone.name == entity and undone.requested_name == split_off.name, "it redirects"
    assert {r.name for r in undone.records} == {first.record.name, second.record.name}
    assert any(c.kind == pb.CHANGE_KIND_SPLIT_UNDONE for c in undone.history)
    assert await _sql(running, select(pair_decisions)) == [], "its own kept-apart went with it"


async def _returning(model: MatchModel) -> tuple[MatchModel, int]:
    return model, 100
