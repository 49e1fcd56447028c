"""The inbox with fakes: each source routes to its recipients, nobody sees another region's
items unless addressed by name, a redelivered event makes no second item, read state is each
user's own, and a watch sees only the caller's new items."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.entity.v1 import entity_pb2
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import sync_pb2
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import IncomingEvent, build_event, decode
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError
from toex_common.testing.fakes import principal
from toex_kernel.errors import InvalidArgument, NotFound, OutOfScope, PermissionDenied
from toex_kernel.policy import MethodPolicy
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region
from toex_tasking.adapters import inbox_mapping
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands, policy
from toex_tasking.domain.inbox import (
    Cursor,
    InboxFilter,
    InboxItem,
    ItemType,
    Notice,
    Recipient,
    Source,
    submission_answer,
)
from toex_tasking.domain.model import Handling, JobType, Priority
from toex_tasking.entrypoints import inbox_consumers
from toex_tasking.service_layer import handlers, inbox

from .fakes import FakeTaskingUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
NC_EMSOU = principal("national_coordinator.emsou", Role.NATIONAL_COORDINATOR)
SUP_EMSOU = principal("supervisor.emsou", Role.SUPERVISOR)
SUP2_EMSOU = principal("supervisor2.emsou", Role.SUPERVISOR, Region.EMSOU)
SUP_ERSOU = principal("supervisor.ersou", Role.SUPERVISOR)
RES_EMSOU = principal("researcher.emsou", Role.RESEARCHER)
RES_LONDON = principal("researcher.london", Role.RESEARCHER)
SAFE_EMSOU = principal("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)
SAFE_ERSOU = principal("safeguarding_officer.ersou", Role.SAFEGUARDING_OFFICER)


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def event(
    message: Message, region: Region, *, handling: int = security_pb2.HANDLING_CODE_C, when: datetime = NOW
) -> IncomingEvent:
    """`message` as its producer publishes it on `region`'s subject."""
    domain = message.DESCRIPTOR.full_name.split(".")[1]
    envelope = build_event(
        message, domain=domain, source=f"toex/{domain}", region=region, handling=handling, occurred_at=when
    )
    return decode(envelope.subject, envelope.payload, envelope.headers)


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork) -> handlers.Deps:
    return handlers.Deps(
        uow=lambda: uow,  # type: ignore[arg-type,return-value]
        directory=demo_directory(),
        clock=lambda: NOW,
        watch_poll_seconds=0.0,
        watch_seconds=0.0,
    )


async def consume(uow: FakeTaskingUnitOfWork, incoming: IncomingEvent) -> None:
    """As the consumer base runs the registered handler: in a unit of work that commits after it."""
    bus = MessageBus()
    inbox_consumers.subscribe(bus, "tasking", lambda: NOW)
    name = inbox_consumers.consumer_name("tasking", type(incoming.message))  # type: ignore[arg-type]
    async with uow:
        await bus.dispatcher(name)(incoming, uow)
        await uow.commit()


def addressed(uow: FakeTaskingUnitOfWork) -> dict[str, ItemType]:
    """Who was addressed, and with what, by what the inbox holds."""
    return {i.recipient.addressed_to: i.item_type for i in uow.inbox.items.values()}


async def seen_by(deps: handlers.Deps, actor: Principal, keep: InboxFilter | None = None) -> list[InboxItem]:
    items, _ = await inbox.list_items(commands.ListInboxItems(actor, keep or InboxFilter(), 100), deps)
    return items


async def new_job(deps: handlers.Deps, region: Region, *assignees: str) -> str:
    job = await handlers.create_job(
        commands.CreateJob(
            actor=NC,
            region=region,
            requesting_unit="Derbyshire Constabulary",
            requesting_officer="DS A",
            operation_name="Op HERON",
            job_type=JobType.COMMS_ANALYSIS,
            priority=Priority.URGENT,
            due_at=NOW + timedelta(days=5),
            description="",
            handling=Handling.C,
        ),
        deps,
    )
    if assignees:
        await handlers.assign_job(commands.AssignJob(NC, region, job.id, list(assignees)), deps)
    return job.name


