"""National oversight against real servers: every region's events on NATS counted into
PostgreSQL once each, whatever their order and however often they arrive, and read through
gRPC with real Keycloak tokens by those allowed to, and only them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from toex.oversight.v1 import oversight_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as ev
from toex.type.v1 import region_pb2
from toex_common.migrations import upgrade
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp
from toex_oversight.__main__ import migrations_dir
from toex_oversight.domain.model import day_of

from .conftest import PURPOSE, Oversight, Regions
from .events import (
    SECRETS,
    deconfliction,
    job_lifecycle,
    pnd_accepted,
    pnd_rejected,
    reconciled,
    referral_decided,
    referral_drafted,
    referral_submitted,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
EARLIER = NOW - timedelta(days=3)


def figures(answer: pb.GetOverviewResponse, region: Region) -> pb.RegionFigures:
    return next(r for r in answer.regions if r.region == region.to_proto())


async def publish_jobs(regions: Regions, region: Region, count: int, **options: Any) -> list[str]:
    names = []
    for _ in range(count):
        job = f"regions/{region.value}/jobs/{uuid.uuid4().hex[:12]}"
        names.append(job)
        for position, (message, _) in enumerate(job_lifecycle(job, **options)):
            await regions.publish(
                message, region, "tasking", occurred_at=EARLIER + timedelta(minutes=position)
            )
    return names


async def publish_the_two_regions(regions: Regions) -> int:
    """EMSOU: 3 jobs delivered on time and rated, 2 worked by LONDON, one open and overdue, two
    referrals, PND answers, a reconciliation and a deconfliction notice. LONDON: 2 jobs delivered
    late. Returns how many events were published."""
    before = len(regions.published)
    await publish_jobs(regions, Region.EMSOU, 1, due=NOW, delivered=EARLIER + timedelta(hours=1), rating=5)
    await publish_jobs(
        regions,
        Region.EMSOU,
        2,
        due=NOW,
        taker=Region.LONDON,
        delivered=EARLIER + timedelta(hours=1),
        rating=3,
    )
    await publish_jobs(regions, Region.EMSOU, 1, due=EARLIER + timedelta(days=1))  # open, now overdue
    await publish_jobs(regions, Region.LONDON, 2, due=EARLIER, delivered=EARLIER + timedelta(days=1))
    first, second = (f"regions/EMSOU/referrals/{uuid.uuid4().hex[:12]}" for _ in range(2))
    for referral in (first, second):
        await regions.publish(referral_drafted(referral), Region.EMSOU, "safeguarding", occurred_at=EARLIER)
    # first: the local authority decided on time; second: the NRM decision is overdue.
    await regions.publish(
        referral_submitted(first, sg.DESTINATION_CHILDRENS_SOCIAL_CARE, EARLIER, EARLIER + timedelta(days=1)),
        Region.EMSOU,
        "safeguarding",
        occurred_at=EARLIER + timedelta(minutes=1),
    )
    await regions.publish(
        referral_decided(first, EARLIER + timedelta(hours=5)),
        Region.EMSOU,
        "safeguarding",
        occurred_at=EARLIER + timedelta(hours=6),
    )
    await regions.publish(
        referral_submitted(second, sg.DESTINATION_NRM, EARLIER, EARLIER + timedelta(days=1)),
        Region.EMSOU,
        "safeguarding",
        occurred_at=EARLIER + timedelta(minutes=2),
    )
    for message in (
        pnd_accepted("regions/EMSOU/intelligence/1"),
        pnd_accepted("regions/EMSOU/intelligence/2"),
    ):
        await regions.publish(message, Region.EMSOU, "pnd", occurred_at=EARLIER)
    await regions.publish(
        pnd_rejected("regions/LONDON/intelligence/3"), Region.LONDON, "pnd", occurred_at=EARLIER
    )
    await regions.publish(reconciled(Region.EMSOU, held=2, stale=1), Region.EMSOU, "pnd", occurred_at=EARLIER)
    await regions.publish(deconfliction(Region.LONDON), Region.EMSOU, "entity", occurred_at=EARLIER)
    await regions.publish(deconfliction(Region.EMSOU), Region.LONDON, "entity", occurred_at=EARLIER)
    return len(regions.published) - before


def all_counted(expected: int) -> Any:
    return lambda answer: answer.total.events_counted >= expected


def check_the_two_regions(answer: pb.GetOverviewResponse) -> None:
    emsou, london = figures(answer, Region.EMSOU), figures(answer, Region.LONDON)
    jobs = emsou.jobs
    assert jobs.raised == 4 and jobs.states.closed == 3 and jobs.states.in_progress == 1
    assert jobs.types.comms_analysis == 4 and jobs.priorities.priority == 4
    assert (jobs.open, jobs.overdue) == (1, 1)
    assert (jobs.delivered_on_time, jobs.delivered_late) == (3, 0)
    assert jobs.taken_by_other_regions == 2
    assert [(c.region, c.count) for c in jobs.taken_by] == [(region_pb2.REGION_LONDON, 2)]
    assert jobs.feedback.rated == 3 and list(jobs.feedback.by_rating) == [0, 0, 2, 0, 1]
    assert jobs.feedback.mean_rating == pytest.approx(11 / 3, abs=0.01)
    assert london.jobs.raised == 2 and london.jobs.delivered_late == 2
    # Tasking resilience: LONDON's researcher worked two of EMSOU's jobs.
    assert london.jobs.taken_for_other_regions == 2 and london.jobs.taken_by_other_regions == 0
    referrals = emsou.referrals
    assert referrals.drafted == 2 and referrals.states.decided == 1 and referrals.states.submitted == 1
    assert (referrals.clocks.met_on_time, referrals.clocks.met_late) == (1, 0)
    assert (referrals.clocks.due, referrals.clocks.overdue) == (0, 1)
    assert (emsou.pnd.accepted, emsou.pnd.rejected, london.pnd.rejected) == (2, 0, 1)
    assert (emsou.pnd.reconciliation.held, emsou.pnd.reconciliation.stale) == (2, 1)
    assert not london.pnd.HasField("reconciliation")
    assert emsou.deconfliction.notices == 1 and london.deconfliction.notices == 1
    assert answer.total.jobs.raised == 6 and answer.total.referrals.drafted == 2


async def test_events_of_two_regions_are_counted_per_region(oversight: Oversight, regions: Regions) -> None:
    published = await publish_the_two_regions(regions)
    answer = await oversight.until(all_counted(published))
    assert answer.total.events_counted == published
    check_the_two_regions(answer)
    emsou = figures(answer, Region.EMSOU)
    assert emsou.latest_event_time.ToDatetime(tzinfo=UTC) >= EARLIER
    # No first day asked for: from the first day counted, to today (London days).
    assert answer.period.first_day == day_of(EARLIER).isoformat()
    assert answer.period.last_day == day_of(datetime.now(UTC)).isoformat()
    # Regions with nothing counted are answered with zeros.
    assert figures(answer, Region.YH).jobs.raised == 0 and not figures(answer, Region.YH).HasField(
        "latest_event_time"
    )


async def test_at_the_hub_every_regions_reports_are_counted(
    oversight: Oversight, regions: Regions, postgres: Any
) -> None:
    """Region installations run the reporter only (their own region's events, reported on
    OVERSIGHT); the hub reports the national team's own and counts every region's reports."""
    await oversight.stop()
    oversight.installation = "hub"
    await oversight.start()
    assert oversight.app is not None
    subjects = {c.name: _subjects(c) for c in oversight.app.consumers}
    assert len(subjects) == 8
    for name, found in subjects.items():
        prefix = "toex.national." if "-report-" in name else "toex.*.oversight."
        assert found and all(s.startswith(prefix) for s in found), (name, found)
    reporters, databases = [], []
    try:
        for region in (Region.EMSOU, Region.LONDON):
            databases.append(f"t_oversight_{region.token}_{uuid.uuid4().hex[:10]}")
            url = postgres.create_database(databases[-1])
            await asyncio.to_thread(upgrade, url, migrations_dir())
            reporter = Oversight(
                url,
                oversight.nats_url,
                oversight.issuer,
                oversight.tokens,
                f"{oversight.name}-{region.token}",
                installation="region",
                region=region.value,
            )
            await reporter.start()
            reporters.append(reporter)
            assert reporter.app is not None
            found = {c.name: _subjects(c) for c in reporter.app.consumers}
            assert all("-report-" in name for name in found) and len(found) == 4
            assert all(s.startswith(f"toex.{region.token}.") for f in found.values() for s in f)
            assert reporter.app.service_names == []  # a region answers no overview
        published = await publish_the_two_regions(regions)
        answer = await oversight.until(all_counted(published))
        check_the_two_regions(answer)
        # Each region's reporter took its own region's events, and the hub's reporter none.
        assert sum(r.counted("report") for r in reporters) == published
        assert oversight.counted("report") == 0
    finally:
        for reporter in reporters:
            await reporter.stop()
        for name in databases:
            postgres.drop_database(name)


def _subjects(consumer: Any) -> list[str]:
    config = consumer.consumer_config()
    return list(config.filter_subjects or [config.filter_subject])


async def test_the_period_chooses_by_the_day_work_was_raised(oversight: Oversight, regions: Regions) -> None:
    published = await publish_the_two_regions(regions)
    await oversight.until(all_counted(published))
    earlier_day = EARLIER.date()
    before = await oversight.overview(
        period=pb.Period(
            first_day=(earlier_day - timedelta(days=30)).isoformat(),
            last_day=(earlier_day - timedelta(days=5)).isoformat(),
        )
    )
    assert before.total.jobs.raised == 0 and before.total.jobs.overdue == 0 and before.total.pnd.accepted == 0
    around = await oversight.overview(
        period=pb.Period(
            first_day=(earlier_day - timedelta(days=40)).isoformat(),
            last_day=(earlier_day + timedelta(days=1)).isoformat(),
        )
    )
    check_the_two_regions(around)


async def test_redelivered_and_replayed_events_are_counted_once(
    oversight: Oversight, regions: Regions
) -> None:
    published = await publish_the_two_regions(regions)
    first = await oversight.until(all_counted(published))
    check_the_two_regions(first)
    # Every event again under another message id: the stream keeps them (as after its
    # duplicate window); the inbox knows their event ids.
    again = list(regions.published)
    before = oversight.counted()
    for envelope in again:
        await regions.send(envelope, msg_id=f"{envelope.event_id}-again")
    await oversight.until(lambda _: oversight.counted() >= before + len(again))
    second = await oversight.overview()
    assert second.total.events_counted == published
    check_the_two_regions(second)
    # The whole stream read again from its start (the durable consumers removed while the
    # service is down, as after a broker's state was lost): still once.
    await oversight.stop()
    for stream, consumer in (
        ("TASKING", "tasking"),
        ("SAFEGUARDING", "safeguarding"),
        ("PND", "pnd"),
        ("ENTITY", "entity"),
    ):
        # The reporter's, on the producer's stream, and the aggregator's, on OVERSIGHT.
        await regions.js.delete_consumer(stream, f"{oversight.name}-report-{consumer}")
        await regions.js.delete_consumer("OVERSIGHT", f"{oversight.name}-{consumer}")
    await oversight.start()
    # The producers' streams hold every event twice (sent again above): each a duplicate to the
    # reporter; OVERSIGHT holds each report once, a duplicate to the aggregator.
    await oversight.until(lambda _: oversight.counted() >= 3 * published)
    assert oversight.counted("report") == 2 * published and oversight.counted() == 3 * published
    reports = await regions.js.stream_info("OVERSIGHT")
    assert reports.state.messages == published  # each reported once
    third = await oversight.overview()
    assert third.total.events_counted == published
    check_the_two_regions(third)


async def test_events_of_a_job_out_of_order_end_in_the_right_state(
    oversight: Oversight, regions: Regions
) -> None:
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    events = job_lifecycle(job, NOW - timedelta(days=1), taker=Region.LONDON, delivered=EARLIER, rating=4)
    # A due time moved later by an update at revision 4 (delivery is then on time, not late),
    # and a stale update of revision 2 that must not win over it.
    updated = ev.JobUpdated(
        job=job,
        changed_fields=["due_time", "priority"],
        updated_by="supervisor-secret.emsou",
        access=ev.JobAccess(revision=6, state=ev.JOB_STATE_CLOSED),
        priority=ev.PRIORITY_URGENT,
        due_time=timestamp(NOW + timedelta(days=5)),
    )
    stale = ev.JobUpdated(
        job=job,
        changed_fields=["priority"],
        access=ev.JobAccess(revision=2, state=ev.JOB_STATE_ASSIGNED),
        priority=ev.PRIORITY_ROUTINE,
        due_time=timestamp(EARLIER - timedelta(days=9)),
    )
    ordered = [m for m, _ in events] + [updated]
    # The newest first, the creation last, the stale update in between.
    arrival = [*reversed(ordered[1:]), stale, ordered[0]]
    for position, message in enumerate(arrival):
        await regions.publish(
            message, Region.EMSOU, "tasking", occurred_at=EARLIER + timedelta(minutes=position)
        )
    answer = await oversight.until(all_counted(len(arrival)))
    jobs = figures(answer, Region.EMSOU).jobs
    assert jobs.raised == 1 and jobs.states.closed == 1 and jobs.open == 0 and jobs.overdue == 0
    assert jobs.priorities.urgent == 1
    assert (jobs.delivered_on_time, jobs.delivered_late) == (1, 0)
    assert jobs.taken_by_other_regions == 1 and jobs.feedback.rated == 1
    assert figures(answer, Region.LONDON).jobs.taken_for_other_regions == 1
    # Only the JobCreated gave the job its day: until it came the job counted for nothing.
    async with _connect(oversight) as conn:
        row = await conn.fetchrow(
            "SELECT state, state_revision, priority, due_revision FROM jobs WHERE job = $1", job
        )
    assert dict(row) == {"state": "CLOSED", "state_revision": 6, "priority": "URGENT", "due_revision": 6}


async def test_a_region_cut_off_is_counted_in_full_when_it_catches_up(
    oversight: Oversight, regions: Regions
) -> None:
    await oversight.stop()  # the hub hears nothing of the regions for a while
    published = await publish_the_two_regions(regions)
    more = await publish_jobs(regions, Region.EMSOU, 20, due=NOW, delivered=EARLIER, rating=2)
    await oversight.start()
    answer = await oversight.until(all_counted(published + 6 * len(more)))
    assert answer.total.events_counted == published + 6 * len(more)
    emsou = figures(answer, Region.EMSOU)
    assert emsou.jobs.raised == 24 and emsou.jobs.feedback.rated == 23


async def test_an_event_naming_another_regions_job_is_not_counted(
    oversight: Oversight, regions: Regions
) -> None:
    forged = ev.JobCreated(
        job=f"regions/ERSOU/jobs/{uuid.uuid4().hex[:12]}",
        job_type=ev.JOB_TYPE_ANPR,
        due_time=timestamp(NOW),
        access=ev.JobAccess(revision=1, state=ev.JOB_STATE_RAISED),
    )
    await regions.publish(forged, Region.EMSOU, "tasking", occurred_at=EARLIER)
    genuine = await publish_jobs(regions, Region.EMSOU, 1, due=NOW)
    answer = await oversight.until(lambda a: figures(a, Region.EMSOU).jobs.raised >= 1)
    assert figures(answer, Region.EMSOU).jobs.raised == 1 and figures(answer, Region.ERSOU).jobs.raised == 0
    dead = await regions.js.get_last_msg("DEADLETTER", f"toex.emsou.deadletter.{oversight.name}-tasking")
    assert dead.headers and "not of the region EMSOU" in dead.headers["toex-dead-reason"]
    assert genuine


async def test_the_read_model_holds_nothing_personal(oversight: Oversight, regions: Regions) -> None:
    published = await publish_the_two_regions(regions)
    await oversight.until(all_counted(published))
    async with _connect(oversight) as conn:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        assert {"jobs", "referrals", "counts", "deadlines", "reconciliations", "activity"} <= set(tables)
        dumped = {}
        for table in tables:
            # The audit log records who read the figures (staff, by law): not the read model.
            if table in ("audit_log", "alembic_version"):
                continue
            rows = await conn.fetch(f'SELECT * FROM "{table}"')
            dumped[table] = "\n".join(str(dict(row)) for row in rows)
    assert dumped["jobs"] and dumped["counts"] and dumped["inbox"]
    for table, text in dumped.items():
        for secret in (*SECRETS, "secret"):
            assert secret not in text, f"{secret!r} found in table {table}"
    # Nor what crosses to the hub: every report on OVERSIGHT, payload, subject and headers.
    info = await regions.js.stream_info("OVERSIGHT")
    assert info.state.messages == published
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await regions.js.get_msg("OVERSIGHT", seq)
        everything = (
            (msg.data or b"") + repr(sorted((msg.headers or {}).items())).encode() + msg.subject.encode()
        )
        for secret in (*SECRETS, "secret"):
            assert secret.encode() not in everything, f"{secret!r} found in {msg.subject}"


# --- who reads what ---------------------------------------------------------------------------------


async def refused(
    oversight: Oversight, username: str, purpose: str = PURPOSE, **request: Any
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await oversight.overview(username, purpose=purpose, **request)
    return caught.value


async def test_the_national_team_reads_every_region_and_a_supervisor_their_own(
    oversight: Oversight, regions: Regions
) -> None:
    published = await publish_the_two_regions(regions)
    national = await oversight.until(all_counted(published))
    assert len(national.regions) == len(Region)
    # A national coordinator is national whatever region their account is in.
    other_coordinator = await oversight.overview("national_coordinator.emsou")
    assert len(other_coordinator.regions) == len(Region)
    two = await oversight.overview(regions=[region_pb2.REGION_LONDON, region_pb2.REGION_EMSOU])
    assert [r.region for r in two.regions] == [region_pb2.REGION_EMSOU, region_pb2.REGION_LONDON]
    own = await oversight.overview("supervisor.emsou")
    assert [r.region for r in own.regions] == [region_pb2.REGION_EMSOU]
    assert own.regions[0] == figures(national, Region.EMSOU)
    assert own.total.jobs.raised == 4  # EMSOU's only, not the country's 6
    asked = await oversight.overview("supervisor.emsou", regions=[region_pb2.REGION_EMSOU])
    assert [r.region for r in asked.regions] == [region_pb2.REGION_EMSOU]
    error = await refused(oversight, "supervisor.emsou", regions=[region_pb2.REGION_LONDON])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "EMSOU only" in (error.details() or "")


@pytest.mark.parametrize(
    "username",
    ["researcher.london", "researcher.emsou", "analyst.emsou", "safeguarding_officer.emsou", "auditor.emsou"],
)
async def test_others_are_refused(oversight: Oversight, username: str) -> None:
    error = await refused(oversight, username)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_read_states_its_purpose_and_is_audited(oversight: Oversight, regions: Regions) -> None:
    error = await refused(oversight, "national_coordinator.national", purpose="")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    await oversight.overview("supervisor.emsou", purpose="quarterly return")
    await refused(oversight, "researcher.london")
    async with _connect(oversight) as conn:
        rows = await conn.fetch(
            "SELECT actor_username, action, resources, purpose, outcome FROM audit_log ORDER BY seq"
        )
    entries = [(r["actor_username"], r["purpose"], r["outcome"], list(r["resources"])) for r in rows]
    assert ("supervisor.emsou", "quarterly return", "OK", ["regions/EMSOU/overview"]) in entries
    assert any(u == "researcher.london" and o == "PERMISSION_DENIED" for u, _, o, _ in entries)
    assert any(u == "national_coordinator.national" and o == "FAILED_PRECONDITION" for u, _, o, _ in entries)


async def test_bad_input_is_refused_naming_each_field(oversight: Oversight) -> None:
    error = await refused(
        oversight,
        "national_coordinator.national",
        period=pb.Period(first_day="2026-13-01", last_day="yesterday"),
        regions=[region_pb2.REGION_EMSOU, region_pb2.REGION_EMSOU, region_pb2.REGION_UNSPECIFIED],
        force="no spaces!",
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    assert [v.field for v in details.field_violations] == [
        "period.first_day",
        "period.last_day",
        "regions[1]",
        "regions[2]",
        "force",
    ]
    backwards = await refused(
        oversight,
        "national_coordinator.national",
        period=pb.Period(first_day="2026-03-05", last_day="2026-03-01"),
    )
    assert backwards.code() == grpc.StatusCode.INVALID_ARGUMENT and "period.first_day" in (
        backwards.details() or ""
    )


async def test_a_force_is_counted_alone_and_the_answer_says_what_it_leaves_out(
    oversight: Oversight, regions: Regions
) -> None:
    published = await publish_the_two_regions(regions)
    await oversight.until(all_counted(published))
    answer = await oversight.overview(force="leics")
    assert answer.force == "LEICS" and answer.total.jobs.raised == 0 and answer.total.pnd.accepted == 0
    assert any("name no force" in note for note in answer.notes)
    assert any(note.startswith("6 jobs") for note in answer.notes)


class _connect:
    """An asyncpg connection to the service's database."""

    def __init__(self, oversight: Oversight) -> None:
        self._url = oversight.database.replace("postgresql+asyncpg://", "postgresql://")

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await asyncpg.connect(self._url)
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()
