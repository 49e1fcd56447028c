"""Re-resolution under a changed model, on real PostgreSQL and NATS (service_layer/reresolution.py).

The model the records were resolved under (M1) gives a typo'd official identifier some weight
and a shared phone none; the new one (M2) counts the typo'd identifier strongly against and a
shared phone strongly for. Re-resolution reads only the records with an identifier or a phone,
splits off a record M2 no longer matches (EntitySplit naming M2), leaves one a person merged,
merges two records M2 links, resumes from its stored cursor, and publishes what it did."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2
from toex_common.db import create_engine
from toex_common.testing.streams import stream_messages
from toex_entity.adapters.tables import entity_changes, source_records
from toex_entity.domain import commands
from toex_entity.domain.matching import LevelWeights, MatchModel
from toex_entity.domain.records import Address, Grading, Handling, PersonData, RecordType
from toex_entity.domain.relations import Relation, RelationKind
from toex_entity.service_layer import handlers, learning, resolver
from toex_kernel.ids import new_id
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from .conftest import Running
from .test_entity_service import decode
from .test_model_learning import quiet_service  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

SERVICE = Principal("svc", "svc", Region.NATIONAL, frozenset({Role.SERVICE}))
GRADING = Grading(2, "B", Handling.P)


def _levels(model: MatchModel, name: str, version: str, **weights: LevelWeights) -> MatchModel:
    levels = list(model.levels[name])
    for index, w in weights.items():
        levels[int(index.removeprefix("l"))] = w
    return replace(model, version=version, levels={**model.levels, name: tuple(levels)})


def person(
    given: str,
    surname: str,
    dob: str,
    address: tuple[str, str, str] | None = None,
    pnc: str = "",
    phone: str = "",
) -> PersonData:
    return PersonData(
        given_name=given,
        surname=surname,
        birth_date=dob,
        addresses=(Address((address[0],), address[1], address[2]),) if address else (),
        identifiers=(("PNC", pnc),) if pnc else (),
        phone_numbers=(phone,) if phone else (),
    )


async def resolve(running: Running, source_id: str, data: PersonData) -> str:
    item = commands.IncomingRecord(Region.EMSOU, "niche", source_id, RecordType.PERSON, GRADING, data)
    results = await handlers.resolve_records(
        commands.ResolveRecords(SERVICE, [item], single=False), running.app.deps
    )
    return results[0].entity_id


async def rows(running: Running, prefix: str) -> dict[str, tuple[str, str]]:
    engine = create_engine(running.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    select(
                        source_records.c.source_record_id, source_records.c.id, source_records.c.entity_id
                    ).where(source_records.c.source_record_id.like(f"{prefix}%"))
                )
            ).all()
    finally:
        await engine.dispose()
    return {r.source_record_id: (r.id, r.entity_id) for r in found}


async def test_reresolution_reads_what_changed_splits_and_merges(quiet_service: Running, nats_server) -> None:  # noqa: F811
    running = quiet_service
    learner = running.app.learner
    assert learner is not None
    deps = running.app.deps
    tag = new_id()[-8:]
    base = handlers.default_model()
    m1 = _levels(
        base,
        "official_id",
        f"m1-{tag}",
        l1=LevelWeights(0.9, 1e-5),
        l2=LevelWeights(0.08, 1e-4),
        l3=LevelWeights(0.02, 0.99),
    )
    m2 = _levels(
        _levels(m1, "official_id", f"m2-{tag}", l2=LevelWeights(1e-12, 0.9)),
        "phone",
        f"m2-{tag}",
        l1=LevelWeights(0.9, 1e-9),
    )
    await handlers.save_model(m1, deps)

    home = ("3 Station Road", "Chesterfield", "S40 1AA")
    p = f"{tag}-"
    a1 = await resolve(running, p + "a1", person("Kayleigh", "Morris", "2007-11-02", home, pnc="11/111111A"))
    a2 = await resolve(running, p + "a2", person("Kayleigh", "Morris", "2007-11-02", pnc="11/111111B"))
    b1 = await resolve(
        running,
        p + "b1",
        person("Tom", "Fletcher", "1980-01-01", ("9 High Street", "Leicester", "LE1 1AA"), pnc="22/222222A"),
    )
    b2 = await resolve(running, p + "b2", person("Tom", "Fletcher", "1980-01-01", pnc="22/222222B"))
    b3 = await resolve(running, p + "b3", person("Thomas", "Fletcher", "1980-01-10"))
    c1 = await resolve(
        running,
        p + "c1",
        person(
            "Aaron", "Brown", "1990-05-05", ("5 Park Street", "Nottingham", "NG1 1AA"), phone="07700 900123"
        ),
    )
    c2 = await resolve(
        running,
        p + "c2",
        person("Darren", "Brown", "1990-05-05", ("9 Hill Road", "Derby", "NG7 2BB"), phone="07700 900123"),
    )
    for n in range(5):
        await resolve(running, p + f"e{n}", person(f"Name{n}", "Other", f"1970-01-0{n + 1}"))
    assert a1 == a2 and b1 == b2 and b3 != b1 and c1 != c2, "under M1: A and B linked, C apart"
    # A person merges b3's entity into B's: B's records are then a person's decision.
    async with deps.uow() as uow:
        await resolver.merge_entities(
            uow, min(b1, b3), [max(b1, b3)], "analyst.emsou", "same custody photo", deps.clock()
        )
        await uow.commit()

    # a2's source record says the person holds an account: the relation follows a2 when split.
    async with deps.uow() as uow:
        account = Relation(
            "EMSOU", RelationKind.HOLDS_ACCOUNT, a1, f"bank:GB:400000:{tag}", "niche", p + "a2", GRADING
        )
        assert await uow.relations.add_relations([account], "svc", deps.clock()) == 1
        await uow.commit()

    # M2 becomes active as re-estimation activates a model that passed its checks.
    learner.estimate = lambda cap: _returning(m2)
    assert await learner.reestimate() == m2
    # One batch of three, then a new worker (as after a restart) carries on from the cursor.
    learner.settings = learning.LearningSettings(reresolve_batch=3)
    assert not await learner.reresolve_step()
    assert (await learner.status()).reresolve_scanned == 3
    again = learning.Learner(deps, learner.estimate, learner.settings)
    while not await again.reresolve_step():
        pass
    status = await again.status()
    # Only the records with an identifier or a phone were read (b3 and the e* records have none).
    assert status.reresolve_done and status.reresolve_scanned == 6
    assert status.reresolve_split == 1 and status.reresolve_merged == 1

    after = await rows(running, p)
    assert after[p + "a2"][1] != after[p + "a1"][1], "M2 no longer matches a2 with a1: split off"
    assert after[p + "b2"][1] == after[p + "b1"][1] == after[p + "b3"][1], "a person's merge stays"
    assert after[p + "c1"][1] == after[p + "c2"][1], "M2 links c1 and c2: merged"

    engine = create_engine(running.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            changes = (
                await conn.execute(
                    select(entity_changes).where(entity_changes.c.decided_by == f"model:{m2.version}")
                )
            ).all()
    finally:
        await engine.dispose()
    kinds = sorted(c.kind for c in changes)
    assert kinds == ["MERGED", "SPLIT"]
    split = next(c for c in changes if c.kind == "SPLIT")
    assert split.entity_id == a1 and split.moves == [[after[p + "a2"][0], a1, after[p + "a2"][1]]]
    assert m2.version in split.reason

    def ours(found: list) -> list:
        return [m for m in decode(found, events_pb2.EntitySplit) if m.change_id == split.id]

    published = ours(
        await stream_messages(nats_server.url, "toex.emsou.entity.EntitySplit", until=lambda f: bool(ours(f)))
    )
    assert len(published) == 1
    event = published[0]
    assert event.decided_by == f"model:{m2.version}" and m2.version in event.reason
    assert list(event.moved_records) == [f"regions/EMSOU/records/{after[p + 'a2'][0]}"]

    async with deps.uow() as uow:
        held = await uow.relations.relations_of([after[p + "a2"][1]])
    assert [(r["kind"], r["target"]) for r in held] == [("HOLDS_ACCOUNT", f"bank:GB:400000:{tag}")]

    # Reversible: merging the split-off entity back is allowed (no "kept apart" was recorded).
    async with deps.uow() as uow:
        assert not await uow.repo.different_between([a1], [after[p + "a2"][1]])


async def _returning(model: MatchModel) -> tuple[MatchModel, int]:
    return model, 100
