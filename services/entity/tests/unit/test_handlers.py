"""Resolution, reviews, merges and scope through the handlers, with the in-memory fakes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex_entity.domain import commands
from toex_entity.domain.matching import Thresholds
from toex_entity.domain.model import Outcome
from toex_entity.domain.records import Address, Grading, Handling, PersonData, PhoneData, RecordType
from toex_entity.service_layer import handlers
from toex_kernel.errors import FailedPrecondition, InvalidArgument, OutOfScope, PermissionDenied
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork

GRADING = Grading(2, "B", Handling.P)
NC = Principal("nc", "national_coordinator.national", Region.NATIONAL, frozenset({Role.NATIONAL_COORDINATOR}))
EMSOU = Principal("a", "analyst.emsou", Region.EMSOU, frozenset({Role.ANALYST}))
ERSOU = Principal("b", "analyst.ersou", Region.ERSOU, frozenset({Role.ANALYST}))

DANIEL = PersonData(
    given_name="Daniel",
    surname="Harrington",
    birth_date="1994-03-12",
    gender="M",
    addresses=(Address(("14 Mill Lane",), "Derby", "DE1 2AB"),),
)


@pytest.fixture
def deps() -> handlers.Deps:
    repo = FakeRepository()
    uow = FakeUnitOfWork(repo)
    return handlers.Deps(uow=lambda: uow)  # type: ignore[arg-type,return-value]


def published(deps: handlers.Deps) -> list:  # type: ignore[type-arg]
    return deps.uow().committed_events  # type: ignore[attr-defined,no-any-return]


def person(source_id: str, region: Region = Region.EMSOU, **changes: object) -> commands.IncomingRecord:
    return commands.IncomingRecord(
        region,
        "niche",
        source_id,
        RecordType.PERSON,
        GRADING,
        dataclasses.replace(DANIEL, **changes),  # type: ignore[arg-type]
    )


async def resolve(deps: handlers.Deps, actor: Principal, *items: commands.IncomingRecord) -> list:  # type: ignore[type-arg]
    return await handlers.resolve_records(
        commands.ResolveRecords(actor, list(items), single=len(items) == 1), deps
    )


async def test_duplicates_in_one_batch_link_and_identical_resend_is_unchanged(deps) -> None:  # type: ignore[no-untyped-def]
    first, second, other = await resolve(
        deps,
        EMSOU,
        person("1"),
        person("2", given_name="Danial", birth_date="1994-03-21"),
        person("3", given_name="Susan", surname="Okafor", birth_date="1970-01-01", addresses=()),
    )
    assert first.outcome is Outcome.NEW_ENTITY
    assert second.outcome is Outcome.LINKED_PROBABILISTIC and second.entity_id == first.entity_id
    assert second.explanation.probability >= 0.99
    assert other.entity_id != first.entity_id
    [again] = await resolve(deps, EMSOU, person("1"))
    assert again.outcome is Outcome.UNCHANGED and again.entity_id == first.entity_id
    types = [e.event_type.rsplit(".", 1)[1] for e in published(deps)]
    assert types.count("EntityCreated") == 2 and types.count("RecordLinked") == 3


async def test_invalid_records_are_refused_with_field_violations(deps) -> None:  # type: ignore[no-untyped-def]
    bad = commands.IncomingRecord(
        Region.EMSOU, "", "x", RecordType.PHONE, Grading(0, "", Handling.C), PhoneData("xyz")
    )
    with pytest.raises(InvalidArgument) as refused:
        await resolve(deps, EMSOU, bad)
    fields = {v.field for v in refused.value.violations}
    assert {"record.ref.source_system", "record.grading.source_evaluation"} <= fields
    # In a stream the bad record is reported and the others go on.
    results = await resolve(deps, EMSOU, bad, person("ok"))
    assert results[0].error and results[1].outcome is Outcome.NEW_ENTITY


async def test_submitting_to_another_region_is_refused(deps) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PermissionDenied):
        await resolve(deps, EMSOU, person("1", Region.ERSOU))


async def test_deconfliction_once_per_pair_of_regions_and_scoped_view(deps) -> None:  # type: ignore[no-untyped-def]
    [mine] = await resolve(deps, EMSOU, person("1"))
    [theirs] = await resolve(deps, ERSOU, person("2", Region.ERSOU))
    assert theirs.entity_id == mine.entity_id and theirs.deconflictions == [Region.EMSOU]
    [more] = await resolve(deps, ERSOU, person("3", Region.ERSOU, given_name="Dan"))
    assert more.deconflictions == [Region.EMSOU]  # told again in the answer...
    notices = [e for e in published(deps) if e.event_type.endswith("DeconflictionNotice")]
    assert sorted(e.headers["toex-region"] for e in notices) == ["EMSOU", "ERSOU"]  # ...but notified once
    notice = ev.DeconflictionNotice.FromString(
        next(e.payload for e in notices if e.headers["toex-region"] == "EMSOU")
    )
    assert notice.other_region and "ERSOU" in notice.contact_role
    view = await handlers.get_entity(commands.GetEntity(EMSOU, mine.entity_id), deps)
    assert [r.region for r in view.records] == [Region.EMSOU] and view.other_regions == [Region.ERSOU]
    outsider = Principal("c", "analyst.nw", Region.NW, frozenset({Role.ANALYST}))
    with pytest.raises(OutOfScope):
        await handlers.get_entity(commands.GetEntity(outsider, mine.entity_id), deps)


async def test_rejection_blocks_deterministic_bridge_and_manual_merge(deps) -> None:  # type: ignore[no-untyped-def]
    async with deps.uow() as uow:
        model = await deps.models.current(uow)
    await handlers.save_model(
        dataclasses.replace(model, thresholds=Thresholds(auto_link=1.01, review=0.5)), deps
    )
    [a] = await resolve(deps, EMSOU, person("a", identifiers=(("PNC", "11"),)))
    [b] = await resolve(deps, EMSOU, person("b", given_name="Dan", identifiers=(("PND", "22"),)))
    assert b.outcome is Outcome.QUEUED_FOR_REVIEW
    task_id = b.review_tasks[0].rsplit("/", 1)[1]
    await handlers.decide_review(commands.DecideReview(EMSOU, Region.EMSOU, task_id, False, "not him"), deps)
    [bridge] = await resolve(deps, EMSOU, person("c", identifiers=(("PNC", "11"), ("PND", "22"))))
    assert bridge.outcome is Outcome.LINKED_DETERMINISTIC
    repo = deps.uow().repo  # type: ignore[attr-defined]
    assert repo.records[a.record_id].entity_id != repo.records[b.record_id].entity_id
    with pytest.raises(FailedPrecondition):
        await handlers.merge(commands.MergeEntities(NC, a.entity_id, [b.entity_id], "same?"), deps)


async def test_merge_then_undo_restores_ids_and_records(deps) -> None:  # type: ignore[no-untyped-def]
    [a] = await resolve(deps, EMSOU, person("a"))
    [b] = await resolve(
        deps, EMSOU, person("b", given_name="Zed", surname="Quinn", birth_date="1960-01-01", addresses=())
    )
    view, change_id = await handlers.merge(
        commands.MergeEntities(EMSOU, a.entity_id, [b.entity_id], "same"), deps
    )
    assert {r.id for r in view.records} == {a.record_id, b.record_id} and view.merged_ids == [b.entity_id]
    assert deps.uow().relations.followed == [([b.entity_id], a.entity_id)]  # relations follow the merge
    redirected = await handlers.get_entity(commands.GetEntity(EMSOU, b.entity_id), deps)
    assert redirected.entity.id == a.entity_id
    kept, restored, _ = await handlers.split(
        commands.SplitEntity(EMSOU, a.entity_id, [], change_id, "wrong"), deps
    )
    assert [r.id for r in kept.records] == [a.record_id]
    assert [(v.entity.id, [r.id for r in v.records]) for v in restored] == [(b.entity_id, [b.record_id])]


async def test_changed_record_is_updated_and_reindexed_in_its_entity(deps) -> None:  # type: ignore[no-untyped-def]
    [first] = await resolve(deps, EMSOU, person("1", phone_numbers=("07700 900001",)))
    [again] = await resolve(deps, EMSOU, person("1", phone_numbers=("07700 900002",)))
    assert again.outcome is Outcome.UNCHANGED and again.record_id == first.record_id
    repo = deps.uow().repo  # type: ignore[attr-defined]
    assert first.record_id in repo.keys["tel:+447700900002"]
    assert first.record_id not in repo.keys["tel:+447700900001"]
    assert repo.records[first.record_id].identifiers.e164_numbers == ("+447700900002",)


async def test_merge_across_regions_gives_each_region_its_copy_then_the_notices(deps) -> None:  # type: ignore[no-untyped-def]
    [mine] = await resolve(deps, EMSOU, person("a"))
    [theirs] = await resolve(
        deps,
        ERSOU,
        person("b", Region.ERSOU, given_name="Zed", surname="Quinn", birth_date="1960-01-01", addresses=()),
    )
    before = len(published(deps))
    _, change_id = await handlers.merge(
        commands.MergeEntities(NC, mine.entity_id, [theirs.entity_id], "same PNC on the custody record"), deps
    )
    merged = published(deps)[before:]
    assert [(e.event_type.rsplit(".", 1)[1], e.headers["toex-region"]) for e in merged] == [
        ("EntitiesMerged", "EMSOU"),
        ("EntitiesMerged", "ERSOU"),
        ("DeconflictionNotice", "EMSOU"),
        ("DeconflictionNotice", "ERSOU"),
    ]
    by_region = {e.headers["toex-region"]: ev.EntitiesMerged.FromString(e.payload) for e in merged[:2]}
    for message in by_region.values():
        # Across regions neither learns who decided or why.
        assert message.change_id == change_id and not (message.decided_by or message.reason)
    # EMSOU held no record on the entity merged in: its copy names none; ERSOU's names ERSOU's.
    assert list(by_region["EMSOU"].merged) == []
    assert list(by_region["ERSOU"].merged) == [f"entities/{theirs.entity_id}"]


def copies(deps: handlers.Deps, before: int, kind: type) -> dict[str, Any]:
    """The messages of one kind published since `before`, by the region of their copy."""
    return {
        e.headers["toex-region"]: kind.FromString(e.payload)  # type: ignore[attr-defined]
        for e in published(deps)[before:]
        if e.event_type.endswith(f".{kind.__name__}")
    }


async def test_each_regions_copy_of_a_merge_across_regions_names_its_own_merged_entities(deps) -> None:  # type: ignore[no-untyped-def]
    [survivor] = await resolve(deps, EMSOU, person("s"))
    [emsou_only] = await resolve(
        deps, EMSOU, person("e", given_name="Zed", surname="Quinn", birth_date="1960-01-01", addresses=())
    )
    [ersou_only] = await resolve(
        deps,
        ERSOU,
        person(
            "r", Region.ERSOU, given_name="Susan", surname="Okafor", birth_date="1970-01-01", addresses=()
        ),
    )
    # One entity holding records of both regions before the merge.
    carys = {"given_name": "Carys", "surname": "Penhallow", "birth_date": "1962-11-03", "addresses": ()}
    [both] = await resolve(deps, EMSOU, person("b1", **carys))
    [both_ersou] = await resolve(deps, ERSOU, person("b2", Region.ERSOU, **carys))
    assert both_ersou.entity_id == both.entity_id
    others = [emsou_only.entity_id, ersou_only.entity_id, both.entity_id]
    assert len({survivor.entity_id, *others}) == 4
    before = len(published(deps))
    _, change_id = await handlers.merge(
        commands.MergeEntities(NC, survivor.entity_id, others, "same PNC on the custody record"), deps
    )
    merged = copies(deps, before, ev.EntitiesMerged)
    assert set(merged) == {"EMSOU", "ERSOU"}
    # Each region is named the merged entities that held its records, ids it knows from its own
    # RecordLinked events; never the other region's, nor who decided or why.
    assert list(merged["EMSOU"].merged) == [f"entities/{e}" for e in (emsou_only.entity_id, both.entity_id)]
    assert list(merged["ERSOU"].merged) == [f"entities/{e}" for e in (ersou_only.entity_id, both.entity_id)]
    for message in merged.values():
        assert message.change_id == change_id
        assert message.entity == f"entities/{survivor.entity_id}"
        assert not (message.decided_by or message.reason)

    # Undone: each region's copy lists its own records moved and where they went, only.
    before = len(published(deps))
    await handlers.split(commands.SplitEntity(NC, survivor.entity_id, [], change_id, "wrong"), deps)
    split = copies(deps, before, ev.EntitySplit)
    assert set(split) == {"EMSOU", "ERSOU"}
    for region, own in (
        ("EMSOU", {emsou_only.record_id: emsou_only.entity_id, both.record_id: both.entity_id}),
        ("ERSOU", {ersou_only.record_id: ersou_only.entity_id, both_ersou.record_id: both.entity_id}),
    ):
        message = split[region]
        moves = dict(zip(message.moved_records, message.moved_to, strict=True))
        assert moves == {f"regions/{region}/records/{r}": f"entities/{e}" for r, e in own.items()}
        assert set(message.split_entities) == {f"entities/{e}" for e in own.values()}
        assert message.undone_change == change_id and not (message.decided_by or message.reason)


async def test_a_merge_and_its_undoing_within_one_region_are_told_in_full(deps) -> None:  # type: ignore[no-untyped-def]
    [a] = await resolve(deps, EMSOU, person("a"))
    [b] = await resolve(
        deps, EMSOU, person("b", given_name="Zed", surname="Quinn", birth_date="1960-01-01", addresses=())
    )
    [c] = await resolve(
        deps, EMSOU, person("c", given_name="Susan", surname="Okafor", birth_date="1970-01-01", addresses=())
    )
    before = len(published(deps))
    _, change_id = await handlers.merge(
        commands.MergeEntities(EMSOU, a.entity_id, [b.entity_id, c.entity_id], "same"), deps
    )
    [(region, message)] = copies(deps, before, ev.EntitiesMerged).items()
    assert region == "EMSOU" and message.change_id == change_id
    assert list(message.merged) == [f"entities/{b.entity_id}", f"entities/{c.entity_id}"]
    assert (message.decided_by, message.reason) == (EMSOU.username, "same")
    before = len(published(deps))
    await handlers.split(commands.SplitEntity(EMSOU, a.entity_id, [], change_id, "wrong"), deps)
    [(_, undone)] = copies(deps, before, ev.EntitySplit).items()
    assert list(undone.split_entities) == [f"entities/{b.entity_id}", f"entities/{c.entity_id}"]
    assert dict(zip(undone.moved_records, undone.moved_to, strict=True)) == {
        f"regions/EMSOU/records/{b.record_id}": f"entities/{b.entity_id}",
        f"regions/EMSOU/records/{c.record_id}": f"entities/{c.entity_id}",
    }
    assert (undone.decided_by, undone.reason) == (EMSOU.username, "wrong")


async def test_a_stream_of_several_chunks_is_validated_ahead_and_answered_in_order(deps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Chunks after the first are validated while the one before is resolved: every record's
    result comes back at its place, errors included, and each chunk is its own transaction."""
    monkeypatch.setattr(handlers, "INGEST_CHUNK", 3)
    names = ["Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ida", "Jo"]
    items = [
        person(
            str(i),
            given_name=name,
            surname=f"{name}ley",
            birth_date=f"19{60 + i}-0{1 + i % 9}-1{i}",
            addresses=(),
        )
        for i, name in enumerate(names)
    ]
    for i in (1, 5, 9):  # no name, no date of birth, no identifier: refused
        items[i] = person(str(i), given_name="", surname="", birth_date="", addresses=())
    commits = deps.uow().commits
    results = await handlers.resolve_records(commands.ResolveRecords(EMSOU, items, single=False), deps)
    assert [bool(r.error) for r in results] == [i in (1, 5, 9) for i in range(10)]
    assert all(r.outcome is Outcome.NEW_ENTITY for i, r in enumerate(results) if i not in (1, 5, 9))
    assert len({r.entity_id for r in results if not r.error}) == 7
    assert deps.uow().commits - commits == 3  # records 0-2, 3-5 and 6-8; 9 alone is refused: no transaction


