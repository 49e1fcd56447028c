"""Notes the safeguarding service asked for by event (JobNoteRequested: no longer published, the
consumer drains those still in the stream for one release), and AddJobNote, which shares their
logic."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex_common.events import build_event, decode
from toex_common.events.consumer import PermanentError
from toex_common.testing.fakes import FakeAuditSink, principal
from toex_kernel.errors import InvalidArgument, NotFound, OutOfScope
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobType, Priority
from toex_tasking.entrypoints import consumers
from toex_tasking.service_layer import handlers

from .fakes import FakeTaskingUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
RES_EMSOU = principal("researcher.emsou", Role.RESEARCHER)
REFERRAL = "regions/EMSOU/referrals/r1"


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, directory=demo_directory(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]


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


def requested(
    job: str,
    *,
    region: Region = Region.EMSOU,
    note_id: str | None = None,
    text: str = "Referral approved.",
    referral: str = REFERRAL,
):  # type: ignore[no-untyped-def]
    """A JobNoteRequested as the safeguarding service publishes it, on `region`'s subject."""
    envelope = build_event(
        sg_events.JobNoteRequested(
            referral=referral, job=job, note_id=note_id or uuid.uuid4().hex, text=text
        ),
        domain="safeguarding",
        source="toex/safeguarding",
        region=region,
        resource=referral,
    )
    return decode(envelope.subject, envelope.payload, envelope.headers)


async def consume(uow: FakeTaskingUnitOfWork, audit: FakeAuditSink, event) -> None:  # type: ignore[no-untyped-def]
    """As the consumer base runs a handler: in a unit of work that commits after it."""
    async with uow:
        await consumers.make_note_handler(audit, lambda: NOW)(event, uow)
        await uow.commit()


def notes_on(uow: FakeTaskingUnitOfWork, job: str) -> list:  # type: ignore[type-arg]
    return uow.jobs.jobs[job.rsplit("/", 1)[-1]].notes


async def test_a_note_lands_on_a_job_of_the_referral_region_written_by_safeguarding(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU)
    audit = FakeAuditSink()
    note_id = uuid.uuid4().hex
    await consume(uow, audit, requested(job, note_id=note_id))
    [note] = notes_on(uow, job)
    assert (note.id, note.author, note.text) == (
        note_id,
        "service-account-toex-safeguarding",
        "Referral approved.",
    )
    # Audited as an AddJobNote call would be: who, in which region, what, and why (the referral).
    [entry] = audit.entries
    assert entry.outcome == "OK" and entry.purpose == REFERRAL
    assert (entry.actor_username, entry.actor_region, entry.actor_roles) == (
        "service-account-toex-safeguarding",
        "EMSOU",
        ("service",),
    )
    assert entry.resources == (job, f"{job}/notes/{note_id}")
    assert entry.peer == "nats:toex.emsou.safeguarding.JobNoteRequested"


async def test_a_note_for_another_region_job_is_refused_and_never_written(deps, uow) -> None:
    ersou_job = await new_job(deps, Region.ERSOU)
    audit = FakeAuditSink()
    # Published on EMSOU's subject (all a leaked EMSOU credential allows), naming ERSOU's job.
    with pytest.raises(PermanentError, match="EMSOU may not go on a job of ERSOU"):
        await consume(uow, audit, requested(ersou_job))
    # ...or naming ERSOU's job under EMSOU's name: the right id under the wrong region is not it.
    emsou_name = ersou_job.replace("regions/ERSOU/", "regions/EMSOU/")
    with pytest.raises(PermanentError, match="not found"):
        await consume(uow, audit, requested(emsou_name))
    assert notes_on(uow, ersou_job) == [] and audit.entries == []


async def test_a_national_event_writes_on_national_jobs_only(deps, uow) -> None:
    """The hub's region sees every region's jobs; the rule is the region, not what the actor
    could see."""
    emsou_job, national_job = await new_job(deps, Region.EMSOU), await new_job(deps, Region.NATIONAL)
    audit = FakeAuditSink()
    with pytest.raises(PermanentError, match="NATIONAL may not go on a job of EMSOU"):
        await consume(uow, audit, requested(emsou_job, region=Region.NATIONAL))
    await consume(
        uow, audit, requested(national_job, region=Region.NATIONAL, referral="regions/NATIONAL/referrals/r3")
    )
    assert notes_on(uow, emsou_job) == [] and len(notes_on(uow, national_job)) == 1


async def test_the_same_note_id_is_one_note(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU)
    audit = FakeAuditSink()
    note_id = uuid.uuid4().hex
    # Published twice (two event ids, so the inbox cannot tell): still one note, one entry.
    await consume(uow, audit, requested(job, note_id=note_id))
    await consume(uow, audit, requested(job, note_id=note_id))
    assert [n.id for n in notes_on(uow, job)] == [note_id]
    assert len(audit.entries) == 1


async def test_unusable_requests_are_refused(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU)
    audit = FakeAuditSink()
    for event in (
        requested(job, note_id="not-hex"),
        requested(job, text=" "),
        requested(job, text="x" * (handlers.MAX_TEXT + 1)),
        requested(job, referral="regions/ERSOU/referrals/r2"),  # the purpose, from another region
        requested("jobs/abc"),
        requested(f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"),
    ):
        with pytest.raises(PermanentError):
            await consume(uow, audit, event)
    assert notes_on(uow, job) == [] and audit.entries == []


async def test_nothing_is_audited_for_a_note_whose_transaction_rolls_back(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU)
    audit = FakeAuditSink()
    async with uow:
        await consumers.make_note_handler(audit, lambda: NOW)(requested(job), uow)
        await uow.rollback()  # the commit failed
    assert audit.entries == []


async def test_note_for_referral_refuses_another_region_before_reading_anything(uow) -> None:
    cmd = commands.NoteForReferral(Region.EMSOU, Region.ERSOU, "any", REFERRAL, uuid.uuid4().hex, "t")
    with pytest.raises(OutOfScope):
        await handlers.note_for_referral(cmd, uow, NOW)


async def test_add_job_note_names_the_note_it_is_given_once(deps, uow) -> None:
    job = await new_job(deps, Region.EMSOU)
    region, job_id = Region.EMSOU, job.rsplit("/", 1)[-1]
    first = await handlers.add_job_note(
        commands.AddJobNote(RES_EMSOU, region, job_id, "Found", note_id="n1"), deps
    )
    again = await handlers.add_job_note(
        commands.AddJobNote(RES_EMSOU, region, job_id, "Found", note_id="n1"), deps
    )
    assert first[1] == again[1] == "n1" and len(notes_on(uow, job)) == 1
    with pytest.raises(InvalidArgument):
        await handlers.add_job_note(commands.AddJobNote(RES_EMSOU, region, job_id, " "), deps)
    with pytest.raises(NotFound):
        await handlers.add_job_note(commands.AddJobNote(RES_EMSOU, region, "missing", "Found"), deps)
