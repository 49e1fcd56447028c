"""Entity merges and splits as comms' attributions follow them: the events as the entity service
publishes them, through the comms-entities consumer's handlers, against the fakes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import decode
from toex_common.testing.fakes import principal
from toex_comms.bootstrap import event_bus
from toex_comms.config import Settings
from toex_comms.domain import commands
from toex_comms.domain.commands import ExportFormat, Scope
from toex_comms.domain.identity import Outcome
from toex_comms.domain.model import Attribution
from toex_comms.service_layer import handlers
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeDatasetStore, FakeExporter
from .test_handlers import calls, import_cdr

ANALYST = principal("analyst.emsou", Role.ANALYST)
LONDON = principal("researcher.london", Role.RESEARCHER)
JOB = "regions/EMSOU/jobs/j1"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
N1, N2, N3, N4, N5 = (f"+44770090000{i}" for i in range(1, 6))
VRM = "AB12CDE"


def rec(n: str, region: str = "EMSOU") -> str:
    return f"regions/{region}/records/{n}"


class World:
    """The fakes, the comms-entities consumer's dispatcher, and a clock for attributions by hand."""

    def __init__(self) -> None:
        self.uow = FakeCommsUnitOfWork()
        self.store = FakeDatasetStore()
        self.exporter = FakeExporter()
        self.now = T0
        self.deps = handlers.Deps(
            uow=lambda: self.uow,  # type: ignore[arg-type,return-value]
            store=self.store,  # type: ignore[arg-type]
            exporter=self.exporter,
            clock=lambda: self.now,
        )
        self.dispatch = event_bus(Settings(consume_events=True)).dispatcher("comms-entities")

    async def deliver(self, *envelopes: EventEnvelope) -> None:
        for e in envelopes:
            await self.dispatch(decode(e.subject, e.payload, e.headers), self.uow)

    async def by_hand(self, identifier: str, entity: str, label: str, at: datetime) -> None:
        self.now = at
        await handlers.attribute(
            commands.AttributeIdentifier(ANALYST, Region.EMSOU, identifier, False, entity, label), self.deps
        )

    def table(self, region: Region = Region.EMSOU) -> set[tuple[str, str, str]]:
        """(identifier, entity, record) of every attribution stored in `region`."""
        return {a.key for a in self.uow.repo.attributions_in(region)}

    async def shown(self, identifier: str) -> list[str]:
        """The entities an analysis or export shows for `identifier` (EMSOU's view)."""
        found = await self.uow.repo.attributions(Region.EMSOU, [identifier])
        return [a.entity_id for a in found.get(identifier, [])]

    def one(self, identifier: str, entity: str, record: str = "") -> Attribution:
        found = self.uow.repo.attributed.get((Region.EMSOU, identifier, entity, record))
        assert found is not None, (identifier, entity, record, self.table())
        return found

    def snapshot(self) -> tuple[object, ...]:
        repo = self.uow.repo
        return (
            dict(repo.attributed),
            {k: dataclasses.asdict(v) for k, v in repo.changes.items()},
            dict(repo.history),
        )


def entity_event(message: Message, region: Region, at: datetime) -> EventEnvelope:
    return build_event(message, domain="entity", source="test", region=region, occurred_at=at)


def linked(
    entity: str,
    record: str,
    numbers: Iterable[str] = (),
    vrms: Iterable[str] = (),
    at: datetime = T0,
    region: Region = Region.EMSOU,
) -> EventEnvelope:
    message = ev.RecordLinked(
        entity=f"entities/{entity}",
        entity_id=entity,
        entity_type=entity_pb2.RECORD_TYPE_PERSON,
        record=record,
        identifiers=entity_pb2.StrongIdentifiers(e164_numbers=list(numbers), vrms=list(vrms)),
        decided_by="system:deterministic",
    )
    return entity_event(message, region, at)


def merge(
    change: str, survivor: str, absorbed: Iterable[str], at: datetime, region: Region = Region.EMSOU
) -> EventEnvelope:
    message = ev.EntitiesMerged(
        entity=f"entities/{survivor}",
        merged=[f"entities/{m}" for m in absorbed],
        change_id=change,
        decided_by="analyst.emsou",
        reason="same person",
    )
    return entity_event(message, region, at)


def split(
    change: str,
    entity: str,
    moves: dict[str, str],
    at: datetime,
    undone: str = "",
    region: Region = Region.EMSOU,
) -> EventEnvelope:
    message = ev.EntitySplit(
        entity=f"entities/{entity}",
        split_entities=sorted({f"entities/{to}" for to in moves.values()}),
        moved_records=list(moves),
        moved_to=[f"entities/{to}" for to in moves.values()],
        change_id=change,
        undone_change=undone,
        decided_by="analyst.emsou",
        reason="not the same person",
    )
    return entity_event(message, region, at)