def job_ref(region: Region = Region.EMSOU) -> str:
    return f"regions/{region.value}/jobs/{uuid.uuid4().hex[:16]}"


def assignee(username: str, region: Region) -> tasking_events.Assignee:
    return tasking_events.Assignee(username=username, region=region.to_proto())  # type: ignore[arg-type]


# --- each source, its recipients ------------------------------------------------------------


async def test_an_overdue_job_goes_to_the_owning_region_supervisors_and_the_national_coordinators(
    uow,
) -> None:
    job = job_ref()
    await consume(
        uow,
        event(
            tasking_events.JobOverdue(
                job=job,
                due_time=stamp(NOW - timedelta(hours=2)),
                state=tasking_events.JOB_STATE_ASSIGNED,
                priority=tasking_events.PRIORITY_URGENT,
                assignees=[assignee("researcher.london", Region.LONDON)],
            ),
            Region.EMSOU,
        ),
    )
    assert addressed(uow) == {
        "supervisor@EMSOU": ItemType.JOB_OVERDUE,
        "national_coordinator@NATIONAL": ItemType.JOB_OVERDUE,
    }
    item = next(iter(uow.inbox.items.values()))
    assert item.resource == job and item.source.region is Region.EMSOU
    assert item.summary == "Overdue since 2026-11-22 07:00Z: assigned, urgent priority"


async def test_an_assignment_goes_to_each_researcher_added(uow) -> None:
    job = job_ref()
    await consume(
        uow,
        event(
            tasking_events.JobAssigned(
                job=job,
                added=[
                    assignee("researcher.london", Region.LONDON),
                    assignee("researcher.tarian", Region.TARIAN),
                ],
                assigned_by="national_coordinator.national",
                job_type=tasking_events.JOB_TYPE_COMMS_ANALYSIS,
            ),
            Region.EMSOU,
        ),
    )
    assert addressed(uow) == {
        "researcher.london": ItemType.JOB_ASSIGNED,
        "researcher.tarian": ItemType.JOB_ASSIGNED,
    }
    assert {i.summary for i in uow.inbox.items.values()} == {
        "Assigned to you (comms analysis) by national_coordinator.national"
    }


async def test_a_reassignment_tells_the_new_holder_and_takes_the_previous_off(uow) -> None:
    await consume(
        uow,
        event(
            tasking_events.JobReassigned(
                job=job_ref(),
                previous=[
                    assignee("researcher.emsou", Region.EMSOU),
                    assignee("researcher.tarian", Region.TARIAN),
                ],
                assignee=assignee("researcher.london", Region.LONDON),
                reason="Mr Example's phone is the key: EMSOU at capacity",
                reassigned_by="supervisor.emsou",
                job_type=tasking_events.JOB_TYPE_ANPR,
            ),
            Region.EMSOU,
        ),
    )
    assert addressed(uow) == {
        "researcher.london": ItemType.JOB_ASSIGNED,
        "researcher.emsou": ItemType.JOB_UNASSIGNED,
        "researcher.tarian": ItemType.JOB_UNASSIGNED,
    }
    # The reason is free text: it stays on the job.
    assert not any("Example" in i.summary for i in uow.inbox.items.values())


async def test_a_reassignment_to_one_of_the_holders_tells_only_the_others(uow) -> None:
    await consume(
        uow,
        event(
            tasking_events.JobReassigned(
                job=job_ref(),
                previous=[
                    assignee("researcher.emsou", Region.EMSOU),
                    assignee("researcher.london", Region.LONDON),
                ],
                assignee=assignee("researcher.london", Region.LONDON),
                reassigned_by="supervisor.emsou",
            ),
            Region.EMSOU,
        ),
    )
    assert addressed(uow) == {"researcher.emsou": ItemType.JOB_UNASSIGNED}


async def test_feedback_goes_to_the_job_assignees(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU, "researcher.emsou", "researcher.london")
    await consume(
        uow,
        event(
            tasking_events.FeedbackRecorded(
                job=job, rating=4, comment="Ms Victim was found thanks to it", recorded_by="supervisor.emsou"
            ),
            Region.EMSOU,
        ),
    )
    assert addressed(uow) == {
        "researcher.emsou": ItemType.FEEDBACK_RECORDED,
        "researcher.london": ItemType.FEEDBACK_RECORDED,
    }
    # The rating, not the officer's comment (free text that may name a person).
    assert {i.summary for i in uow.inbox.items.values()} == {
        "Feedback recorded: rated 4/5 by supervisor.emsou"
    }


