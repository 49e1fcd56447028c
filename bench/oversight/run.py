"""National oversight benchmarks (issue 15).

1. The overview answer over 1,000,000 jobs and 200,000 referrals (goal: under 200 ms): the read
   model as the consumers leave it (jobs, referrals, counters per day and month, open
   deadlines), loaded directly with the service's own projection code; the overview's reads
   in-process and GetOverview through the real service (its own process, full interceptor
   chain, a Keycloak token, audit), against a plain count of the jobs table in the same run.
2. Region event to overview lag (goal: p99 under 2 s) with 1,000 events/s arriving from two
   regions: the real service (its own process, as at the hub) consumes EMSOU's and LONDON's
   subjects on one nats-server; each region's JobCreated events are the probe, seen when
   GetOverview (polled through gRPC) counts them; the floor is a plain JetStream subscriber
   receiving the same events in the same run.
3. Catch-up (goal: under 60 s, exactly once): 100,000 events (and 2% of them again under new
   message ids) queued while the consumers are stopped, then the service's four consumers
   started, as the service builds them; against toex_common's IdempotentConsumer with a no-op
   handler over the same events. Then the count checks.

    python -m bench.oversight.run [--quick] [--only overview|lag|catchup]

With --federation, the lag and the catch-up through the real federation instead (the hub and two
regions joined by leaf links; results in bench/results/oversight-federation.md): see
bench/oversight/federated.py.

Set TOEX_BENCH_KEYCLOAK_URL to reuse a running Keycloak with the toex realm (e.g. `make up`'s);
otherwise one is started (the overview's gRPC run and the lag need tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.db import create_engine
from toex_common.events.bus import MessageBus, subject_of
from toex_common.events.consumer import IdempotentConsumer, Outcome
from toex_common.events.envelope import decode
from toex_common.events.nats import connect
from toex_common.events.streams import (
    ENTITY_STREAM,
    OVERSIGHT_STREAM,
    PND_STREAM,
    SAFEGUARDING_STREAM,
    TASKING_STREAM,
    ensure_stream,
)
from toex_common.migrations import upgrade
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region
from toex_oversight.__main__ import migrations_dir
from toex_oversight.adapters import events
from toex_oversight.adapters.reader import PgOverviewReader
from toex_oversight.adapters.repository import _clocks_json, _job_row
from toex_oversight.adapters.uow import PgOversightUnitOfWork
from toex_oversight.bootstrap import message_bus
from toex_oversight.config import Settings
from toex_oversight.domain.model import ClockRecord, JobRecord, Key, ReferralRecord, day_of
from toex_oversight.domain.overview import (
    EARLIEST_DAY,
    Grain,
    OverviewQuery,
    Period,
    build_overview,
    month_of,
)
from toex_oversight.entrypoints import reporter

from bench.common import (
    machine,
    own_cpu_seconds,
    process_tree_cpu_seconds,
    subprocess_server,
    wait_serving,
    write_results,
)
from bench.oversight.workload import Planned, in_batches, workload

STREAMS = (TASKING_STREAM, SAFEGUARDING_STREAM, PND_STREAM, ENTITY_STREAM, OVERSIGHT_STREAM)
REGIONS = list(Region)
NOW = datetime.now(UTC)
TODAY = day_of(NOW)
JOB_TYPES = (
    "COMMS_ANALYSIS",
    "ANPR",
    "INTELLIGENCE_DEVELOPMENT",
    "OPEN_SOURCE",
    "SYSTEMS_CHECKS",
    "SAFEGUARDING",
)


async def fresh_streams(js: Any) -> None:
    """The streams declared and empty: each benchmark counts its own events only."""
    for spec in STREAMS:
        await ensure_stream(js, spec)
        await js.purge_stream(spec.name)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


# --- 1. the overview ----------------------------------------------------------------------------


def synthetic_job(i: int, rng: random.Random) -> JobRecord:
    """One of two years' jobs, as the read model keeps it: older ones mostly finished."""
    region = REGIONS[i % len(REGIONS)]
    created = NOW - timedelta(days=rng.uniform(0, 730))
    age = (NOW - created).days
    due = created + timedelta(days=rng.choice((2, 5, 10, 20)))
    if age > 45:
        state = rng.choices(("CLOSED", "DELIVERED", "DECLINED", "CANCELLED"), (85, 5, 5, 5))[0]
    else:
        state = rng.choice(("RAISED", "ASSIGNED", "IN_PROGRESS", "DELIVERED", "CLOSED"))
    delivered = None
    if state in ("DELIVERED", "CLOSED"):
        delivered = created + timedelta(days=rng.uniform(0.5, 25))
        delivered = min(delivered, NOW)
    taken: frozenset[str] = frozenset()
    if rng.random() < 0.15 and state != "RAISED":
        taken = frozenset({rng.choice([r for r in REGIONS if r is not region]).value})
    rated = state == "CLOSED" and rng.random() < 0.6
    return JobRecord(
        job=f"regions/{region.value}/jobs/{i:012x}",
        region=region,
        job_type=JOB_TYPES[i % len(JOB_TYPES)],
        state=state,
        state_revision=5,
        priority=rng.choices(("ROUTINE", "PRIORITY", "URGENT"), (70, 25, 5))[0],
        priority_revision=1,
        due_at=due,
        due_revision=1,
        created_at=created,
        delivered_at=delivered,
        taken_by=taken,
        rating=rng.randint(1, 5) if rated else None,
        rated_at=delivered if rated else None,
    )


