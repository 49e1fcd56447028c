"""Identity changes from entity resolution, through the service's bus handlers, with fakes:
merges make one case of drafts and re-key the rest, splits only tell, numbers follow their
person; only the event's own region changes; a change applied twice changes nothing."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta

import pytest
from google.protobuf.message import Message
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2
from toex_common.events import build_event
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import IncomingEvent, decode
from toex_common.testing.fakes import principal
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.calendar import LONDON
from toex_safeguarding.domain.model import Evidence, Referral
from toex_safeguarding.domain.values import AgeBand, Concern, Destination, EvidenceKind, RiskLevel, State
from toex_safeguarding.entrypoints import identity, triggers
from toex_safeguarding.service_layer import handlers

from .fakes import FakeJobs, FakeSafeguardingUnitOfWork

NOW = datetime(2025, 4, 14, 9, 0, tzinfo=LONDON)
SO = principal("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)
CSE = Concern.CHILD_SEXUAL_EXPLOITATION
NUMBER = "+447700900123"

bus = MessageBus()
identity.subscribe(bus, "sg", lambda: NOW)
DISPATCH = bus.dispatcher("sg-identity")


@pytest.fixture
def uow() -> FakeSafeguardingUnitOfWork:
    return FakeSafeguardingUnitOfWork()


def envelope(message: Message, region: Region = Region.EMSOU) -> IncomingEvent:
    e = build_event(message, domain="entity", source="toex/entity", region=region)
    return decode(e.subject, e.payload, e.headers)


async def deliver(uow: FakeSafeguardingUnitOfWork, event: IncomingEvent) -> None:
    async with uow:
        await DISPATCH(event, uow)
        await uow.commit()


def merged(into: str, *others: str, change: str = "c-merge") -> ev.EntitiesMerged:
    return ev.EntitiesMerged(
        entity=f"entities/{into}", merged=[f"entities/{o}" for o in others], change_id=change
    )


def split(entity: str, *, change: str = "c-split", undone: str = "", moved: int = 1) -> ev.EntitySplit:
    return ev.EntitySplit(
        entity=f"entities/{entity}",
        split_entities=["entities/new-1"],
        moved_records=[f"regions/EMSOU/records/r{i}" for i in range(moved)],
        moved_to=["entities/new-1"] * moved,
        change_id=change,
        undone_change=undone,
    )


def linked(entity: str, *numbers: str, kind: int = entity_pb2.RECORD_TYPE_PERSON) -> ev.RecordLinked:
    return ev.RecordLinked(
        entity=f"entities/{entity}",
        entity_id=entity,
        entity_type=kind,  # type: ignore[arg-type]
        record="regions/EMSOU/records/rec-1",
        identifiers=entity_pb2.StrongIdentifiers(e164_numbers=list(numbers)),
    )


async def found(
    uow: FakeSafeguardingUnitOfWork,
    subject: str,
    *,
    concern: Concern | None = CSE,
    region: Region = Region.EMSOU,
    at: datetime = NOW,
    event: str = "",
    job: str = "",
) -> Referral:
    """A finding about `subject` (as comms' findings arrive): drafts or joins the open referral."""
    event = event or f"ev-{uuid.uuid4().hex}"
    trigger = commands.Trigger(
        source_event_id=event,
        source_type="toex.comms.events.v1.WatchlistContactDetected",
        region=region,
        subject_entity_id=subject,
        concern=concern,
        evidence=[Evidence(EvidenceKind.EVENT, event, "12 contacts with a registered sex offender")],
        linked_job=job,
    )
    async with uow:
        referral = await handlers.draft_from_trigger(trigger, uow, at)  # type: ignore[arg-type]
        await uow.commit()
    return referral


def stored(uow: FakeSafeguardingUnitOfWork, referral: Referral) -> Referral:
    return uow.referrals.referrals[referral.id]


def identity_notes(referral: Referral) -> list[str]:
    return [e.description for e in referral.evidence if e.added_by.startswith("identity:")]


def kinds(uow: FakeSafeguardingUnitOfWork) -> list[str]:
    return [e.event_type.rsplit(".", 1)[-1] for e in uow.committed_events]


async def send_to_social_care(uow: FakeSafeguardingUnitOfWork, referral: Referral) -> None:
    deps = handlers.Deps(uow=lambda: uow, clock=lambda: NOW, jobs=FakeJobs())  # type: ignore[arg-type,return-value]
    rid = referral.id
    await handlers.update_referral(
        commands.UpdateReferral(
            SO, Region.EMSOU, rid, commands.Revision(age_band=AgeBand.CHILD, local_authority="Derby")
        ),
        deps,
    )
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, rid), deps)
    await handlers.approve_referral(commands.Transition(SUP, Region.EMSOU, rid), deps)
    await handlers.record_submission(
        commands.RecordSubmission(SO, Region.EMSOU, rid, Destination.CHILDRENS_SOCIAL_CARE, "MASH-1"), deps
    )


