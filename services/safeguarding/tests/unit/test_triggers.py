from datetime import UTC, datetime

from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.events import build_event
from toex_common.events.envelope import decode
from toex_kernel.regions import Region
from toex_safeguarding.domain.values import AgeBand, Concern, EvidenceKind, RiskLevel
from toex_safeguarding.entrypoints.triggers import make_handler, triggers_for

from .fakes import FakeSafeguardingUnitOfWork

RSO = comms.WatchlistRef(
    name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
)
VICTIM = comms.WatchlistRef(name="regions/EMSOU/watchlists/v", kind=comms.WATCHLIST_KIND_POTENTIAL_VICTIM)
SUSPECT = comms.WatchlistRef(name="regions/EMSOU/watchlists/s", kind=comms.WATCHLIST_KIND_SUSPECT)


def incoming(message: object, domain: str = "comms", region: Region = Region.EMSOU) -> object:
    e = build_event(message, domain=domain, source="test", region=region)  # type: ignore[arg-type]
    return decode(e.subject, e.payload, e.headers)


def test_the_victim_side_of_a_watchlist_contact_is_the_subject() -> None:
    message = comms_events.WatchlistContactDetected(
        dataset="regions/EMSOU/datasets/d",
        job="regions/EMSOU/jobs/j",
        list_a=VICTIM,
        number_a="+447700900123",
        list_b=RSO,
        number_b="+447700900999",
        entity_id_b="rso-1",
        contact_count=3,
    )
    [t] = triggers_for(incoming(message))  # type: ignore[arg-type]
    assert t.subject_entity_id == "phone:+447700900123"  # no entity known: the number stands in
    assert t.concern is Concern.CHILD_SEXUAL_EXPLOITATION and t.risk_level is RiskLevel.HIGH
    assert t.region is Region.EMSOU and t.linked_job == "regions/EMSOU/jobs/j"
    assert {e.kind for e in t.evidence} == {EvidenceKind.EVENT, EvidenceKind.DATASET, EvidenceKind.JOB}
    assert "rso-1" not in str(t) and "+447700900999" not in str(
        t
    )  # nothing about the other party but its list


def test_contacts_without_a_victim_and_an_offender_trigger_nothing() -> None:
    for a, b in ((RSO, SUSPECT), (VICTIM, VICTIM)):
        message = comms_events.WatchlistContactDetected(list_a=a, number_a="+1", list_b=b, number_b="+2")
        assert triggers_for(incoming(message)) == []  # type: ignore[arg-type]
    suspect = comms_events.WatchlistContactDetected(
        list_a=SUSPECT, number_a="+1", list_b=VICTIM, entity_id_b="v-1"
    )
    [t] = triggers_for(incoming(suspect))  # type: ignore[arg-type]
    assert t.subject_entity_id == "v-1" and t.concern is Concern.OTHER


def test_safeguarding_jobs_trigger_per_subject_and_other_jobs_do_not() -> None:
    job = tasking_events.JobCreated(
        job="regions/ERSOU/jobs/j1",
        job_type=tasking_events.JOB_TYPE_SAFEGUARDING,
        priority=tasking_events.PRIORITY_URGENT,
        subject_entity_ids=["p-1", "p-2"],
        operation_name="Op KESTREL",
    )
    found = triggers_for(incoming(job, "tasking", Region.ERSOU))  # type: ignore[arg-type]
    assert [t.subject_entity_id for t in found] == ["p-1", "p-2"]
    assert all(
        t.concern is None and t.region is Region.ERSOU and t.risk_level is RiskLevel.HIGH for t in found
    )
    job.job_type = tasking_events.JOB_TYPE_ANPR
    assert triggers_for(incoming(job, "tasking")) == []  # type: ignore[arg-type]


def test_flagged_advert_number_is_a_potential_victim_of_sexual_exploitation() -> None:
    message = comms_events.AdvertNumberFlagged(
        number="+447700900555", entity_id="", dataset="regions/EMSOU/datasets/ads"
    )
    [t] = triggers_for(incoming(message))  # type: ignore[arg-type]
    assert t.subject_entity_id == "phone:+447700900555" and t.concern is Concern.SEXUAL_EXPLOITATION


def _network(network_id: str = "an-1", *, minor: bool = True) -> comms_events.AdvertNetworkDetected:
    return comms_events.AdvertNetworkDetected(
        dataset="regions/EMSOU/datasets/ads",
        job="regions/EMSOU/jobs/j1",
        network_id=network_id,
        numbers=["+447700900401", "+447700900402", "+447700900403"],
        advert_count=7,
        towns=["Derby", "Leicester"],
        minor=minor,
        minor_reasons=["advert b1: claimed age 16"] if minor else [],
        indicators=["indicator of a child: advert b1: claimed age 16"] if minor else ["movement"],
        score=100 if minor else 10,
    )


def test_an_advert_network_with_a_child_indicated_is_one_trigger_for_the_network() -> None:
    [t] = triggers_for(incoming(_network()))  # type: ignore[arg-type]
    assert t.subject_entity_id == "advert-network:an-1"
    assert t.concern is Concern.CHILD_SEXUAL_EXPLOITATION and t.risk_level is RiskLevel.HIGH
    assert t.age_band is AgeBand.CHILD
    assert t.linked_job == "regions/EMSOU/jobs/j1"
    assert "claimed age 16" in t.evidence[0].description and "3 numbers" in t.evidence[0].description
    assert [e.kind for e in t.evidence] == [EvidenceKind.EVENT, EvidenceKind.DATASET, EvidenceKind.JOB]


def test_an_advert_network_without_a_child_indicated_triggers_nothing() -> None:
    assert triggers_for(incoming(_network(minor=False))) == []  # type: ignore[arg-type]


async def test_one_draft_referral_per_network_however_often_it_is_found() -> None:
    uow = FakeSafeguardingUnitOfWork()
    handle = make_handler(lambda: datetime(2025, 4, 14, 9, 0, tzinfo=UTC))
    first = incoming(_network("an-1"))
    for event in (first, first, incoming(_network("an-1")), incoming(_network("an-2"))):
        async with uow:
            await handle(event, uow)
            await uow.commit()
    referrals = sorted(uow.referrals.referrals.values(), key=lambda r: r.subject.entity_id)
    assert [r.subject.entity_id for r in referrals] == ["advert-network:an-1", "advert-network:an-2"]
    one = referrals[0]
    # The same event twice adds nothing; the network found again adds its event as evidence.
    found = [e.ref for e in one.evidence if e.kind is EvidenceKind.EVENT]
    assert len(found) == 2 and found[0] == first.event_id  # type: ignore[attr-defined]
    assert one.concerns == [Concern.CHILD_SEXUAL_EXPLOITATION]