async def test_feedback_on_a_job_of_another_region_than_the_subject_is_refused(deps, uow) -> None:
    ersou_job = await new_job(deps, Region.ERSOU, "researcher.ersou")
    with pytest.raises(PermanentError, match="another region"):
        await consume(uow, event(tasking_events.FeedbackRecorded(job=ersou_job, rating=1), Region.EMSOU))
    # ...and the right id under the wrong region's name reaches nobody.
    await consume(
        uow,
        event(
            tasking_events.FeedbackRecorded(job=ersou_job.replace("/ERSOU/", "/EMSOU/"), rating=1),
            Region.EMSOU,
        ),
    )
    assert uow.inbox.items == {}


def deconfliction(other: Region, contact: str) -> entity_events.DeconflictionNotice:
    return entity_events.DeconflictionNotice(
        entity="entities/e-123",
        entity_type=entity_pb2.RECORD_TYPE_PHONE,
        own_records=["regions/EMSOU/records/r1"],
        other_region=other.to_proto(),  # type: ignore[arg-type]
        contact_role=contact,
    )


async def test_each_copy_of_a_deconfliction_notice_goes_to_its_own_region_contact_only(uow) -> None:
    await consume(
        uow, event(deconfliction(Region.ERSOU, "ERSOU ROCU: intelligence supervisor"), Region.EMSOU)
    )
    await consume(
        uow, event(deconfliction(Region.EMSOU, "EMSOU ROCU: intelligence supervisor"), Region.ERSOU)
    )
    by_region = {i.source.region: i for i in uow.inbox.items.values()}
    assert {r: i.recipient.addressed_to for r, i in by_region.items()} == {
        Region.EMSOU: "supervisor@EMSOU",
        Region.ERSOU: "supervisor@ERSOU",
    }
    assert by_region[Region.EMSOU].summary == (
        "ERSOU also holds records on this phone; contact: ERSOU ROCU: intelligence supervisor"
    )
    assert by_region[Region.EMSOU].resource == "entities/e-123"
    # Each region's supervisor sees their own copy, not the other's.
    assert [i.source.region for i in await seen_by_fake(uow, SUP_EMSOU)] == [Region.EMSOU]
    assert [i.source.region for i in await seen_by_fake(uow, SUP_ERSOU)] == [Region.ERSOU]


async def seen_by_fake(uow: FakeTaskingUnitOfWork, actor: Principal) -> list[InboxItem]:
    return await uow.inbox.search(policy.inbox_audience(actor), InboxFilter(), 100, None)


async def test_the_national_team_copy_of_a_deconfliction_goes_to_the_national_coordinators(uow) -> None:
    await consume(uow, event(deconfliction(Region.EMSOU, "EMSOU ROCU"), Region.NATIONAL))
    assert addressed(uow) == {"national_coordinator@NATIONAL": ItemType.DECONFLICTION_NOTICE}


async def test_a_pnd_rejection_names_no_job_so_it_goes_to_the_region_supervisors(uow) -> None:
    await consume(
        uow,
        event(
            pnd_events.SubmissionRejected(
                record="regions/EMSOU/intelligence/r1",
                record_version=3,
                submission_id="r1-3",
                operation=sync_pb2.SUBMISSION_OPERATION_UPDATE,
                reasons=[
                    sync_pb2.RejectionReason(
                        code="INVALID_VRM", field="vehicle.vrm", description="AB12 CDE is not a VRM"
                    )
                ],
            ),
            Region.EMSOU,
        ),
    )
    await consume(
        uow,
        event(
            pnd_events.SubmissionConflict(
                record="regions/EMSOU/intelligence/r2",
                record_version=2,
                submission_id="r2-2",
                operation=sync_pb2.SUBMISSION_OPERATION_UPDATE,
                pnd_version=5,
            ),
            Region.EMSOU,
        ),
    )
    assert sorted((i.recipient.addressed_to, i.item_type) for i in uow.inbox.items.values()) == [
        ("supervisor@EMSOU", ItemType.PND_SUBMISSION_CONFLICT),
        ("supervisor@EMSOU", ItemType.PND_SUBMISSION_REJECTED),
    ]
    summaries = {i.item_type: i.summary for i in uow.inbox.items.values()}
    # The reason's code, never its description (which quotes the record's values).
    assert summaries[ItemType.PND_SUBMISSION_REJECTED] == (
        "The PND refused the update of version 3 (submission r1-3): INVALID_VRM"
    )
    assert "5" in summaries[ItemType.PND_SUBMISSION_CONFLICT]


