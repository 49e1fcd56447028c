"""Identity changes against the real service: entity events on NATS (published as the entity
service publishes them, one copy per region) re-key and combine the region's referrals over
PostgreSQL; the other region's referrals wait for their own copy; a redelivered event changes
nothing; a later finding about the merged id joins the case."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex_common.events import build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region
from toex_safeguarding.adapters.tables import open_referral_keys
from toex_safeguarding.domain.commands import Trigger
from toex_safeguarding.domain.model import Evidence
from toex_safeguarding.domain.values import Concern, EvidenceKind
from toex_safeguarding.service_layer import handlers

from .conftest import Running
from .test_safeguarding_service import NC, contact_event, eventually, md, publish

pytestmark = pytest.mark.integration


async def finding(sg: Running, region: Region, subject: str, concern: Concern, at: datetime) -> str:
    """A referral drafted by a finding about `subject` (as comms' findings draft them)."""
    event = f"ev-{uuid.uuid4().hex}"
    trigger = Trigger(
        source_event_id=event,
        source_type="test.Finding",
        region=region,
        subject_entity_id=subject,
        concern=concern,
        evidence=[Evidence(EvidenceKind.EVENT, event, "contacts with a registered sex offender")],
    )
    async with sg.app.deps.uow() as uow:
        referral = await handlers.draft_from_trigger(trigger, uow, at)
        await uow.commit()
    return referral.name


async def get(sg: Running, name: str) -> pb.Referral:
    return (await sg.stub.GetReferral(pb.GetReferralRequest(name=name), metadata=md(sg.token(NC)))).referral


def entity_event(message: Message, region: Region) -> object:
    """`region`'s copy, an event of its own (its own id and label), as the entity service sends."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("event_id")  # type: ignore[arg-type]
    return build_event(copy, domain="entity", source="toex/entity", region=region)


def notes(referral: pb.Referral) -> list[str]:
    return [e.description for e in referral.evidence if e.added_by.startswith("identity:")]


async def test_entity_events_rekey_and_combine_each_regions_own_referrals(
    safeguarding: Running, nats_server
) -> None:
    sg = safeguarding
    m, s, p = (f"ent-{uuid.uuid4().hex[:8]}" for _ in range(3))
    number = f"+4477009{uuid.uuid4().int % 10**5:05d}"
    change = uuid.uuid4().hex[:16]
    t0 = datetime.now(UTC) - timedelta(hours=3)
    older = await finding(sg, Region.EMSOU, m, Concern.CHILD_SEXUAL_EXPLOITATION, t0)
    newer = await finding(sg, Region.EMSOU, f"entities/{s}", Concern.TRAFFICKING, t0 + timedelta(hours=1))
    on_number = await finding(sg, Region.EMSOU, f"phone:{number}", Concern.SEXUAL_EXPLOITATION, t0)
    ersou_m = await finding(sg, Region.ERSOU, m, Concern.CHILD_SEXUAL_EXPLOITATION, t0)
    ersou_s = await finding(sg, Region.ERSOU, s, Concern.CHILD_SEXUAL_EXPLOITATION, t0 + timedelta(hours=1))

    merge = ev.EntitiesMerged(entity=f"entities/{s}", merged=[f"entities/{m}"], change_id=change)
    emsou_merge = entity_event(merge, Region.EMSOU)
    link = entity_event(
        ev.RecordLinked(
            entity=f"entities/{p}",
            entity_id=p,
            entity_type=entity_pb2.RECORD_TYPE_PERSON,
            record=f"regions/EMSOU/records/{uuid.uuid4().hex[:8]}",
            identifiers=entity_pb2.StrongIdentifiers(e164_numbers=[number]),
        ),
        Region.EMSOU,
    )
    # EMSOU's copy of the merge, delivered twice, and the record linked with the number.
    await publish(nats_server.url, [emsou_merge, emsou_merge, link])

    async def combined() -> bool:
        return (await get(sg, newer)).state == pb.REFERRAL_STATE_CLOSED

    await eventually(combined, what="the newer draft closed as merged into the older")
    keeper, gone = await get(sg, older), await get(sg, newer)
    assert keeper.state == pb.REFERRAL_STATE_DRAFT and keeper.subject.entity_id == s
    assert list(keeper.concerns) == [pb.CONCERN_CHILD_SEXUAL_EXPLOITATION, pb.CONCERN_TRAFFICKING]
    assert gone.close_reason.startswith(f"merged into {older}")
    # Both trails: the closed one keeps its own, and the case holds a copy of it.
    assert {e.ref for e in gone.evidence} <= {e.ref for e in keeper.evidence}
    assert len(notes(keeper)) == 1 and change in notes(keeper)[0]  # told once: redelivery did nothing

    async def followed() -> bool:
        return (await get(sg, on_number)).subject.entity_id == p

    await eventually(followed, what="the referral on the bare number following the person")

    # ERSOU's referrals are ERSOU's copy's to change, not EMSOU's.
    assert (await get(sg, ersou_m)).subject.entity_id == m and not notes(await get(sg, ersou_m))
    assert (await get(sg, ersou_s)).state == pb.REFERRAL_STATE_DRAFT
    await publish(nats_server.url, [entity_event(merge, Region.ERSOU)])

    async def ersou_combined() -> bool:
        return (await get(sg, ersou_s)).state == pb.REFERRAL_STATE_CLOSED

    await eventually(ersou_combined, what="ERSOU's copy combining ERSOU's drafts")
    assert (await get(sg, ersou_m)).subject.entity_id == s
    assert len(notes(await get(sg, older))) == 1  # EMSOU's case untouched by ERSOU's copy

    # The keys moved: one open referral per subject, so a late finding that still names the
    # merged id joins the case instead of drafting another.
    async with sg.app.engine.connect() as conn:
        keys = (
            await conn.execute(
                select(open_referral_keys.c.subject_entity_id, open_referral_keys.c.concern).where(
                    open_referral_keys.c.referral_id == older.rsplit("/", 1)[-1]
                )
            )
        ).all()
    assert sorted(keys) == [(s, "CHILD_SEXUAL_EXPLOITATION"), (s, "TRAFFICKING")]
    await publish(nats_server.url, [contact_event("", m, dataset="regions/EMSOU/datasets/late")])

    async def joined() -> bool:
        return any(e.ref == "regions/EMSOU/datasets/late" for e in (await get(sg, older)).evidence)

    await eventually(joined, what="the late finding about the merged id joining the case")

    published = await stream_messages(
        nats_server.url,
        "toex.emsou.safeguarding.>",
        until=lambda found: any(msg.headers and msg.headers.get("ce-subject") == newer for msg in found),
    )
    ours = [msg for msg in published if msg.headers and msg.headers.get("ce-subject") in (older, newer)]
    closed = [
        sg_events.ReferralClosed.FromString(msg.data)
        for msg in ours
        if msg.subject.endswith(".ReferralClosed")
    ]
    assert [c.referral for c in closed] == [newer]
    for message in ours:
        assert m.encode() not in message.data and s.encode() not in message.data  # never the subject