@pytest.fixture
def world() -> World:
    return World()


async def test_a_merge_moves_the_regions_attributions_to_the_survivor_and_keeps_who_decided(
    world: World,
) -> None:
    await world.deliver(
        linked("ent-m", rec("m1"), [N1], [VRM], at=T0),
        linked("ent-s", rec("s1"), [N2], at=T0),
    )
    await world.by_hand(N3, "ent-m", "Kestrel's second phone", T0 + timedelta(minutes=5))
    before = world.one(N1, "ent-m", rec("m1"))

    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))

    assert world.table() == {
        (N1, "ent-s", rec("m1")),
        (VRM, "ent-s", rec("m1")),
        (N2, "ent-s", rec("s1")),
        (N3, "ent-s", ""),
    }
    # Analyses and exports show the survivor; who decided and when travel with the attribution.
    assert await world.shown(N1) == ["ent-s"] and await world.shown(VRM) == ["ent-s"]
    moved = world.one(N1, "ent-s", rec("m1"))
    assert (moved.recorded_by, moved.recorded_at, moved.source, moved.via_change) == (
        "system:deterministic",
        T0,
        "entity-resolution",
        "c1",
    )
    by_hand = world.one(N3, "ent-s")
    assert (by_hand.label, by_hand.source, by_hand.recorded_by) == (
        "Kestrel's second phone",
        "manual",
        "analyst.emsou",
    )
    # Nothing is lost: the history holds each as it was, and the merge that moved it.
    history = await world.uow.repo.moves_of(Region.EMSOU, "c1")
    assert {(m.before.key, m.to_entity, m.outcome) for m in history} == {
        ((N1, "ent-m", rec("m1")), "ent-s", Outcome.MOVED),
        ((VRM, "ent-m", rec("m1")), "ent-s", Outcome.MOVED),
        ((N3, "ent-m", ""), "ent-s", Outcome.MOVED),
    }
    assert next(m.before for m in history if m.before.identifier == N1) == before


async def test_analyses_exports_and_the_index_show_the_survivor_and_grant_holders_still_see_no_attribution(
    world: World,
) -> None:
    target, contact = 447700900001, 447700900100
    data = world.store.readable(b"calls", calls((target, contact), (contact, target)))
    imported = await handlers.import_file(dataclasses.replace(import_cdr(data=data), job=JOB), world.deps)
    await world.deliver(
        linked("ent-m", rec("m1"), [f"+{contact}"], at=T0),
        merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)),
    )
    scope = Scope(ANALYST, Region.EMSOU, (imported.dataset.id,), "")

    await handlers.export(commands.Export(scope, ExportFormat.GRAPHML, [target], 1), world.deps)
    [(_, _, (_, labels))] = world.exporter.written
    assert labels == {contact: "ent-s"}
    hit = await handlers.search_index(
        commands.SearchPhoneIndex(ANALYST, Region.EMSOU, f"+{contact}"), world.deps
    )
    assert [(a.entity_id, a.via_change) for a in hit.attributions] == [("ent-s", "c1")]
    suspects = await handlers.rank_suspects(commands.RankSuspects(scope, [target], 10, 0), world.deps)
    assert [a.entity_id for a in suspects.labels.of(f"+{contact}")] == ["ent-s"]

    # London's researcher on EMSOU's job: the job's data, never whom its numbers belong to.
    world.uow.grants.grant(JOB, LONDON.username)
    held = await handlers.search_index(
        commands.SearchPhoneIndex(LONDON, Region.EMSOU, f"+{contact}", JOB), world.deps
    )
    assert held.entries and held.attributions == []
    under_grant = Scope(LONDON, Region.EMSOU, (), "", purpose=JOB)
    suspects = await handlers.rank_suspects(commands.RankSuspects(under_grant, [target], 10, 0), world.deps)
    assert [s.number for s in suspects.found] == [contact] and suspects.labels.attributions == {}


async def test_a_number_both_entities_held_by_hand_is_shown_once_and_the_absorbed_one_kept_in_history(
    world: World,
) -> None:
    await world.by_hand(N1, "ent-s", "survivor's label", T0)
    await world.by_hand(N1, "entities/ent-m", "absorbed label", T0 + timedelta(minutes=1))

    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))

    assert world.table() == {(N1, "ent-s", "")}
    assert world.one(N1, "ent-s").label == "survivor's label"
    [joined] = await world.uow.repo.moves_of(Region.EMSOU, "c1")
    assert (joined.outcome, joined.before.label, joined.before.entity_id) == (
        Outcome.JOINED,
        "absorbed label",
        "entities/ent-m",
    )