def pnd_source(region: Region = Region.EMSOU) -> Source:
    return Source(uuid.uuid4().hex, "toex.pnd.events.v1.SubmissionRejected", NOW, region, Handling.C)


async def test_a_pnd_answer_naming_a_job_goes_to_its_assignees_else_to_the_submitter(deps, uow) -> None:
    """The routing the inbox applies once the PND's events name the job and the submitter."""
    job = await new_job(deps, Region.EMSOU, "researcher.london")
    record = "regions/EMSOU/intelligence/r1"

    async def deliver(job: str, submitted_by: str = "") -> set[str]:
        recipients = submission_answer(Region.EMSOU, submitted_by)
        notice = Notice(ItemType.PND_SUBMISSION_REJECTED, "refused", record, recipients, job=job)
        items = await inbox.deliver(commands.DeliverNotices(pnd_source(), (notice,)), uow, NOW)
        return {i.recipient.addressed_to for i in items}

    assert await deliver(job, "researcher.emsou") == {"researcher.london"}
    # A job without assignees, or of another region than the event's: the submitter, else supervisors.
    unassigned = await new_job(deps, Region.EMSOU)
    assert await deliver(unassigned, "researcher.emsou") == {"researcher.emsou"}
    ersou_job = await new_job(deps, Region.ERSOU, "researcher.ersou")
    assert await deliver(ersou_job) == {"supervisor@EMSOU"}


def overdue_referral(escalation: int) -> sg_events.ReferralOverdue:
    return sg_events.ReferralOverdue(
        referral="regions/EMSOU/referrals/r1",
        clock=sg.StatutoryClock(
            kind=sg.CLOCK_KIND_LOCAL_AUTHORITY_DECISION, due_time=stamp(NOW - timedelta(days=1))
        ),
        escalation=escalation,  # type: ignore[arg-type]
        risk_level=sg.RISK_LEVEL_HIGH,
    )


async def test_an_overdue_referral_goes_to_the_region_safeguarding_officers_and_supervisors(uow) -> None:
    await consume(uow, event(overdue_referral(sg.ESCALATION_SUPERVISOR), Region.EMSOU))
    assert addressed(uow) == {
        "safeguarding_officer@EMSOU": ItemType.REFERRAL_OVERDUE,
        "supervisor@EMSOU": ItemType.REFERRAL_OVERDUE,
    }
    item = next(iter(uow.inbox.items.values()))
    assert item.summary == (
        "Overdue: local authority decision due 2026-11-21 09:00Z; risk high; escalated to supervisors"
    )


async def test_the_national_escalation_of_an_overdue_referral_reaches_the_national_coordinators(uow) -> None:
    await consume(uow, event(overdue_referral(sg.ESCALATION_NATIONAL_COORDINATOR), Region.EMSOU))
    assert set(addressed(uow)) == {
        "safeguarding_officer@EMSOU",
        "supervisor@EMSOU",
        "national_coordinator@NATIONAL",
    }


async def test_an_event_naming_another_region_resource_is_refused(uow) -> None:
    for message in (
        tasking_events.JobOverdue(job=job_ref(Region.ERSOU)),
        tasking_events.JobAssigned(
            job=job_ref(Region.ERSOU), added=[assignee("researcher.ersou", Region.ERSOU)]
        ),
        pnd_events.SubmissionRejected(record="regions/ERSOU/intelligence/r1"),
        sg_events.ReferralOverdue(referral="regions/ERSOU/referrals/r1"),
    ):
        with pytest.raises(PermanentError, match="another region"):
            await consume(uow, event(message, Region.EMSOU))
    assert uow.inbox.items == {}