# -- merges ----------------------------------------------------------------------------------


async def test_two_drafts_about_one_child_become_one_case(uow: FakeSafeguardingUnitOfWork) -> None:
    older = await found(uow, "ent-m", at=NOW, job="regions/EMSOU/jobs/j1")
    newer = await found(uow, "entities/ent-s", concern=Concern.TRAFFICKING, at=NOW + timedelta(hours=1))
    assert newer.subject.entity_id == "ent-s"  # the tasking spelling is the same subject
    stored(uow, newer).risk_level = RiskLevel.HIGH
    before = len(uow.committed_events)

    await deliver(uow, envelope(merged("ent-s", "ent-m")))

    keeper, gone = stored(uow, older), stored(uow, newer)
    # The older survives, about the surviving entity, with both concerns and the higher risk.
    assert keeper.state is State.DRAFT and keeper.subject.entity_id == "ent-s"
    assert keeper.concerns == [CSE, Concern.TRAFFICKING] and keeper.risk_level is RiskLevel.HIGH
    # Both evidence trails: the other's evidence copied with who added it and where it came from.
    copied = [e for e in keeper.evidence if f"(from {gone.name})" in e.description]
    assert [(e.ref, e.added_by) for e in copied] == [
        (newer.evidence[0].ref, "trigger:WatchlistContactDetected")
    ]
    assert any("entity change c-merge" in n.lower() and gone.name in n for n in identity_notes(keeper))
    # The other is closed as merged into it, its own trail untouched.
    assert gone.state is State.CLOSED and gone.close_reason.startswith(f"merged into {keeper.name}")
    assert gone.evidence == newer.evidence
    assert kinds(uow)[before:] == [
        "ReferralClosed",  # stored first, so that the keys it held are free for the case
        "ReferralEvidenceAdded",  # the copied evidence
        "ReferralEvidenceAdded",  # the note naming the change
    ]
    for e in uow.committed_events[before:]:
        assert b"ent-s" not in e.payload and b"ent-m" not in e.payload  # never the subject

    # One open referral per subject still: findings under the surviving id, the old one or
    # the tasking spelling all join the case.
    for subject in ("ent-s", "ent-m", "entities/ent-s"):
        assert (
            await found(uow, subject, at=NOW + timedelta(hours=2), event=f"late-{subject}")
        ).id == keeper.id
    assert [r.id for r in uow.referrals.referrals.values() if r.is_open] == [keeper.id]


async def test_a_merge_applied_again_changes_nothing(uow: FakeSafeguardingUnitOfWork) -> None:
    a = await found(uow, "ent-m", at=NOW)
    b = await found(uow, "ent-s", at=NOW + timedelta(hours=1))
    message = merged("ent-s", "ent-m")
    event = envelope(message)
    await deliver(uow, event)
    state = copy.deepcopy(uow.referrals.referrals), copy.deepcopy(uow.referrals.keys)
    events = len(uow.committed_events)

    await deliver(uow, event)  # redelivered
    again = copy.deepcopy(message)
    again.event_id = ""
    await deliver(uow, envelope(again))  # the same change under another event id
    assert (uow.referrals.referrals, uow.referrals.keys) == state
    assert len(uow.committed_events) == events
    assert stored(uow, a).subject.entity_id == "ent-s" and stored(uow, b).state is State.CLOSED


