"""A fetched batch of findings as the trigger consumer takes it, over real PostgreSQL: the
batch's subjects are looked up in the region's aliases at once, before the handlers run, and
each finding still joins the referral of whom its subject is now."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.entity.events.v1 import events_pb2 as entity_events
from toex_common.db import create_engine, session_factory
from toex_common.events import build_event
from toex_common.events.bus import MessageBus
from toex_common.events.envelope import IncomingEvent, decode
from toex_common.migrations import upgrade
from toex_kernel.regions import Region
from toex_safeguarding.__main__ import migrations_dir
from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork
from toex_safeguarding.domain.model import Referral, Subject
from toex_safeguarding.domain.values import Concern, EvidenceKind, Handling, RiskLevel
from toex_safeguarding.entrypoints import identity, triggers
from toex_safeguarding.service_layer.ports import OpenReferralExists

pytestmark = pytest.mark.integration

NOW = datetime(2025, 4, 14, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database)
    yield engine
    await engine.dispose()


def incoming(message: Any, domain: str) -> IncomingEvent:
    e = build_event(message, domain=domain, source=f"toex/{domain}", region=Region.EMSOU)
    return decode(e.subject, e.payload, e.headers)


def contact(victim: str) -> IncomingEvent:
    return incoming(
        comms_events.WatchlistContactDetected(
            list_a=comms.WatchlistRef(
                name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
            ),
            number_a="+447700900001",
            list_b=comms.WatchlistRef(name="regions/EMSOU/watchlists/v", kind=comms.WATCHLIST_KIND_VICTIM),
            entity_id_b=victim,
            contact_count=3,
        ),
        "comms",
    )


def merged(into: str, other: str) -> IncomingEvent:
    return incoming(
        entity_events.EntitiesMerged(
            entity=f"entities/{into}", merged=[f"entities/{other}"], change_id=uuid.uuid4().hex
        ),
        "entity",
    )


def alias_statements(engine: Any) -> Callable[[], int]:
    """How many statements on the aliases table the engine has run since this was called."""
    seen = 0

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal seen
        seen += "subject_aliases" in statement

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    return lambda: seen


async def test_a_batch_of_findings_is_resolved_at_once_and_joins_who_they_are_now(engine: Any) -> None:
    sessions = session_factory(engine)
    bus = MessageBus()
    identity.subscribe(bus, "sg", lambda: NOW)
    triggers.subscribe(bus, "sg", lambda: NOW)
    apply = bus.dispatcher("sg-identity")
    handle = bus.dispatcher("sg-comms-triggers")
    prefetch = bus.prefetcher("sg-comms-triggers")
    assert prefetch is not None
    m, s, t = (f"ent-{uuid.uuid4().hex[:8]}" for _ in range(3))

    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        await handle(contact(t), uow)  # T's referral
        await uow.commit()
    for change in (merged(s, m), merged(t, s)):  # M into S, then S into T
        async with SqlSafeguardingUnitOfWork(sessions) as uow:
            await apply(change, uow)
            await uow.commit()

    batch = [contact(m), contact(f"entities/{s}"), contact("ent-new-" + m)]
    asked = alias_statements(engine)
    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        await prefetch(batch, uow)
        looked_up = asked()
        for found in batch:
            await handle(found, uow)
        assert asked() == looked_up  # the handlers found every answer in the batch's lookups
        await uow.commit()
    assert looked_up == 2  # M, S and the new id at once; then T (M -> S -> T)

    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        [joined] = await uow.referrals.open_about(Region.EMSOU, {t})
        [drafted] = await uow.referrals.open_about(Region.EMSOU, {"ent-new-" + m})
        assert not await uow.referrals.open_about(Region.EMSOU, {m, s})
    refs = [e.ref for e in joined.evidence if e.kind is EvidenceKind.EVENT]
    assert batch[0].event_id in refs and batch[1].event_id in refs
    assert [e.ref for e in drafted.evidence if e.kind is EvidenceKind.EVENT] == [batch[2].event_id]


async def test_what_a_unit_of_work_looked_up_follows_its_own_alias_changes(engine: Any) -> None:
    sessions = session_factory(engine)
    a, b = (f"ent-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        assert await uow.identity.aliases(Region.EMSOU, [a]) == {}
        await uow.identity.add_alias(Region.EMSOU, a, b, "c-1")
        assert await uow.identity.alias(Region.EMSOU, a) == b
        assert await uow.identity.aliases(Region.EMSOU, [a, b]) == {a: b}
        assert await uow.identity.aliases(Region.LONDON, [a]) == {}  # another region's own
        await uow.identity.drop_aliases(Region.EMSOU, "c-1")
        assert await uow.identity.alias(Region.EMSOU, a) is None
        assert await uow.identity.aliases(Region.EMSOU, [a]) == {}


def draft(subject: str, *concerns: Concern) -> Referral:
    return Referral.draft(
        region=Region.EMSOU,
        subject=Subject(subject),
        concerns=list(concerns),
        risk_level=RiskLevel.HIGH,
        evidence=[],
        destinations=[],
        linked_job="",
        handling=Handling.C,
        created_by="test",
        now=NOW,
    )


async def test_a_referral_claims_all_its_subjects_keys_or_none(engine: Any) -> None:
    sessions = session_factory(engine)
    subject = f"ent-{uuid.uuid4().hex[:8]}"
    cse, trafficking = Concern.CHILD_SEXUAL_EXPLOITATION, Concern.TRAFFICKING
    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        first = draft(subject, cse)
        await uow.referrals.add(first)
        await uow.commit()
    async with SqlSafeguardingUnitOfWork(sessions) as uow:
        with pytest.raises(OpenReferralExists) as taken:
            await uow.referrals.add(draft(subject, trafficking, cse))
        assert taken.value.referral_id == first.id and taken.value.concern is cse
        # Its claim of the concern nobody held was given back: another may take it.
        other = draft(subject, trafficking)
        await uow.referrals.add(other)
        assert (await uow.referrals.find_open(Region.EMSOU, subject, trafficking)).id == other.id  # type: ignore[union-attr]
        both = draft(f"{subject}-2", trafficking, cse)  # every key claimed at once
        await uow.referrals.add(both)
        for concern in (trafficking, cse):
            assert (await uow.referrals.find_open(Region.EMSOU, f"{subject}-2", concern)).id == both.id  # type: ignore[union-attr]
        await uow.commit()