# --- who sees what ----------------------------------------------------------------------------


async def fill(uow: FakeTaskingUnitOfWork) -> dict[str, str]:
    """An overdue EMSOU job, an EMSOU job assigned to London, an overdue ERSOU referral."""
    emsou_job, london_job = job_ref(), job_ref()
    await consume(uow, event(tasking_events.JobOverdue(job=emsou_job), Region.EMSOU))
    await consume(
        uow,
        event(
            tasking_events.JobAssigned(job=london_job, added=[assignee("researcher.london", Region.LONDON)]),
            Region.EMSOU,
            handling=security_pb2.HANDLING_CODE_P,
        ),
    )
    await consume(uow, event(overdue_referral(sg.ESCALATION_SUPERVISOR), Region.EMSOU))
    referral = "regions/ERSOU/referrals/r9"
    await consume(
        uow,
        event(
            sg_events.ReferralOverdue(referral=referral, escalation=sg.ESCALATION_SUPERVISOR), Region.ERSOU
        ),
    )
    return {"emsou_job": emsou_job, "london_job": london_job, "ersou_referral": referral}


async def test_a_user_sees_their_region_role_items_and_what_is_addressed_to_them(deps, uow) -> None:
    names = await fill(uow)

    def about(items: list[InboxItem]) -> set[str]:
        return {i.resource for i in items}

    assert about(await seen_by(deps, SUP_EMSOU)) == {names["emsou_job"], "regions/EMSOU/referrals/r1"}
    assert about(await seen_by(deps, SUP_ERSOU)) == {names["ersou_referral"]}
    assert about(await seen_by(deps, SAFE_EMSOU)) == {"regions/EMSOU/referrals/r1"}
    assert about(await seen_by(deps, SAFE_ERSOU)) == {names["ersou_referral"]}
    # Another region's job, addressed to them by name: theirs, with the job region's label.
    [london] = await seen_by(deps, RES_LONDON)
    assert london.resource == names["london_job"]
    assert (london.source.region, london.source.handling) == (Region.EMSOU, Handling.P)
    # EMSOU's researcher holds no role anything was addressed to.
    assert await seen_by(deps, RES_EMSOU) == []
    # National coordinators, of whichever region: their role's items of every region.
    assert about(await seen_by(deps, NC)) == {names["emsou_job"]}
    assert about(await seen_by(deps, NC_EMSOU)) == {names["emsou_job"]}


async def test_a_role_item_of_another_region_stays_unseen_even_for_the_same_role(uow) -> None:
    """Defence in depth: the region rule holds even for an item addressed to a role somewhere else."""
    source = Source(uuid.uuid4().hex, "t", NOW, Region.ERSOU, Handling.C)
    stray = Notice(
        ItemType.JOB_OVERDUE, "x", "regions/ERSOU/jobs/j", (Recipient.holders(Role.SUPERVISOR, Region.EMSOU),)
    )
    await inbox.deliver(commands.DeliverNotices(source, (stray,)), uow, NOW)
    assert await seen_by_fake(uow, SUP_EMSOU) == []


async def test_items_are_listed_newest_event_first_and_filtered(deps, uow) -> None:
    for hours in (3, 1, 2):
        overdue = tasking_events.JobOverdue(job=job_ref())
        await consume(uow, event(overdue, Region.EMSOU, when=NOW - timedelta(hours=hours)))
    await consume(uow, event(overdue_referral(sg.ESCALATION_SUPERVISOR), Region.EMSOU))
    items = await seen_by(deps, SUP_EMSOU)
    times = [i.source.occurred_at for i in items]
    assert times == sorted(times, reverse=True) and len(items) == 4
    overdue_only = await seen_by(deps, SUP_EMSOU, InboxFilter(types=frozenset({ItemType.REFERRAL_OVERDUE})))
    assert [i.item_type for i in overdue_only] == [ItemType.REFERRAL_OVERDUE]
    # Pages follow on from the last item of the one before.
    first, more = await inbox.list_items(commands.ListInboxItems(SUP_EMSOU, InboxFilter(), 3), deps)
    last = first[-1]
    rest, _ = await inbox.list_items(
        commands.ListInboxItems(SUP_EMSOU, InboxFilter(), 3, (last.source.occurred_at, last.id)), deps
    )
    assert more and [i.id for i in first + rest] == [i.id for i in items]