async def test_a_merge_changes_only_its_own_regions_referrals(uow: FakeSafeguardingUnitOfWork) -> None:
    emsou = await found(uow, "ent-m")
    london = await found(uow, "ent-m", region=Region.LONDON)
    london_s = await found(uow, "ent-s", region=Region.LONDON, at=NOW + timedelta(hours=1))

    await deliver(uow, envelope(merged("ent-s", "ent-m"), Region.EMSOU))
    assert stored(uow, emsou).subject.entity_id == "ent-s"  # admitted: its own region
    assert stored(uow, london) == london and stored(uow, london_s) == london_s  # refused: another's
    # ... and LONDON's later findings about the merged id are not sent to EMSOU's alias.
    assert (await found(uow, "ent-m", region=Region.LONDON, event="later")).id == london.id

    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c-london"), Region.LONDON))
    assert stored(uow, london).subject.entity_id == "ent-s" and stored(uow, london_s).state is State.CLOSED
    assert stored(uow, emsou).state is State.DRAFT and len(identity_notes(stored(uow, emsou))) == 1


async def test_a_referral_sent_to_an_agency_is_linked_not_merged(uow: FakeSafeguardingUnitOfWork) -> None:
    sent = await found(uow, "ent-m", at=NOW)
    await send_to_social_care(uow, sent)
    draft = await found(uow, "ent-s", at=NOW + timedelta(hours=1))
    before = copy.deepcopy(stored(uow, sent))

    await deliver(uow, envelope(merged("ent-s", "ent-m")))

    after, kept = stored(uow, sent), stored(uow, draft)
    # What was sent is not rewritten: same subject (the draft holds the survivor for the
    # concern), state, concerns, destinations and progress; only a note is added.
    assert after.state is State.SUBMITTED and after.subject == before.subject
    assert (after.concerns, after.destinations, after.progress) == (
        before.concerns,
        before.destinations,
        before.progress,
    )
    assert after.evidence[: len(before.evidence)] == before.evidence
    [note] = identity_notes(after)
    assert kept.name in note and "never rewritten" in note
    assert kept.state is State.DRAFT and sent.name in identity_notes(kept)[0]
    # Findings about either id go to the draft, which holds the surviving subject.
    assert (await found(uow, "ent-m", event="late")).id == draft.id


async def test_a_sent_referral_alone_follows_the_surviving_entity(uow: FakeSafeguardingUnitOfWork) -> None:
    sent = await found(uow, "ent-m")
    await send_to_social_care(uow, sent)
    await deliver(uow, envelope(merged("ent-s", "ent-m")))
    after = stored(uow, sent)
    assert after.subject.entity_id == "ent-s" and after.state is State.SUBMITTED
    assert "now follows the surviving entity" in identity_notes(after)[0]
    assert (await found(uow, "ent-s", event="late")).id == sent.id  # dedup holds after the re-key


async def test_merges_out_of_order_end_on_the_last_survivor(uow: FakeSafeguardingUnitOfWork) -> None:
    m = await found(uow, "ent-m")
    await deliver(uow, envelope(merged("ent-t", "ent-s", change="c2")))  # S into T, seen first
    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c1")))  # M into S, seen late
    assert stored(uow, m).subject.entity_id == "ent-t"


async def test_a_merge_across_regions_tells_and_moves_nothing(uow: FakeSafeguardingUnitOfWork) -> None:
    s = await found(uow, "ent-s")
    m = await found(uow, "ent-m", at=NOW + timedelta(hours=1))
    await deliver(uow, envelope(ev.EntitiesMerged(entity="entities/ent-s", change_id="c-x")))
    assert stored(uow, m) == m  # which of this region's entities were merged is not in the event
    assert stored(uow, s).subject.entity_id == "ent-s" and "review" in identity_notes(stored(uow, s))[0]


# -- splits ----------------------------------------------------------------------------------