def synthetic_referral(i: int, rng: random.Random) -> ReferralRecord:
    region = REGIONS[i % len(REGIONS)]
    drafted = NOW - timedelta(days=rng.uniform(0, 730))
    recent = (NOW - drafted).days < 20
    state = (
        rng.choice(("DRAFT", "SUBMITTED", "DECIDED"))
        if recent
        else rng.choices(("CLOSED", "DECIDED"), (90, 10))[0]
    )
    clocks = []
    if state != "DRAFT":
        for destination, days in (("CHILDRENS_SOCIAL_CARE", 1), ("NRM", 7)):
            if rng.random() < 0.5:
                due = drafted + timedelta(days=days + 1)
                met = (
                    drafted + timedelta(days=rng.uniform(0.2, days * 1.5))
                    if not (recent and rng.random() < 0.5)
                    else None
                )
                clocks.append(ClockRecord(destination, due, min(met, NOW) if met else None))
    return ReferralRecord(
        referral=f"regions/{region.value}/referrals/{i:012x}",
        region=region,
        drafted_at=drafted,
        state=state,
        state_at=drafted,
        state_event=f"{i:032x}",
        clocks=tuple(clocks),
    )


async def load_read_model(dsn: str, jobs: int, referrals: int) -> dict[str, Any]:
    """The read model as the consumers would leave it after these jobs' and referrals' events:
    each record, its contributions (the projection's own code) summed per day and month, its open
    deadlines. Copied in with COPY."""
    rng = random.Random(15)
    counts: dict[tuple[str, date, str, str, str, str], int] = defaultdict(int)
    deadlines: list[tuple[Any, ...]] = []

    def add(contributions: Counter[Key]) -> None:
        for key, n in contributions.items():
            for grain, bucket in ((Grain.DAY.value, key.day), (Grain.MONTH.value, month_of(key.day))):
                counts[(grain, bucket, key.region, key.force, key.figure, key.value)] += n

    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, jobs, 50_000):
            batch = [synthetic_job(i, rng) for i in range(start, min(jobs, start + 50_000))]
            rows = []
            for record in batch:
                add(record.contributions())
                deadlines.extend(
                    (d.kind.value, d.item, d.part, d.region, d.force, d.cohort, d.due_at)
                    for d in record.deadlines()
                )
                row = list(_job_row(record))
                row[11] = sorted(record.taken_by)  # an array for COPY (the update takes a string)
                rows.append((row[0], record.region.value, *row[1:]))
            await conn.copy_records_to_table(
                "jobs",
                records=rows,
                columns=[
                    "job",
                    "region",
                    "force",
                    "job_type",
                    "state",
                    "state_revision",
                    "priority",
                    "priority_revision",
                    "due_at",
                    "due_revision",
                    "created_at",
                    "delivered_at",
                    "taken_by",
                    "rating",
                    "rated_at",
                ],
            )
        for start in range(0, referrals, 50_000):
            batch_r = [synthetic_referral(i, rng) for i in range(start, min(referrals, start + 50_000))]
            for record in batch_r:
                add(record.contributions())
                deadlines.extend(
                    (d.kind.value, d.item, d.part, d.region, d.force, d.cohort, d.due_at)
                    for d in record.deadlines()
                )
            await conn.copy_records_to_table(
                "referrals",
                records=[
                    (
                        r.referral,
                        r.region.value,
                        r.drafted_at,
                        r.state,
                        r.state_at,
                        r.state_event,
                        _clocks_json(r.clocks),
                    )
                    for r in batch_r
                ],
                columns=["referral", "region", "drafted_at", "state", "state_at", "state_event", "clocks"],
            )
        await conn.copy_records_to_table(
            "counts",
            records=[(*key, n) for key, n in counts.items() if n],
            columns=["grain", "bucket", "region", "force", "figure", "value", "n"],
        )
        await conn.copy_records_to_table(
            "deadlines",
            records=deadlines,
            columns=["kind", "item", "part", "region", "force", "cohort", "due_at"],
        )
        await conn.execute("ANALYZE")
        sizes = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("jobs", "referrals", "counts", "deadlines")
        }
    finally:
        await conn.close()
    return sizes