async def test_a_person_uses_the_phone_of_its_own_region_found_in_its_own_batch_and_no_other(deps) -> None:  # type: ignore[no-untyped-def]
    """The batch's own phone records are found for its relations in the batch (its keys are not
    written yet), only of the person's own region: an EMSOU person relates to an EMSOU phone in
    its batch, and not to a LONDON phone of the number it gives in its batch."""
    service = Principal("svc", "svc", Region.NATIONAL, frozenset({Role.SERVICE}))

    def phone(region: Region, source_id: str, number: str) -> commands.IncomingRecord:
        return commands.IncomingRecord(
            region, "comms", source_id, RecordType.PHONE, GRADING, PhoneData(number)
        )

    async def uses_after(items: list[commands.IncomingRecord]) -> tuple[list, list]:  # type: ignore[type-arg]
        results = await handlers.resolve_records(commands.ResolveRecords(service, items, single=False), deps)
        uses = [s.relation for s in deps.uow().relations.stored if s.relation.kind.value == "USES_PHONE"]
        return results, uses

    (own_phone, someone), uses = await uses_after(
        [phone(Region.EMSOU, "e", "+447700900321"), person("p", phone_numbers=("+447700900321",))]
    )
    assert [(r.region, r.subject, r.target) for r in uses] == [
        ("EMSOU", someone.entity_id, own_phone.entity_id)
    ]
    (london_phone, other), uses = await uses_after(
        [
            phone(Region.LONDON, "l", "+447700900654"),
            person(
                "q",
                given_name="Anwen",
                surname="Price",
                birth_date="1988-08-08",
                phone_numbers=("+447700900654",),
            ),
        ]
    )
    assert other.entity_id != someone.entity_id and london_phone.region == "LONDON"
    assert [r.subject for r in uses] == [
        someone.entity_id
    ]  # nothing new: LONDON's phone is not EMSOU's to relate to
