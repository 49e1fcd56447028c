"""Safeguarding referral events shown on their linked job (the consumer `-referral-outcomes`):
each event is one change of the referral on the job, the job shows the referral as its latest
change says, and only a job of the event's region ever shows it."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import security_pb2
from toex_common.events import build_event, decode
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError
from toex_common.testing.fakes import FakeAuditSink, principal
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_tasking.adapters import mapping
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobType, Priority
from toex_tasking.entrypoints import consumers
from toex_tasking.service_layer import handlers

from .fakes import FakeTaskingUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)
SAFEGUARDING = "service-account-toex-safeguarding"
# What a referral's events never carry, and the free text a job is not told.
RETURN_REASON = "FREE TEXT: mother says the child is staying at 12 Acacia Road"
EVIDENCE_TEXT = "FREE TEXT: 3 calls with the RSO at 07700 900300"
EVIDENCE_REF = "regions/EMSOU/datasets/secret-cdr"


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, directory=demo_directory(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]


@pytest.fixture
def audit() -> FakeAuditSink:
    return FakeAuditSink()


async def new_job(deps: handlers.Deps, region: Region) -> str:
    job = await handlers.create_job(
        commands.CreateJob(
            actor=NC,
            region=region,
            requesting_unit="Derbyshire Constabulary",
            requesting_officer="DS A",
            operation_name="Op HERON",
            job_type=JobType.SAFEGUARDING,
            priority=Priority.ROUTINE,
            due_at=NOW + timedelta(days=5),
            description="",
            handling=Handling.C,
        ),
        deps,
    )
    return job.name


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def referral_name(region: Region = Region.EMSOU) -> str:
    return f"regions/{region.value}/referrals/{uuid.uuid4().hex[:16]}"


def event(
    message: Message,
    *,
    at: datetime,
    region: Region = Region.EMSOU,
    handling: int = security_pb2.HANDLING_CODE_C,
) -> Any:
    """A referral event as the safeguarding service publishes it, on `region`'s subject, as it
    arrives."""
    envelope = build_event(
        message,
        domain="safeguarding",
        source="toex/safeguarding",
        region=region,
        handling=handling,
        resource=message.referral,  # type: ignore[attr-defined]
        occurred_at=at,
    )
    return decode(envelope.subject, envelope.payload, envelope.headers)


def drafted(referral: str, job: str, *, state: int = sg.REFERRAL_STATE_DRAFT) -> Message:
    return sg_events.ReferralDrafted(
        referral=referral,
        linked_job=job,
        concerns=[sg.CONCERN_CHILD_SEXUAL_EXPLOITATION, sg.CONCERN_MODERN_SLAVERY],
        risk_level=sg.RISK_LEVEL_HIGH,
        created_by="trigger:WatchlistContactDetected",
        state=state,  # type: ignore[arg-type]
    )


def approved(referral: str, job: str) -> Message:
    return sg_events.ReferralApproved(
        referral=referral,
        linked_job=job,
        approved_by="supervisor.emsou",
        destinations=[sg.DESTINATION_CHILDRENS_SOCIAL_CARE, sg.DESTINATION_NRM],
        state=sg.REFERRAL_STATE_APPROVED,
    )


def a_whole_life(referral: str, job: str) -> list[Message]:
    """Every event of a referral's life, in order."""
    return [
        drafted(referral, job),
        sg_events.ReferralEvidenceAdded(
            referral=referral,
            linked_job=job,
            evidence=[
                sg.Evidence(
                    kind=sg.EVIDENCE_KIND_DATASET,
                    ref=EVIDENCE_REF,
                    description=EVIDENCE_TEXT,
                    added_by="analyst.emsou",
                ),
                sg.Evidence(kind=sg.EVIDENCE_KIND_EVENT, ref="ev-1", added_by="analyst.emsou"),
            ],
            state=sg.REFERRAL_STATE_DRAFT,
        ),
        sg_events.ReferralReturned(
            referral=referral,
            linked_job=job,
            returned_by="supervisor.emsou",
            reason=RETURN_REASON,
            state=sg.REFERRAL_STATE_DRAFT,
        ),
        approved(referral, job),
        sg_events.ReferralSubmitted(
            referral=referral,
            linked_job=job,
            destination=sg.DESTINATION_CHILDRENS_SOCIAL_CARE,
            submit_time=stamp(NOW),
            decision_due_time=stamp(NOW + timedelta(days=1)),
            state=sg.REFERRAL_STATE_SUBMITTED,
        ),
        sg_events.ReferralOverdue(
            referral=referral,
            linked_job=job,
            clock=sg.StatutoryClock(
                kind=sg.CLOCK_KIND_LOCAL_AUTHORITY_DECISION, due_time=stamp(NOW + timedelta(days=1))
            ),
            escalation=sg.ESCALATION_SUPERVISOR,
            risk_level=sg.RISK_LEVEL_MEDIUM,
            state=sg.REFERRAL_STATE_SUBMITTED,
        ),
        sg_events.ReferralDecisionRecorded(
            referral=referral,
            linked_job=job,
            destination=sg.DESTINATION_CHILDRENS_SOCIAL_CARE,
            decision=sg.Decision(
                kind=sg.DECISION_KIND_LOCAL_AUTHORITY,
                outcome=sg.DECISION_OUTCOME_POSITIVE,
                detail="strategy discussion convened",
                decision_time=stamp(NOW + timedelta(days=2)),
                recorded_by="safeguarding_officer.emsou",
            ),
            state=sg.REFERRAL_STATE_DECIDED,
        ),
        sg_events.ReferralClosed(
            referral=referral,
            linked_job=job,
            reason="child safeguarded",
            closed_by="safeguarding_officer.emsou",
            previous_state=sg.REFERRAL_STATE_DECIDED,
            state=sg.REFERRAL_STATE_CLOSED,
        ),
    ]