# --- idempotence and read state ---------------------------------------------------------------


async def test_a_redelivered_event_makes_no_second_item(uow) -> None:
    incoming = event(overdue_referral(sg.ESCALATION_NATIONAL_COORDINATOR), Region.EMSOU)
    await consume(uow, incoming)
    first = dict(uow.inbox.items)
    await consume(uow, incoming)
    assert uow.inbox.items == first and len(first) == 3


async def test_read_state_is_each_user_own_even_for_a_role_item(deps, uow) -> None:
    await fill(uow)
    [overdue] = await seen_by(deps, SUP_EMSOU, InboxFilter(types=frozenset({ItemType.JOB_OVERDUE})))
    marked = await inbox.mark_read(commands.MarkInboxItemsRead(SUP_EMSOU, [overdue.id]), deps)
    assert marked == 1
    unread = InboxFilter(read=False)
    assert overdue.id not in {i.id for i in await seen_by(deps, SUP_EMSOU, unread)}
    assert overdue.id in {i.id for i in await seen_by(deps, SUP_EMSOU, InboxFilter(read=True))}
    # The same item, for the region's other supervisor: still unread; and the coordinators' own
    # item of the same event too.
    assert overdue.id in {i.id for i in await seen_by(deps, SUP2_EMSOU, unread)}
    assert overdue.source.event_id in {i.source.event_id for i in await seen_by(deps, NC, unread)}
    # Marking again changes nothing.
    assert await inbox.mark_read(commands.MarkInboxItemsRead(SUP_EMSOU, [overdue.id]), deps) == 0


async def test_marking_an_item_the_caller_does_not_see_is_not_found_and_marks_nothing(deps, uow) -> None:
    await fill(uow)
    [mine] = await seen_by(deps, SUP_ERSOU)
    [theirs, *_] = await seen_by(deps, SUP_EMSOU)
    with pytest.raises(OutOfScope, match="not found"):
        await inbox.mark_read(commands.MarkInboxItemsRead(SUP_ERSOU, [mine.id, theirs.id]), deps)
    with pytest.raises(NotFound, match="not found"):
        await inbox.mark_read(commands.MarkInboxItemsRead(SUP_ERSOU, [mine.id, "0" * 32]), deps)
    assert uow.inbox.reads == {}


async def test_mark_all_matching_marks_only_the_caller_items(deps, uow) -> None:
    await fill(uow)
    keep = InboxFilter(types=frozenset({ItemType.REFERRAL_OVERDUE}))
    assert (
        await inbox.mark_read(commands.MarkInboxItemsRead(SUP_EMSOU, all_matching=True, filter=keep), deps)
        == 1
    )
    assert [i.item_type for i in await seen_by(deps, SUP_EMSOU, InboxFilter(read=False))] == [
        ItemType.JOB_OVERDUE
    ]
    assert await inbox.mark_read(commands.MarkInboxItemsRead(SUP_EMSOU, all_matching=True), deps) == 1
    assert await seen_by(deps, SUP_EMSOU, InboxFilter(read=False)) == []
    assert len(await seen_by(deps, SUP_ERSOU, InboxFilter(read=False))) == 1
    with pytest.raises(InvalidArgument):
        await inbox.mark_read(commands.MarkInboxItemsRead(SUP_EMSOU), deps)


# --- watching ---------------------------------------------------------------------------------


async def watched(deps: handlers.Deps, cmd: commands.WatchInbox) -> list[tuple[InboxItem | None, Cursor]]:
    return [pair async for pair in inbox.watch(cmd, deps)]