async def test_a_split_tells_the_referral_and_never_moves_its_subject(
    uow: FakeSafeguardingUnitOfWork,
) -> None:
    r = await found(uow, "ent-s")
    london = await found(uow, "ent-s", region=Region.LONDON)
    event = envelope(split("ent-s", moved=2))
    await deliver(uow, event)
    after = stored(uow, r)
    assert after.subject.entity_id == "ent-s" and after.state is State.DRAFT
    [note] = identity_notes(after)
    assert "c-split" in note and "2 of this region's records" in note and "review" in note
    assert stored(uow, london) == london
    events = len(uow.committed_events)
    await deliver(uow, event)
    again = copy.deepcopy(event.message)
    again.event_id = ""  # type: ignore[union-attr]
    await deliver(uow, envelope(again))  # type: ignore[arg-type]
    assert len(uow.committed_events) == events and len(identity_notes(stored(uow, r))) == 1


async def test_undoing_a_merge_puts_back_the_subject_it_moved(uow: FakeSafeguardingUnitOfWork) -> None:
    m = await found(uow, "ent-m")
    await send_to_social_care(uow, m)  # alone: it is re-keyed, not combined
    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c1")))
    assert stored(uow, m).subject.entity_id == "ent-s"

    await deliver(uow, envelope(split("ent-s", change="c2", undone="c1")))
    after = stored(uow, m)
    assert after.subject.entity_id == "ent-m" and "undid merge c1" in identity_notes(after)[-1]
    # The merged id stands for itself again: its findings join its referral, S's draft S's own.
    assert (await found(uow, "ent-m", event="m-later")).id == m.id
    assert (await found(uow, "ent-s", event="s-later")).id != m.id


async def test_undoing_a_merge_leaves_a_combined_case_for_review(uow: FakeSafeguardingUnitOfWork) -> None:
    older = await found(uow, "ent-m", at=NOW)
    newer = await found(uow, "ent-s", at=NOW + timedelta(hours=1))
    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c1")))
    await deliver(uow, envelope(split("ent-s", change="c2", undone="c1")))
    keeper = stored(uow, older)
    assert keeper.subject.entity_id == "ent-s" and keeper.is_open
    assert newer.name in identity_notes(keeper)[-1] and "more than one person" in identity_notes(keeper)[-1]
    assert stored(uow, newer).state is State.CLOSED


async def test_a_merge_arriving_after_its_undo_joins_nothing(uow: FakeSafeguardingUnitOfWork) -> None:
    m = await found(uow, "ent-m", at=NOW)
    s = await found(uow, "ent-s", at=NOW + timedelta(hours=1))
    await deliver(uow, envelope(split("ent-s", change="c2", undone="c1")))
    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c1")))
    assert stored(uow, m).subject.entity_id == "ent-m" and stored(uow, m).is_open
    assert stored(uow, s).is_open and not identity_notes(stored(uow, m))


# -- numbers linked to a person --------------------------------------------------------------


async def test_a_referral_on_a_bare_number_gets_the_person_once_linked(
    uow: FakeSafeguardingUnitOfWork,
) -> None:
    r = await found(uow, f"phone:{NUMBER}")
    london = await found(uow, f"phone:{NUMBER}", region=Region.LONDON)
    event = envelope(linked("ent-p", "+44 7700 900123"))
    await deliver(uow, event)
    after = stored(uow, r)
    assert after.subject.entity_id == "ent-p" and "now follows that entity" in identity_notes(after)[0]
    assert stored(uow, london) == london  # another region's referral on the same number
    events = len(uow.committed_events)
    await deliver(uow, event)
    assert len(uow.committed_events) == events
    # A finding computed before the link, naming the number, joins the person's referral.
    assert (await found(uow, f"phone:{NUMBER}", event="late")).id == r.id

    # The other region's own link moves its own referral only.
    await deliver(uow, envelope(linked("ent-q", NUMBER), Region.LONDON))
    assert stored(uow, london).subject.entity_id == "ent-q" and stored(uow, r).subject.entity_id == "ent-p"