async def consume(uow: FakeTaskingUnitOfWork, audit: FakeAuditSink, incoming: Any) -> None:
    """As the consumer base runs the handler: in a unit of work that commits after it."""
    async with uow:
        await consumers.make_referral_handler(audit)(incoming, uow)
        await uow.commit()


async def shown(deps: handlers.Deps, job: str, actor: Any = NC) -> pb.Job:
    """The job as GetJob answers it."""
    region, job_id = mapping.job_ref(job)
    found = await handlers.get_job(commands.GetJob(actor, region, job_id), deps)
    return mapping.job_to_proto(found, now=NOW)


async def test_a_referral_life_shows_on_its_job_with_its_state_and_changes(deps, uow, audit) -> None:
    job = await new_job(deps, Region.EMSOU)
    referral = referral_name()
    life = [event(m, at=NOW + timedelta(minutes=i)) for i, m in enumerate(a_whole_life(referral, job))]
    for incoming in life:
        await consume(uow, audit, incoming)

    [linked] = (await shown(deps, job)).linked_referrals
    assert (linked.referral, linked.state, linked.risk_level) == (referral, "CLOSED", "MEDIUM")
    assert list(linked.concerns) == ["CHILD_SEXUAL_EXPLOITATION", "MODERN_SLAVERY"]
    assert linked.handling == security_pb2.HANDLING_CODE_C
    assert linked.update_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=7)
    assert [(c.kind, c.state, c.actor) for c in linked.changes] == [
        (pb.REFERRAL_CHANGE_KIND_DRAFTED, "DRAFT", "trigger:WatchlistContactDetected"),
        (pb.REFERRAL_CHANGE_KIND_EVIDENCE_ADDED, "DRAFT", "analyst.emsou"),
        (pb.REFERRAL_CHANGE_KIND_RETURNED, "DRAFT", "supervisor.emsou"),
        (pb.REFERRAL_CHANGE_KIND_APPROVED, "APPROVED", "supervisor.emsou"),
        (pb.REFERRAL_CHANGE_KIND_SUBMITTED, "SUBMITTED", ""),
        (pb.REFERRAL_CHANGE_KIND_OVERDUE, "SUBMITTED", ""),
        (pb.REFERRAL_CHANGE_KIND_DECISION_RECORDED, "DECIDED", "safeguarding_officer.emsou"),
        (pb.REFERRAL_CHANGE_KIND_CLOSED, "CLOSED", "safeguarding_officer.emsou"),
    ]
    assert [c.event_id for c in linked.changes] == [e.event_id for e in life]
    summaries = [c.summary for c in linked.changes]
    assert summaries == [
        "Drafted (child sexual exploitation, modern slavery; risk high) by trigger:WatchlistContactDetected",
        "Evidence added: 2 items (dataset, event) by analyst.emsou",
        "Returned to draft by supervisor.emsou",
        "Approved by supervisor.emsou; going to: childrens social care, nrm",
        "Sent to childrens social care on 2026-11-22 09:00Z; decision due by 2026-11-23 09:00Z",
        "Overdue: local authority decision due 2026-11-23 09:00Z; escalated to the supervisor; risk medium",
        "Childrens social care decision local authority positive on 2026-11-24: strategy discussion convened",
        "Closed from decided by safeguarding_officer.emsou: child safeguarded",
    ]
    # Neither a return's reason nor an evidence item's description or reference reaches the job.
    whole = (await shown(deps, job)).SerializeToString()
    for hidden in (RETURN_REASON, EVIDENCE_TEXT, EVIDENCE_REF):
        assert hidden.encode() not in whole

    # Each change is audited as the safeguarding service acting in EMSOU, for the referral.
    assert len(audit.entries) == len(life)
    for entry, incoming in zip(audit.entries, life, strict=True):
        assert (entry.outcome, entry.purpose, entry.resources) == ("OK", referral, (job,))
        assert (entry.actor_username, entry.actor_region, entry.actor_roles) == (
            SAFEGUARDING,
            "EMSOU",
            ("service",),
        )
        assert entry.action == f"consume {incoming.event_type}"
        assert entry.peer == f"nats:{incoming.subject}"
    # The job itself did not change: stored once (created), no job event since.
    assert uow.jobs.jobs[job.rsplit("/", 1)[-1]].revision == 1
    assert [e.event_type.rsplit(".", 1)[-1] for e in uow.committed_events] == ["JobCreated"]