async def test_a_watch_starts_now_and_sends_the_caller_new_items_only(deps, uow) -> None:
    await fill(uow)
    [(start, cursor)] = await watched(deps, commands.WatchInbox(SUP_EMSOU, InboxFilter()))
    assert start is None  # nothing from before the watch
    await fill(uow)
    new = await watched(deps, commands.WatchInbox(SUP_EMSOU, InboxFilter(), resume=cursor))
    assert new[0][0] is None
    items = [item for item, _ in new[1:]]
    assert {i.item_type for i in items} == {ItemType.JOB_OVERDUE, ItemType.REFERRAL_OVERDUE}  # type: ignore[union-attr]
    assert all(i is not None and i.source.region is Region.EMSOU for i in items)
    # After one of them: only those that came later.
    first = items[0]
    assert first is not None
    later = await watched(deps, commands.WatchInbox(SUP_EMSOU, InboxFilter(), start_after=first.id))
    assert [i for i, _ in later[1:]] == items[1:]
    # An item the caller does not see is no place to start from.
    with pytest.raises(OutOfScope):
        await watched(deps, commands.WatchInbox(SUP_ERSOU, InboxFilter(), start_after=first.id))


# --- policy and the API's own parsing -----------------------------------------------------------


def test_every_person_may_read_their_inbox_without_a_purpose_and_services_may_not() -> None:
    rules = MethodPolicy(policy.METHOD_RULES)
    for who in (RES_LONDON, SUP_EMSOU, NC, SAFE_EMSOU, principal("auditor.emsou", Role.AUDITOR)):
        for method in ("ListInboxItems", "WatchInbox", "MarkInboxItemsRead"):
            rules.check(who, f"/toex.tasking.v1.InboxService/{method}", "")
    service = principal("service-account-toex-pnd", Role.SERVICE, Region.NATIONAL)
    with pytest.raises(PermissionDenied):
        rules.check(service, "/toex.tasking.v1.InboxService/ListInboxItems", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", InboxFilter()),
        ("read = false", InboxFilter(read=False)),
        ("type = JOB_OVERDUE", InboxFilter(types=frozenset({ItemType.JOB_OVERDUE}))),
        (
            'read = true AND (type = "job_assigned" OR type = INBOX_ITEM_TYPE_JOB_UNASSIGNED)',
            InboxFilter(read=True, types=frozenset({ItemType.JOB_ASSIGNED, ItemType.JOB_UNASSIGNED})),
        ),
    ],
)
def test_filters_parse(text: str, expected: InboxFilter) -> None:
    assert inbox_mapping.parse_filter(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "read = maybe",
        "type = NOT_A_TYPE",
        "region = EMSOU",
        "read = true AND read = false",
        "(read = true OR type = X)",
    ],
)
def test_unusable_filters_are_invalid_arguments(text: str) -> None:
    with pytest.raises(InvalidArgument):
        inbox_mapping.parse_filter(text)


def test_a_watch_filters_by_type_only_and_its_tokens_round_trip() -> None:
    with pytest.raises(InvalidArgument, match="unread"):
        inbox_mapping.parse_filter("read = false", read_terms=False)
    cursor = Cursor(123456, 42)
    assert inbox_mapping.parse_resume_token(inbox_mapping.resume_token(cursor)) == cursor
    for forged in ("not-base64!", "aTE6eDp5", ""):
        with pytest.raises(InvalidArgument):
            inbox_mapping.parse_resume_token(forged)


def test_an_item_shows_its_event_label_and_the_reader_read_state() -> None:
    source = Source("ev-1", "toex.tasking.events.v2.JobOverdue", NOW, Region.EMSOU, Handling.P)
    notice = Notice(ItemType.JOB_OVERDUE, "Overdue", "regions/EMSOU/jobs/j1")
    item = InboxItem.deliver(source, notice, Recipient.holders(Role.SUPERVISOR, Region.EMSOU), NOW)
    item.read_at = NOW
    message = inbox_mapping.item_to_proto(item)
    assert message.name == f"users/me/inboxItems/{item.id}"
    assert (message.label.region, message.label.handling) == (
        region_pb2.REGION_EMSOU,
        security_pb2.HANDLING_CODE_P,
    )
    assert message.addressed_to == "supervisor@EMSOU" and message.read and message.HasField("read_time")
    assert message.type == inbox_mapping.type_to_proto(ItemType.JOB_OVERDUE)