async def test_another_regions_merge_changes_nothing_here(world: World) -> None:
    await world.deliver(linked("ent-m", rec("m1"), [N1], at=T0))
    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1), region=Region.ERSOU))

    assert world.table() == {(N1, "ent-m", rec("m1"))}
    assert await world.uow.repo.get_change(Region.EMSOU, "c1") is None
    # EMSOU's own copy of the same change is EMSOU's to apply.
    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))
    assert world.table() == {(N1, "ent-s", rec("m1"))}


async def test_redelivery_and_the_same_change_twice_change_nothing(world: World) -> None:
    await world.deliver(
        linked("ent-m", rec("m1"), [N1], at=T0),
        linked("ent-s", rec("s1"), [N2], at=T0),
        linked("ent-s", rec("s2"), [N4], at=T0),
    )
    first_merge = merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1))
    await world.deliver(first_merge)
    after_merge = world.snapshot()

    await world.deliver(first_merge, merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))
    assert world.snapshot() == after_merge

    await world.by_hand(N3, "ent-s", "", T0 + timedelta(minutes=90))
    first_split = split("c2", "ent-s", {rec("s2"): "ent-x"}, T0 + timedelta(hours=2))
    await world.deliver(first_split)
    after_split = world.snapshot()
    assert (N4, "ent-x", rec("s2")) in world.table() and world.one(N3, "ent-s").review

    await world.deliver(first_split, split("c2", "ent-s", {rec("s2"): "ent-x"}, T0 + timedelta(hours=2)))
    assert world.snapshot() == after_split


async def test_a_merge_after_the_split_that_undid_it_changes_nothing(world: World) -> None:
    await world.deliver(
        linked("ent-m", rec("m1"), [N1], at=T0),
        linked("ent-s", rec("s1"), [N2], at=T0),
    )
    # The undo arrives first (a redelivery held the merge back).
    await world.deliver(split("c2", "ent-s", {rec("m1"): "ent-m"}, T0 + timedelta(hours=2), undone="c1"))
    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))

    assert world.table() == {(N1, "ent-m", rec("m1")), (N2, "ent-s", rec("s1"))}
    applied = await world.uow.repo.get_change(Region.EMSOU, "c1")
    assert applied is not None and applied.undone_by == "c2"
    # A link to the merged entity delivered even later stays on it: the merge never took effect.
    await world.deliver(linked("ent-m", rec("m2"), [N3], at=T0 + timedelta(minutes=30)))
    assert (N3, "ent-m", rec("m2")) in world.table()


async def test_undoing_a_merge_puts_back_what_it_moved_and_flags_what_was_given_since(world: World) -> None:
    await world.deliver(
        linked("ent-m", rec("m1"), [N1], at=T0),
        linked("ent-s", rec("s1"), [N2], at=T0),
    )
    await world.by_hand(N3, "ent-m", "from the PNC", T0 + timedelta(minutes=5))
    await world.by_hand(N5, "ent-s", "", T0 + timedelta(minutes=5))
    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))
    # Given to the merged entity while it was one: whose it is after the undo cannot be told.
    await world.by_hand(N4, "ent-s", "", T0 + timedelta(hours=2))

    await world.deliver(split("c2", "ent-s", {rec("m1"): "ent-m"}, T0 + timedelta(hours=3), undone="c1"))

    assert world.table() == {
        (N1, "ent-m", rec("m1")),
        (N2, "ent-s", rec("s1")),
        (N3, "ent-m", ""),
        (N4, "ent-s", ""),
        (N5, "ent-s", ""),
    }
    # Exactly as before the merge: nothing of the merge is left on them.
    back = world.one(N1, "ent-m", rec("m1"))
    assert (back.via_change, back.recorded_at, back.review) == ("", T0, "")
    assert world.one(N3, "ent-m").label == "from the PNC"
    # The survivor's own, from before the merge, need no check.
    assert world.one(N2, "ent-s", rec("s1")).review == "" and world.one(N5, "ent-s").review == ""
    assert "merge c1 was undone" in world.one(N4, "ent-s").review
    undone = await world.uow.repo.get_change(Region.EMSOU, "c1")
    assert undone is not None and undone.undone_by == "c2"
    assert {(m.before.identifier, m.outcome) for m in await world.uow.repo.moves_of(Region.EMSOU, "c2")} == {
        (N1, Outcome.MOVED),
        (N3, Outcome.MOVED),
        (N4, Outcome.FLAGGED),
    }