async def test_the_latest_change_wins_whatever_order_the_events_arrive_in(deps, uow, audit) -> None:
    job = await new_job(deps, Region.EMSOU)
    referral = referral_name()
    # The approval arrives before the draft it follows (a redelivery, a slow replica).
    await consume(uow, audit, event(approved(referral, job), at=NOW + timedelta(hours=1)))
    await consume(uow, audit, event(drafted(referral, job), at=NOW))
    [linked] = (await shown(deps, job)).linked_referrals
    assert linked.state == "APPROVED"
    assert linked.update_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=1)
    # What only the draft told is kept: its concerns and risk.
    assert (list(linked.concerns), linked.risk_level) == (
        ["CHILD_SEXUAL_EXPLOITATION", "MODERN_SLAVERY"],
        "HIGH",
    )
    assert [c.kind for c in linked.changes] == [
        pb.REFERRAL_CHANGE_KIND_DRAFTED,
        pb.REFERRAL_CHANGE_KIND_APPROVED,
    ]

    # The same event delivered again (past the inbox) is still one change.
    again = event(approved(referral, job), at=NOW + timedelta(hours=2))
    await consume(uow, audit, again)
    await consume(uow, audit, again)
    assert len((await shown(deps, job)).linked_referrals[0].changes) == 3


async def test_an_event_of_an_earlier_version_without_a_state_leaves_the_state_as_it_was(
    deps, uow, audit
) -> None:
    job = await new_job(deps, Region.EMSOU)
    referral = referral_name()
    await consume(uow, audit, event(approved(referral, job), at=NOW))
    await consume(
        uow, audit, event(drafted(referral, job, state=sg.REFERRAL_STATE_UNSPECIFIED), at=NOW + timedelta(1))
    )
    [linked] = (await shown(deps, job)).linked_referrals
    assert linked.state == "APPROVED" and linked.changes[-1].state == ""