async def timed(work: Any, runs: int) -> tuple[float, float, Any]:
    times, answer = [], None
    for _ in range(runs):
        began = time.perf_counter()
        answer = await work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times), answer


async def overview_bench(
    jobs: int, referrals: int, pg: Postgres, nats_url: str, keycloak: Keycloak | None
) -> tuple[list[str], list[str]]:
    name = f"bench_ov_{uuid.uuid4().hex[:6]}"
    database = pg.create_database(name)
    await asyncio.to_thread(upgrade, database, migrations_dir())
    dsn = database.replace("postgresql+asyncpg://", "postgresql://")
    began = time.perf_counter()
    sizes = await load_read_model(dsn, jobs, referrals)
    load_seconds = time.perf_counter() - began
    engine = create_engine(database)
    reader = PgOverviewReader(engine)
    quarter_start = date(TODAY.year, 3 * ((TODAY.month - 1) // 3) + 1, 1)
    cases = [
        (
            "national, every day since the first counted (730 days)",
            tuple(Region),
            Period(EARLIEST_DAY, TODAY),
            True,
        ),
        ("national, the last 365 days", tuple(Region), Period(TODAY - timedelta(days=364), TODAY), False),
        ("national, this quarter to date", tuple(Region), Period(quarter_start, TODAY), False),
        (
            "one region (EMSOU), the last 30 days",
            (Region.EMSOU,),
            Period(TODAY - timedelta(days=29), TODAY),
            False,
        ),
    ]
    rows: list[tuple[str, float, float, str]] = []

    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection

        async def baseline() -> int:
            found = await driver.fetch("SELECT region, state, count(*) FROM jobs GROUP BY region, state")
            return sum(r[2] for r in found)

        base_median, base_max, base_answer = await timed(baseline, 5)
    rows.append(
        (
            "baseline: count the jobs table by region and state (a scan of every job)",
            base_median,
            base_max,
            f"{base_answer:,} jobs",
        )
    )
    answers = {}
    for label, regions, period, open_start in cases:
        query = OverviewQuery(regions=regions, period=period, force="", now=NOW, open_start=open_start)

        async def read(query: OverviewQuery = query) -> Any:
            return build_overview(query, await reader.tallies(query))

        median, worst, overview = await timed(read, 15)
        answers[label] = overview
        rows.append(
            (
                f"overview read in-process: {label}",
                median,
                worst,
                f"{overview.total.jobs.raised:,} jobs, {overview.total.referrals.drafted:,} referrals",
            )
        )
    full = answers[cases[0][0]]
    assert full.total.jobs.raised == jobs, (full.total.jobs.raised, jobs)
    assert full.total.referrals.drafted == referrals
    await engine.dispose()
    grpc_note = "GetOverview through gRPC: not run (no Keycloak)"
    if keycloak is not None:
        port = free_port()
        env = {
            "TOEX_DATABASE_URL": database,
            "TOEX_NATS_URL": nats_url,
            "TOEX_OIDC_ISSUER": keycloak.issuer,
            "TOEX_GRPC_PORT": str(port),
            "TOEX_LOG_LEVEL": "WARNING",
            "TOEX_INSTALLATION": "hub",
            "TOEX_REGION": "NATIONAL",
            "TOEX_CONSUME_EVENTS": "false",
            "TOEX_SERVICE_NAME": f"oversight-{uuid.uuid4().hex[:6]}",
        }
        token = keycloak.password_token("national_coordinator.national")
        metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op BENCH overview"))
        with subprocess_server(["-m", "toex_oversight", "serve"], env, "oversight-overview"):
            await wait_serving(f"127.0.0.1:{port}")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = oversight_pb2_grpc.OversightServiceStub(channel)
                await stub.GetOverview(pb.GetOverviewRequest(), metadata=metadata)  # warm the token cache
                for label, request in (
                    ("GetOverview via gRPC: national, every day", pb.GetOverviewRequest()),
                    (
                        "GetOverview via gRPC: EMSOU, the last 30 days",
                        pb.GetOverviewRequest(
                            regions=[Region.EMSOU.to_proto()],  # type: ignore[list-item]
                            period=pb.Period(
                                first_day=(TODAY - timedelta(days=29)).isoformat(), last_day=TODAY.isoformat()
                            ),
                        ),
                    ),
                ):

                    async def call(request: pb.GetOverviewRequest = request) -> Any:
                        return await stub.GetOverview(request, metadata=metadata, timeout=30)

                    median, worst, answer = await timed(call, 15)
                    rows.append((label, median, worst, f"{answer.total.jobs.raised:,} jobs"))
        grpc_note = ""
    pg.drop_database(name)
    table = [
        "| read | median ms | max ms (of 15; baseline of 5) | answer | ratio of medians to baseline |",
        "| --- | ---: | ---: | --- | ---: |",
        *(
            f"| {label} | {median:,.1f} | {worst:,.1f} | {answer} | {median / base_median:.3f} |"
            for label, median, worst, answer in rows
        ),
    ]
    worst_national = max(m for label, m, _, _ in rows if "national" in label)
    summary = [
        f"Overview over {jobs:,} jobs and {referrals:,} referrals ({sizes['counts']:,} counter rows, "
        f"{sizes['deadlines']:,} open deadlines): at most {worst_national:,.1f} ms median for a national answer "
        f"(goal < 200 ms), against {base_median:,.0f} ms for a plain count of the jobs. Loading took {load_seconds:.0f} s."
    ]
    if grpc_note:
        summary.append(grpc_note)
    return table, summary


# --- 2. lag -------------------------------------------------------------------------------------


async def publish(
    js: Any, planned: list[Planned], times: list[float] | None = None, *, core: Any = None
) -> None:
    """Publish the pre-built events. With `core` (the connection), as plain NATS publishes and one
    flush, not one JetStream publish awaiting its acknowledgement each: a cheaper load generator,
    which leaves the CPU to what is measured (the stream still stores each, its Nats-Msg-Id still
    dedupes, and the benchmarks' final counts show any loss)."""
    loop = asyncio.get_running_loop()
    stamps = [loop.time()] * len(planned)
    if core is not None:
        for i, item in enumerate(planned):
            stamps[i] = loop.time()
            envelope = item.envelope
            await core.publish(envelope.subject, envelope.payload, headers=envelope.headers)
        await core.flush()
        if times is not None:
            times.extend(stamps)
        return

    async def one(i: int, item: Planned) -> None:
        stamps[i] = loop.time()
        envelope = item.envelope
        for attempt in range(5):
            try:
                await js.publish(envelope.subject, envelope.payload, headers=envelope.headers)
                return
            except nats.errors.TimeoutError:
                # A loaded machine: the same event again (its Nats-Msg-Id makes a second copy a
                # duplicate the stream drops), as the platform's outbox relay would.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))

    await asyncio.gather(*(one(i, item) for i, item in enumerate(planned)))
    if times is not None:
        times.extend(stamps)


def mark_seen(answer: pb.GetOverviewResponse, at: float, seen: dict[tuple[str, Region, int], float]) -> None:
    """Each probe an overview answer counts, first seen `at`: a region's k-th JobCreated is counted
    once its jobs raised exceed k (and its k-th ReferralDrafted once its referrals drafted do)."""
    for figures in answer.regions:
        region = Region.from_proto(figures.region)
        for kind, count in (("job", figures.jobs.raised), ("referral", figures.referrals.drafted)):
            for k in range(count):
                seen.setdefault((kind, region, k), at)


def lag_row(label: str, values: list[float], ratio: str) -> str:
    """A row of a lag table: | label | probes | p50 | p90 | p99 | max | ratio |."""
    if not values:
        return f"| {label} | 0 | - | - | - | - | {ratio} |"
    return (
        f"| {label} | {len(values):,} | {statistics.median(values):.1f} | {pct(values, 90):.1f} | "
        f"{pct(values, 99):.1f} | {max(values):.1f} | {ratio} |"
    )


async def lag_run(
    rate: int,
    seconds: float,
    fetch_wait: float,
    label: str,
    pg: Postgres,
    nats_server: NatsServer,
    keycloak: Keycloak,
) -> tuple[list[str], str]:
    """One run of the real service (with its consumers' fetch wait `fetch_wait`): table rows
    (the floor's first) and a summary line."""
    planned, _ = workload(int(rate * seconds), seed=2)
    database = pg.create_database(f"bench_ov_lag_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await fresh_streams(js)
    port = free_port()
    service = f"oversight-{uuid.uuid4().hex[:6]}"
    env = {
        "TOEX_DATABASE_URL": database,
        "TOEX_NATS_URL": nats_server.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_GRPC_PORT": str(port),
        "TOEX_LOG_LEVEL": "WARNING",
        "TOEX_INSTALLATION": "single",  # the reporter and the aggregator: the path is one hop longer
        "TOEX_REGION": "NATIONAL",
        "TOEX_SERVICE_NAME": service,
        "TOEX_CONSUMER_FETCH_WAIT_SECONDS": str(fetch_wait),
    }
    token = keycloak.password_token("national_coordinator.national")
    metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op BENCH lag"))
    loop = asyncio.get_running_loop()
    # Probes: (kind, region, index) of each region's JobCreated (tasking, the busy stream) and
    # ReferralDrafted (safeguarding, a quiet one) events, when published and when first counted.
    published: dict[tuple[str, Region, int], float] = {}
    seen: dict[tuple[str, Region, int], float] = {}
    floor: dict[str, float] = {}
    sent_at: dict[str, float] = {}
    probes = {p.envelope.event_id for p in planned if p.created >= 0 or p.drafted >= 0}
    jobs_probed = {p.envelope.event_id for p in planned if p.created >= 0}

    async def on_floor(msg: Any) -> None:
        event_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        if event_id in jobs_probed:
            floor[event_id] = loop.time()

    floor_sub = await js.subscribe(
        subject_of(tasking_events.JobCreated),
        cb=on_floor,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    cpu_before = cpu_after = 0.0
    polls = 0
    with subprocess_server(["-m", "toex_oversight", "serve"], env, "oversight-lag") as proc:
        await wait_serving(f"127.0.0.1:{port}")
        await asyncio.sleep(2.0)  # consumers set up
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = oversight_pb2_grpc.OversightServiceStub(channel)
            request = pb.GetOverviewRequest(regions=[Region.EMSOU.to_proto(), Region.LONDON.to_proto()])  # type: ignore[list-item]
            await stub.GetOverview(request, metadata=metadata)
            done = asyncio.Event()

            async def poll() -> None:
                nonlocal polls
                while not done.is_set():
                    answer = await stub.GetOverview(request, metadata=metadata, timeout=30)
                    at = loop.time()
                    polls += 1
                    mark_seen(answer, at, seen)
                    if len(seen) >= len(probes):
                        done.set()
                    await asyncio.sleep(0.05)

            poller = asyncio.create_task(poll())
            cpu_before = process_tree_cpu_seconds(proc.pid)
            started = loop.time()
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            for n, batch in enumerate(in_batches(planned, per_tick)):
                target = started + n * tick
                await asyncio.sleep(max(0.0, target - loop.time()))
                stamps: list[float] = []
                await publish(js, batch, stamps)
                for item, stamp in zip(batch, stamps, strict=True):
                    if item.created >= 0:
                        published[("job", item.region, item.created)] = stamp
                        sent_at[item.envelope.event_id] = stamp
                    if item.drafted >= 0:
                        published[("referral", item.region, item.drafted)] = stamp
            publishing = loop.time() - started
            try:
                await asyncio.wait_for(done.wait(), timeout=120)
            except TimeoutError:
                pass
            done.set()
            await poller
            cpu_after = process_tree_cpu_seconds(proc.pid)
            # Then every event, not only the probes (the other streams' last ones may still be
            # on their way).
            final = await stub.GetOverview(request, metadata=metadata)
            waited = loop.time()
            while final.total.events_counted < len(planned) and loop.time() - waited < 60:
                await asyncio.sleep(0.2)
                final = await stub.GetOverview(request, metadata=metadata)
    await floor_sub.unsubscribe()
    await nc.close()

    def lags_of(kind: str) -> list[float]:
        return [(seen[key] - published[key]) * 1000 for key in published if key[0] == kind and key in seen]

    job_lags, referral_lags = lags_of("job"), lags_of("referral")
    lags = job_lags + referral_lags
    floors = [(floor[e] - sent_at[e]) * 1000 for e in sent_at if e in floor]
    missing = len(published) - len(lags)
    counted = final.total.events_counted
    achieved = len(planned) / publishing

    row = lag_row
    rows = [
        row(f"{label}: publish -> plain JetStream subscriber, JobCreated (floor)", floors, "1.00"),
        row(
            f"{label}: publish -> counted in GetOverview, JobCreated (tasking)",
            job_lags,
            f"{pct(job_lags, 99) / pct(floors, 99):.1f}",
        ),
        row(
            f"{label}: publish -> counted in GetOverview, ReferralDrafted (safeguarding)",
            referral_lags,
            f"{pct(referral_lags, 99) / pct(floors, 99):.1f}",
        ),
        row(f"{label}: both probes together", lags, f"{pct(lags, 99) / pct(floors, 99):.1f}"),
    ]
    summary = (
        f"{label}: {achieved:,.0f} events/s from EMSOU and LONDON for {publishing:.0f} s ({len(planned):,} events, "
        f"{len(job_lags):,} JobCreated and {len(referral_lags):,} ReferralDrafted probes): p99 {pct(lags, 99):,.0f} ms "
        f"(goal < 2,000 ms); {counted:,} of {len(planned):,} events counted at the end, {missing} probes never seen; "
        f"the service used {cpu_after - cpu_before:.1f} CPU s ({(cpu_after - cpu_before) / publishing * 100:.0f}% of one core); "
        f"{polls:,} GetOverview polls."
    )
    return rows, summary


async def lag_bench(
    rate: int, seconds: float, rounds: int, pg: Postgres, nats_server: NatsServer, keycloak: Keycloak
) -> tuple[list[str], list[str]]:
    """The service as configured (consumers wait at most 0.1 s for a batch to fill when idle)
    and with the platform's default wait (1 s), alternating, `rounds` times each."""
    table = [
        "| run, consumers' fetch wait: path | probes | p50 ms | p90 ms | p99 ms | max ms | ratio p99 to the floor's |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = []
    for round_ in range(1, rounds + 1):
        for wait, name in ((0.1, "0.1 s (the service's setting)"), (1.0, "1 s (the platform's default)")):
            rows, line = await lag_run(rate, seconds, wait, f"{round_}, {name}", pg, nats_server, keycloak)
            table += rows
            summary.append(line)
            print(*rows, line, sep="\n", flush=True)
    return table, summary


# --- 3. catch-up --------------------------------------------------------------------------------


def noop_bus(service: str, batch: int) -> MessageBus:
    """The service's four consumers over the same event types, each handler doing nothing (the
    inbox claim and the commit are the platform's floor)."""

    async def noop(event: object, uow: object) -> None:
        return None

    bus = MessageBus()
    for consumer, types in (
        ("tasking", events.JOB_EVENTS),
        ("safeguarding", events.REFERRAL_EVENTS),
        ("pnd", (*events.PND_RESULTS, events.RECONCILIATION_COMPLETED)),
        ("entity", (events.DECONFLICTION_NOTICE,)),
    ):
        for event_type in types:
            bus.on(f"{service}-{consumer}", event_type, noop, batch=batch, domain=reporter.DOMAIN)
    return bus


async def catchup_bench(events: int, pg: Postgres, nats_server: NatsServer) -> tuple[list[str], list[str]]:
    planned, expected = workload(events, seed=3)
    again = random.Random(4).sample(planned, len(planned) // 50)
    # The services' own client (toex_common.events.nats), whose per-message steps are part of
    # the floor measured.
    nc = await connect(nats_server.url, "bench-catchup")
    js = nc.jetstream()
    await fresh_streams(js)
    # What reaches the hub after a partition: the regions' reports (OVERSIGHT), which the
    # aggregator's consumers read.
    planned = [
        dataclasses.replace(
            p, envelope=reporter.reported(decode(p.envelope.subject, p.envelope.payload, p.envelope.headers))
        )
        for p in planned
    ]
    again = [
        dataclasses.replace(
            p, envelope=reporter.reported(decode(p.envelope.subject, p.envelope.payload, p.envelope.headers))
        )
        for p in again
    ]
    began = time.perf_counter()
    for batch in in_batches(planned, 1000):
        await publish(js, batch)
    for batch in in_batches(again, 1000):
        await asyncio.gather(
            *(
                js.publish(
                    p.envelope.subject,
                    p.envelope.payload,
                    headers={**p.envelope.headers, "Nats-Msg-Id": f"{p.envelope.event_id}-again"},
                )
                for p in batch
            )
        )
    queue_seconds = time.perf_counter() - began
    total = len(planned) + len(again)
    results: dict[str, float] = {}
    cpu: dict[str, tuple[float, float]] = {}
    checks: list[str] = []
    for name in ("noop", "oversight"):
        database = pg.create_database(f"bench_ov_catchup_{name}_{uuid.uuid4().hex[:6]}")
        await asyncio.to_thread(upgrade, database, migrations_dir())
        engine = create_engine(database)
        service = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        settings = Settings(service_name=service, database_url=database, nats_url=nats_server.url)
        bus = message_bus(settings) if name == "oversight" else noop_bus(service, settings.consumer_batch)
        consumers = bus.consumers(
            lambda **c: IdempotentConsumer(nc=nc, js=js, **c),
            lambda engine=engine: PgOversightUnitOfWork(engine),  # type: ignore[misc]
        )
        for consumer in consumers:
            await consumer.setup()
        stop = asyncio.Event()
        # CPU seconds, not wall time: robust to a shared machine. This process runs only the
        # consumers while they catch up (the events were queued before); PostgreSQL's are its
        # process tree's.
        cpu_before = (own_cpu_seconds(), process_tree_cpu_seconds(pg.pid or 0))
        started = time.perf_counter()
        tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
        while (
            sum(
                c.counts[Outcome.PROCESSED] + c.counts[Outcome.DUPLICATE] + c.counts[Outcome.DEAD_LETTERED]
                for c in consumers
            )
            < total
        ):
            for task in tasks:
                if task.done():
                    task.result()
            if time.perf_counter() - started > 900:
                raise TimeoutError(f"{name}: not caught up in 900 s")
            await asyncio.sleep(0.05)
        results[name] = time.perf_counter() - started
        cpu[name] = (own_cpu_seconds() - cpu_before[0], process_tree_cpu_seconds(pg.pid or 0) - cpu_before[1])
        stop.set()
        await asyncio.gather(*tasks)
        processed = sum(c.counts[Outcome.PROCESSED] for c in consumers)
        duplicates = sum(c.counts[Outcome.DUPLICATE] for c in consumers)
        dead = sum(c.counts[Outcome.DEAD_LETTERED] for c in consumers)
        assert (processed, duplicates, dead) == (len(planned), len(again), 0), (
            name,
            processed,
            duplicates,
            dead,
        )
        if name == "oversight":
            reader = PgOverviewReader(engine)
            query = OverviewQuery(
                tuple(Region), Period(EARLIEST_DAY, TODAY + timedelta(days=1)), "", datetime.now(UTC), True
            )
            overview = build_overview(query, await reader.tallies(query))
            by = {s.region: s for s in overview.regions}
            problems = []
            for region in (Region.EMSOU, Region.LONDON):
                got = by[region]
                wanted = (
                    expected.jobs[region],
                    expected.closed[region],
                    expected.referrals[region],
                    expected.pnd[region],
                    expected.notices[region],
                )
                have = (
                    got.jobs.raised,
                    got.jobs.states["CLOSED"],
                    got.referrals.drafted,
                    got.pnd.accepted + got.pnd.rejected,
                    got.deconfliction.notices,
                )
                if wanted != have:
                    problems.append(f"{region.value}: expected {wanted}, counted {have}")
            async with engine.connect() as connection:
                raw = await connection.get_raw_connection()
                inbox = await raw.driver_connection.fetchval("SELECT count(*) FROM inbox")  # type: ignore[union-attr]
            if overview.total.events_counted != len(planned) or inbox != len(planned):
                problems.append(
                    f"events counted {overview.total.events_counted:,}, inbox {inbox:,}, published {len(planned):,}"
                )
            assert not problems, problems
            checks.append(
                f"counted {overview.total.events_counted:,} events once each ({len(again):,} duplicates refused by the inbox, "
                f"none dead-lettered); per region the jobs raised and closed, referrals, PND answers and deconfliction "
                f"notices equal what was published ({overview.total.jobs.raised:,} jobs, {overview.total.referrals.drafted:,} referrals)"
            )
        await engine.dispose()
    await nc.close()
    table = [
        "| consumers (the service's four, batch 256, same events) | events queued | seconds to catch up | events/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| IdempotentConsumer, no-op handler (inbox claim + commit) | {total:,} | {results['noop']:.1f} | {total / results['noop']:,.0f} | 1.00 (baseline) |",
        f"| oversight projections (jobs, referrals, counters, deadlines) | {total:,} | {results['oversight']:.1f} | "
        f"{total / results['oversight']:,.0f} | {results['noop'] / results['oversight']:.2f} |",
    ]
    table += [
        "",
        "CPU per event while catching up (user + system seconds over the events queued, from /proc: "
        "robust to other work on the machine, unlike the wall time above):",
        "",
        "| consumers | this process (the consumers) µs/event | PostgreSQL µs/event | total µs/event | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    floor = sum(cpu["noop"])
    for name, label in (("noop", "no-op handler (baseline)"), ("oversight", "oversight projections")):
        own_cpu, pg_cpu = cpu[name]
        table.append(
            f"| {label} | {own_cpu / total * 1e6:,.0f} | {pg_cpu / total * 1e6:,.0f} | "
            f"{(own_cpu + pg_cpu) / total * 1e6:,.0f} | {(own_cpu + pg_cpu) / floor:.2f} |"
        )
    summary = [
        f"Catch-up of {len(planned):,} events (+{len(again):,} republished duplicates) queued while stopped: "
        f"{results['oversight']:.1f} s (goal < 60 s); queueing them took {queue_seconds:.0f} s. {checks[0]}."
    ]
    return table, summary


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small runs, for checking the benchmark works")
    parser.add_argument("--only", choices=["overview", "lag", "catchup"])
    parser.add_argument(
        "--federation",
        action="store_true",
        help="lag and catch-up through the real federation (bench/oversight/federated.py)",
    )
    parser.add_argument(
        "--reporter",
        choices=["direct", "outbox"],
        help="with --federation: how every installation's reporter publishes (TOEX_REPORTER; the service's default if not given)",
    )
    parser.add_argument(
        "--hub-core",
        action="store_true",
        help="with --federation: the hub's processes on CPU 0, the regions' and the load on CPU 1 (the hub's own hardware, stood in for)",
    )
    parser.add_argument(
        "--hub-first",
        action="store_true",
        help="with --federation: the regions' processes at a lower CPU priority (nice 10) than the hub's, on either core",
    )
    parser.add_argument(
        "--partition-minutes",
        type=float,
        default=0.0,
        help="with --federation: keep EMSOU's link cut this long in all during the catch-up (default: as long as "
        "publishing and reporting the events take)",
    )
    args = parser.parse_args()
    if args.partition_minutes and not args.federation:
        parser.error("--partition-minutes goes with --federation")
    if (args.hub_core or args.hub_first) and not args.federation:
        parser.error("--hub-core and --hub-first go with --federation")
    if args.hub_core and args.hub_first:
        parser.error("--hub-core or --hub-first, not both")
    if args.federation:
        from bench.oversight import federated  # it imports this module's helpers

        if args.only == "overview":
            parser.error("--federation measures lag and catchup only")
        await federated.measure(args)
        return
    jobs, referrals = (100_000, 20_000) if args.quick else (1_000_000, 200_000)
    rate, seconds = (1000, 10.0) if args.quick else (1000, 60.0)
    events = 10_000 if args.quick else 100_000
    work = Path(tempfile.mkdtemp(prefix="toex-bench-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg")
    nats_server = NatsServer(store_dir=work / "nats")
    external = os.environ.get("TOEX_BENCH_KEYCLOAK_URL")
    keycloak = (
        Keycloak.external(external)
        if external
        else Keycloak(home_dir=work / "kc", realm_file=Path("deploy/keycloak/realm-toex.json"))
    )
    sections: dict[str, tuple[list[str], list[str]]] = {}
    try:
        pg.start()
        nats_server.start()
        if args.only in (None, "overview", "lag") and not external:
            keycloak.start()
        if args.only in (None, "overview"):
            sections["overview"] = await overview_bench(jobs, referrals, pg, nats_server.url, keycloak)
            print(*sections["overview"][0], *sections["overview"][1], sep="\n", flush=True)
        if args.only in (None, "lag"):
            sections["lag"] = await lag_bench(
                rate, seconds, 1 if args.quick else 2, pg, nats_server, keycloak
            )
        if args.only in (None, "catchup"):
            sections["catchup"] = await catchup_bench(events, pg, nats_server)
    finally:
        if not external and keycloak.running:
            keycloak.stop()
        nats_server.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    titles = {
        "overview": (
            "Overview answer",
            f"The read model of {jobs:,} jobs raised over two years in the eleven regions (older ones mostly closed, "
            f"15% worked by another region, 60% of the closed rated) and {referrals:,} referrals with their decision "
            "clocks, loaded with the projection's own code (what the consumers would have left). In-process reads "
            "are the service's reader and overview; the gRPC reads go through the real service in its own process. "
            "The baseline is the plainest exact answer a design without counters would need: one scan of the jobs table.",
        ),
        "lag": (
            "Region event to overview lag",
            f"{rate:,} events/s for {seconds:.0f} s, about three quarters tasking (jobs raised, assigned, worked, "
            "delivered, closed, rated; 30% taken by the other region), the rest referrals, PND answers and "
            "deconfliction notices, from EMSOU and LONDON. Both regions' subjects are on ONE nats-server: the hub's "
            "sourcing of region streams over leaf nodes is not in this path (it adds the leaf link's latency). "
            "GetOverview is polled every 50 ms (plus its own time), which the lag includes. Each run starts a fresh "
            "service and database on emptied streams; the service as configured (an idle consumer takes what has "
            "arrived after at most 0.1 s) and with the platform's default fetch wait (1 s) alternate.",
        ),
        "catchup": (
            "Catch-up after a partition",
            f"{events:,} events of the same mix queued on the streams while nothing consumes them (a region cut off "
            "from the hub and reconnected, or the service down), then the consumers started.",
        ),
    }
    parts = [
        "# National oversight benchmarks (bench/oversight)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.oversight.run"
        f"{' --quick' if args.quick else ''}{f' --only {args.only}' if args.only else ''}`. PostgreSQL (fsync on) and "
        "nats-server with JetStream file storage on loopback, started by the benchmark; the machine's 2 cores are "
        "shared with other work, so figures are noisy.",
        "",
    ]
    summaries: list[str] = []
    for key, (table, summary) in sections.items():
        title, text = titles[key]
        parts += [f"## {title}", "", text, "", *table, ""]
        summaries += summary
    parts += ["## Summary", "", *(f"- {line}" for line in summaries), ""]
    report = "\n".join(parts)
    if not args.only:
        write_results("oversight", report)
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