async def test_a_split_moves_attributions_with_their_records_and_flags_those_of_no_known_record(
    world: World,
) -> None:
    # N4 is held by both records: one attribution each.
    await world.deliver(
        linked("ent-e", rec("r1"), [N1, N4], [VRM], at=T0),
        linked("ent-e", rec("r2"), [N2, N4], at=T0),
    )
    await world.by_hand(N3, "ent-e", "by hand", T0 + timedelta(minutes=5))
    # Recorded before comms kept the record (migration 0003).
    await world.uow.repo.attribute(
        Region.EMSOU, Attribution(N2, "ent-e", "", "entity-resolution", "system:deterministic", T0)
    )

    await world.deliver(split("c9", "ent-e", {rec("r1"): "ent-x"}, T0 + timedelta(hours=1)))

    assert world.table() == {
        (N1, "ent-x", rec("r1")),
        (VRM, "ent-x", rec("r1")),
        (N4, "ent-x", rec("r1")),
        (N4, "ent-e", rec("r2")),
        (N2, "ent-e", rec("r2")),
        (N2, "ent-e", ""),
        (N3, "ent-e", ""),
    }
    assert sorted(await world.shown(N4)) == ["ent-e", "ent-x"]
    assert world.one(N1, "ent-x", rec("r1")).via_change == "c9"
    # Left where they are, for a person to check; those whose record stayed need no check.
    assert "entity ent-e was split (change c9)" in world.one(N3, "ent-e").review
    assert world.one(N2, "ent-e").review and not world.one(N2, "ent-e", rec("r2")).review
    # Attributing again by hand is the check: the flag goes.
    await world.by_hand(N3, "ent-e", "by hand, checked", T0 + timedelta(hours=2))
    assert world.one(N3, "ent-e").review == ""


async def test_a_link_delivered_late_lands_where_the_changes_applied_put_the_rest(world: World) -> None:
    await world.deliver(
        linked("ent-m", rec("m1"), [N1], at=T0),
        linked("ent-e", rec("r1"), [N2], at=T0),
        merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)),
        split("c2", "ent-e", {rec("r1"): "ent-x"}, T0 + timedelta(hours=1)),
    )
    # Both published before the changes, delivered after them (a retry).
    await world.deliver(
        linked("ent-m", rec("m2"), [N3], at=T0 + timedelta(minutes=10)),
        linked("ent-e", rec("r1"), [N4], at=T0 + timedelta(minutes=10)),
    )

    assert world.one(N3, "ent-s", rec("m2")).via_change == "c1"
    assert world.one(N4, "ent-x", rec("r1")).via_change == "c2"
    # A link decided after the split is taken as it is.
    await world.deliver(linked("ent-e", rec("r1"), [N4], at=T0 + timedelta(hours=2)))
    assert (N4, "ent-e", rec("r1")) in world.table()


async def test_a_merge_delivered_after_a_later_split_leaves_the_moved_record_where_the_split_put_it(
    world: World,
) -> None:
    await world.deliver(linked("ent-m", rec("m1"), [N1], at=T0), linked("ent-m", rec("m2"), [N2], at=T0))
    # The entity service merged M into S, then split m2 off S; comms gets the split first.
    await world.deliver(split("c2", "ent-s", {rec("m2"): "ent-x"}, T0 + timedelta(hours=2)))
    await world.deliver(merge("c1", "ent-s", ["ent-m"], T0 + timedelta(hours=1)))

    assert world.table() == {(N1, "ent-s", rec("m1")), (N2, "ent-x", rec("m2"))}


async def test_a_merge_across_regions_that_does_not_say_what_it_merged_moves_nothing(world: World) -> None:
    await world.deliver(linked("ent-m", rec("m1"), [N1], at=T0))
    await world.deliver(merge("c1", "ent-s", [], T0 + timedelta(hours=1)))

    assert world.table() == {(N1, "ent-m", rec("m1"))}
    applied = await world.uow.repo.get_change(Region.EMSOU, "c1")
    assert applied is not None and applied.merged == ()


async def test_an_identity_change_that_cannot_be_applied_is_refused_for_dead_lettering(world: World) -> None:
    broken = ev.EntitySplit(
        entity="entities/ent-e",
        moved_records=[rec("r1"), rec("r2")],
        moved_to=["entities/ent-x"],
        change_id="c3",
    )
    with pytest.raises(PermanentError):
        await world.deliver(entity_event(broken, Region.EMSOU, T0))
    with pytest.raises(PermanentError):
        await world.deliver(entity_event(ev.EntitiesMerged(entity="entities/ent-s"), Region.EMSOU, T0))
    assert world.uow.repo.changes == {}