async def test_a_referral_event_for_another_region_job_is_refused_and_never_shown(deps, uow, audit) -> None:
    emsou_job, ersou_job = await new_job(deps, Region.EMSOU), await new_job(deps, Region.ERSOU)
    ersou_id = ersou_job.rsplit("/", 1)[-1]
    referral = referral_name()
    # Published on EMSOU's subject (all a leaked EMSOU credential allows), naming ERSOU's job...
    with pytest.raises(PermanentError, match="a referral of EMSOU may not be shown on a job of ERSOU"):
        await consume(uow, audit, event(drafted(referral, ersou_job), at=NOW))
    # ...or ERSOU's job under EMSOU's name, or a job EMSOU does not hold.
    for missing in (f"regions/EMSOU/jobs/{ersou_id}", f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"):
        with pytest.raises(PermanentError, match="not found"):
            await consume(uow, audit, event(drafted(referral, missing), at=NOW))
    # ...or another region's referral on EMSOU's own job, or a job that is no job's name.
    with pytest.raises(PermanentError, match="a referral of EMSOU"):
        await consume(uow, audit, event(drafted(referral_name(Region.ERSOU), emsou_job), at=NOW))
    with pytest.raises(PermanentError, match="linked_job"):
        await consume(uow, audit, event(drafted(referral, "jobs/abc"), at=NOW))
    for job in (emsou_job, ersou_job):
        assert list((await shown(deps, job)).linked_referrals) == []
    assert uow.referral_changes.changes == {} and audit.entries == []


async def test_a_national_event_shows_on_national_jobs_only(deps, uow, audit) -> None:
    """The hub's region sees every region's jobs; the rule is the region, not what the actor
    could see."""
    emsou_job, national_job = await new_job(deps, Region.EMSOU), await new_job(deps, Region.NATIONAL)
    national_referral = referral_name(Region.NATIONAL)
    with pytest.raises(PermanentError, match="NATIONAL may not be shown on a job of EMSOU"):
        await consume(
            uow, audit, event(drafted(national_referral, emsou_job), at=NOW, region=Region.NATIONAL)
        )
    await consume(uow, audit, event(drafted(national_referral, national_job), at=NOW, region=Region.NATIONAL))
    assert list((await shown(deps, emsou_job)).linked_referrals) == []
    [linked] = (await shown(deps, national_job)).linked_referrals
    assert linked.referral == national_referral
    assert audit.entries[0].actor_region == "NATIONAL"


async def test_a_referral_linked_to_no_job_is_passed_over(deps, uow, audit) -> None:
    await new_job(deps, Region.EMSOU)
    await consume(uow, audit, event(drafted(referral_name(), ""), at=NOW))
    assert uow.referral_changes.changes == {} and audit.entries == []


async def test_a_referral_linked_to_another_job_since_shows_there_only(deps, uow, audit) -> None:
    first, second = await new_job(deps, Region.EMSOU), await new_job(deps, Region.EMSOU)
    referral = referral_name()
    await consume(uow, audit, event(drafted(referral, first), at=NOW))
    assert [r.referral for r in (await shown(deps, first)).linked_referrals] == [referral]
    await consume(uow, audit, event(approved(referral, second), at=NOW + timedelta(hours=1)))
    # A late event naming the first job changes nothing: the latest change names the second.
    await consume(uow, audit, event(drafted(referral, first), at=NOW + timedelta(minutes=30)))
    assert list((await shown(deps, first)).linked_referrals) == []
    [linked] = (await shown(deps, second)).linked_referrals
    assert linked.state == "APPROVED" and [c.kind for c in linked.changes] == [
        pb.REFERRAL_CHANGE_KIND_APPROVED
    ]


async def test_handling_follows_the_latest_event_label(deps, uow, audit) -> None:
    job = await new_job(deps, Region.EMSOU)
    referral = referral_name()
    await consume(uow, audit, event(drafted(referral, job), at=NOW, handling=security_pb2.HANDLING_CODE_P))
    assert (await shown(deps, job)).linked_referrals[0].handling == security_pb2.HANDLING_CODE_P
    await consume(uow, audit, event(approved(referral, job), at=NOW + timedelta(1)))
    assert (await shown(deps, job)).linked_referrals[0].handling == security_pb2.HANDLING_CODE_C


async def test_nothing_is_shown_or_audited_for_a_change_whose_transaction_rolls_back(
    deps, uow, audit
) -> None:
    job = await new_job(deps, Region.EMSOU)
    async with uow:
        await consumers.make_referral_handler(audit)(event(drafted(referral_name(), job), at=NOW), uow)
        await uow.rollback()  # the commit failed
    assert list((await shown(deps, job)).linked_referrals) == [] and audit.entries == []


async def test_whoever_reads_the_job_sees_its_referrals_and_lists_leave_out_their_changes(
    deps, uow, audit
) -> None:
    job = await new_job(deps, Region.EMSOU)
    referral = referral_name()
    await consume(uow, audit, event(drafted(referral, job), at=NOW))
    assert [r.referral for r in (await shown(deps, job, SUP)).linked_referrals] == [referral]
    page, _ = await handlers.list_jobs(
        commands.ListJobs(SUP, Region.EMSOU, frozenset(), "", None, 10, None), deps
    )
    [listed] = [mapping.job_to_proto(j, now=NOW, with_notes=False) for j in page]
    [linked] = listed.linked_referrals
    assert (linked.referral, linked.state, list(linked.changes)) == (referral, "DRAFT", [])


def test_every_referral_event_is_consumed_under_one_durable_name_beside_the_job_notes() -> None:
    bus = MessageBus()
    consumers.subscribe(bus, "tasking", FakeAuditSink())
    assert bus.names == ["tasking-job-notes", "tasking-referral-outcomes"]
    assert sorted(bus.subjects("tasking-referral-outcomes", "emsou")) == sorted(
        f"toex.emsou.safeguarding.{name}"
        for name in (
            "ReferralDrafted",
            "ReferralEvidenceAdded",
            "ReferralApproved",
            "ReferralReturned",
            "ReferralSubmitted",
            "ReferralOverdue",
            "ReferralDecisionRecorded",
            "ReferralClosed",
        )
    )