def contact(victim_entity: str = "", victim_number: str = "") -> IncomingEvent:
    """comms' finding that the victim side was in contact with a registered sex offender."""
    message = comms_events.WatchlistContactDetected(
        list_a=comms.WatchlistRef(
            name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
        ),
        number_a="+447700900001",
        list_b=comms.WatchlistRef(name="regions/EMSOU/watchlists/v", kind=comms.WATCHLIST_KIND_VICTIM),
        number_b=victim_number,
        entity_id_b=victim_entity,
        contact_count=3,
    )
    e = build_event(message, domain="comms", source="toex/comms", region=Region.EMSOU)
    return decode(e.subject, e.payload, e.headers)


async def test_a_batch_of_findings_is_resolved_at_once_and_joins_who_they_are_now(
    uow: FakeSafeguardingUnitOfWork,
) -> None:
    survivor = await found(uow, "ent-t")
    person = await found(uow, f"phone:{NUMBER}", at=NOW + timedelta(hours=1))
    await deliver(uow, envelope(merged("ent-s", "ent-m", change="c1")))  # M into S
    await deliver(uow, envelope(merged("ent-t", "ent-s", change="c2")))  # then S into T
    await deliver(uow, envelope(linked("ent-p", NUMBER)))  # the number's referral follows P
    trigger_bus = MessageBus()
    triggers.subscribe(trigger_bus, "sg", lambda: NOW)
    prefetch = trigger_bus.prefetcher("sg-comms-triggers")
    handle = trigger_bus.dispatcher("sg-comms-triggers")
    assert prefetch is not None
    batch = [contact("ent-m"), contact(victim_number=NUMBER), contact("entities/ent-s"), contact("ent-new")]
    async with uow:
        await prefetch(batch, uow)
        # One lookup per step along the chains, not one per finding: M, S, the number and the
        # new id at once (finding M -> S, S -> T and the number's person), then T and P (nothing).
        assert uow.identity.batch_lookups == 2
        for event in batch:
            await handle(event, uow)
        await uow.commit()
    joined = {e.ref for e in stored(uow, survivor).evidence}
    assert {batch[0].event_id, batch[2].event_id} <= joined  # M and S are T now
    assert batch[1].event_id in {e.ref for e in stored(uow, person).evidence}  # the number is P's
    [new] = [r for r in uow.referrals.referrals.values() if r.subject.entity_id == "ent-new"]
    assert [e.ref for e in new.evidence if e.kind is EvidenceKind.EVENT] == [batch[3].event_id]
    assert len(uow.referrals.referrals) == 3


async def test_only_a_persons_record_moves_a_number_referral(uow: FakeSafeguardingUnitOfWork) -> None:
    r = await found(uow, f"phone:{NUMBER}")
    await deliver(uow, envelope(linked("phone-ent", NUMBER, kind=entity_pb2.RECORD_TYPE_PHONE)))
    await deliver(uow, envelope(linked("ent-p", "+447700900999")))
    assert stored(uow, r) == r


async def test_a_number_linked_to_a_second_person_is_told_once(uow: FakeSafeguardingUnitOfWork) -> None:
    r = await found(uow, f"phone:{NUMBER}")
    await deliver(uow, envelope(linked("ent-p", NUMBER)))
    await deliver(uow, envelope(linked("ent-q", NUMBER)))
    await deliver(uow, envelope(linked("ent-q", NUMBER)))  # the same link again, another event id
    after = stored(uow, r)
    assert after.subject.entity_id == "ent-p"  # not moved again
    assert len(identity_notes(after)) == 2 and "another person entity" in identity_notes(after)[1]


async def test_identity_events_without_a_change_id_are_dead_lettered(uow: FakeSafeguardingUnitOfWork) -> None:
    with pytest.raises(PermanentError):
        await deliver(uow, envelope(ev.EntitiesMerged(entity="entities/ent-s", merged=["entities/x"])))


def test_the_bus_takes_the_three_identity_events_under_one_consumer() -> None:
    assert bus.names == ["sg-identity"]
    assert sorted(s.rsplit(".", 1)[-1] for s in bus.subjects("sg-identity")) == [
        "EntitiesMerged",
        "EntitySplit",
        "RecordLinked",
    ]
