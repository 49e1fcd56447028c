"""Tasking benchmarks (issue 2).

1. CreateJob and GetJob through the full interceptor chain (authentication with a real Keycloak
   token, policy, audit to PostgreSQL, tracing, error mapping), 50 concurrent calls, against a
   bare grpc.aio echo server measured in the same run with the same client and payload size.
   Both servers run as separate processes; the load generator is this process.
2. Outbox relay -> JetStream -> idempotent consumer, events/s end to end, against raw nats-py
   JetStream publishing with acknowledgements (the relay's own way, publish_async, in windows
   of the relay's batch size) in the same run.

    python -m bench.tasking.run [--quick] [--seconds N]

Set TOEX_BENCH_KEYCLOAK_URL to reuse a running Keycloak with the toex realm (e.g. `make up`'s);
otherwise one is started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.events.v1 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.db import create_engine, platform_metadata, session_factory
from toex_common.events import StreamSpec, build_event, ensure_stream
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.migrations import upgrade
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region
from toex_tasking.__main__ import migrations_dir

from bench.common import LoadResult, closed_loop, machine, subprocess_server, wait_serving, write_results

CONCURRENCY = 50


def create_request() -> pb.CreateJobRequest:
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    return pb.CreateJobRequest(
        parent="regions/EMSOU",
        job=pb.Job(
            requesting_unit="Derbyshire Constabulary",
            requesting_officer="DS Bench",
            operation_name="Op BENCH",
            job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
            priority=pb.PRIORITY_ROUTINE,
            due_time=due,
            description="Phone number index and contact analysis for persons of interest",
        ),
    )


def floor_row(name: str, result: LoadResult, baseline: LoadResult, floor: LoadResult | None) -> str:
    to_floor = f"{result.rate / floor.rate:.2f}" if floor else "1.00 (floor)"
    cpu = " / ".join(
        f"{result.cpu_us_per_call(p):,.0f}" if p in result.cpu_seconds else "-"
        for p in ("load generator", "server", "PostgreSQL", "nats-server")
    )
    return (
        f"| {name} | {result.rate:,.0f} | {result.p50:.1f} | {result.pct(99):.1f} | {result.errors} | "
        f"{result.rate / baseline.rate:.2f} | {to_floor} | {cpu} |"
    )


async def grpc_bench(
    seconds: float, pg: Postgres, nats: NatsServer, keycloak: Keycloak
) -> tuple[str, list[str]]:
    echo_port, tasking_port, chain_port = free_port(), free_port(), free_port()
    reading_port, writing_port = free_port(), free_port()
    database = pg.create_database(f"bench_tasking_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    env = {
        "TOEX_DATABASE_URL": database,
        "TOEX_NATS_URL": nats.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_GRPC_PORT": str(tasking_port),
        "TOEX_DIRECTORY": "static",
        "TOEX_LOG_LEVEL": "WARNING",
    }
    token = keycloak.password_token("national_coordinator.national")
    metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op BENCH"))
    request = create_request()
    payload = request.SerializeToString()
    assert pg.pid and nats.pid
    chain_args = ["-m", "bench.tasking.chain_server", str(chain_port), database, keycloak.issuer]
    with (
        subprocess_server(["-m", "bench.tasking.echo_server", str(echo_port)], {}, "echo") as echo_proc,
        subprocess_server(
            ["-m", "bench.tasking.echo_server", str(reading_port), database, "read"], {}, "reading"
        ) as reading_proc,
        subprocess_server(
            ["-m", "bench.tasking.echo_server", str(writing_port), database, "write"], {}, "writing"
        ) as writing_proc,
        subprocess_server(chain_args, {}, "chain") as chain_proc,
        subprocess_server(["-m", "toex_tasking", "serve"], env, "tasking") as tasking_proc,
    ):
        for port in (echo_port, reading_port, writing_port, chain_port, tasking_port):
            await wait_serving(f"127.0.0.1:{port}")

        def watch(server: subprocess.Popen[bytes]) -> dict[str, int]:
            return {"server": server.pid, "PostgreSQL": pg.pid or 0, "nats-server": nats.pid or 0}

        async def load(port: int, server: subprocess.Popen[bytes], with_token: bool) -> LoadResult:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                method = channel.unary_unary("/bench.Echo/Echo")
                md = metadata if with_token else None
                return await closed_loop(
                    lambda: method(payload, metadata=md),
                    concurrency=CONCURRENCY,
                    seconds=seconds,
                    watch=watch(server),
                )

        baseline = await load(echo_port, echo_proc, False)
        read_floor = await load(reading_port, reading_proc, False)
        write_floor = await load(writing_port, writing_proc, False)
        chain_result = await load(chain_port, chain_proc, True)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{tasking_port}") as channel:
            stub = tasking_pb2_grpc.TaskingServiceStub(channel)
            created = await stub.CreateJob(request, metadata=metadata)
            get = pb.GetJobRequest(name=created.job.name)
            # GetJob first: the jobs and outbox rows CreateJob's run leaves behind set autovacuum
            # and the relay working, which would fall into the next run's window.
            get_result = await closed_loop(
                lambda: stub.GetJob(get, metadata=metadata),
                concurrency=CONCURRENCY,
                seconds=seconds,
                watch=watch(tasking_proc),
            )
            create_result = await closed_loop(
                lambda: stub.CreateJob(request, metadata=metadata),
                concurrency=CONCURRENCY,
                seconds=seconds,
                watch=watch(tasking_proc),
            )
    lines = [
        "| server | calls/s | p50 ms | p99 ms | errors | ratio to bare | ratio to its floor "
        "| CPU us per call: load generator / server / PostgreSQL / nats-server |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        floor_row("bare grpc.aio echo (same payload)", baseline, baseline, None),
        floor_row(
            "read floor: bare echo + one PostgreSQL primary-key read per call", read_floor, baseline, None
        ),
        floor_row(
            "write floor: bare echo + one durable PostgreSQL INSERT per call", write_floor, baseline, None
        ),
        floor_row(
            "echo behind the full chain (auth, policy, audit to PostgreSQL, tracing)",
            chain_result,
            baseline,
            None,
        ),
        floor_row("CreateJob, full chain + PostgreSQL + outbox", create_result, baseline, write_floor),
        floor_row("GetJob, full chain + PostgreSQL", get_result, baseline, read_floor),
    ]
    summary = [
        f"CreateJob {create_result.rate / write_floor.rate:.2f}x of the write floor (goal: at least 0.7) and "
        f"GetJob {get_result.rate / read_floor.rate:.2f}x of the read floor (goal: at least 0.8), each through "
        f"the full chain; against the bare echo: CreateJob {create_result.rate / baseline.rate:.2f}x, GetJob "
        f"{get_result.rate / baseline.rate:.2f}x, the chain alone {chain_result.rate / baseline.rate:.2f}x",
        f"CPU per call in the server process: CreateJob {create_result.cpu_us_per_call('server'):,.0f} us "
        f"(write floor {write_floor.cpu_us_per_call('server'):,.0f}), GetJob "
        f"{get_result.cpu_us_per_call('server'):,.0f} us (read floor {read_floor.cpu_us_per_call('server'):,.0f})",
    ]
    return "\n".join(lines), summary


async def outbox_bench(events: int, pg: Postgres, nats: NatsServer) -> tuple[str, list[str]]:
    batch = 500
    nc = await connect(nats.url, "bench")
    js = nc.jetstream()
    try:
        # Baseline: raw nats-py JetStream publishing with acks, in windows of the relay's batch size.
        raw_domain = f"raw{uuid.uuid4().hex[:6]}"
        await ensure_stream(js, StreamSpec.for_domain(raw_domain.upper(), raw_domain))
        raw_events = [
            build_event(
                events_pb2.FeedbackRecorded(job="regions/EMSOU/jobs/x"),
                domain=raw_domain,
                source="bench",
                region=Region.EMSOU,
            )
            for _ in range(events)
        ]
        # The same way the relay publishes (asynchronous publishes, every acknowledgement awaited
        # before the next window), minus the outbox: what the relay adds is all that is measured.
        started = time.perf_counter()
        for i in range(0, events, batch):
            acks = [
                await js.publish_async(e.subject, e.payload, headers=e.headers)
                for e in raw_events[i : i + batch]
            ]
            await asyncio.gather(*acks)
        raw_rate = events / (time.perf_counter() - started)
        # The baseline of earlier runs (one request per event, gathered), for comparison with them.
        request_events = raw_events[: events // 5]
        for event in request_events:
            event.headers["Nats-Msg-Id"] = f"request-{event.event_id}"
        started = time.perf_counter()
        for i in range(0, len(request_events), batch):
            await asyncio.gather(
                *(js.publish(e.subject, e.payload, headers=e.headers) for e in request_events[i : i + batch])
            )
        request_rate = len(request_events) / (time.perf_counter() - started)

        # Outbox -> relay -> JetStream -> idempotent consumer (inbox row per event, no-op handler).
        domain = f"box{uuid.uuid4().hex[:6]}"
        spec = StreamSpec.for_domain(domain.upper(), domain)
        await ensure_stream(js, spec)
        database = pg.create_database(f"bench_outbox_{uuid.uuid4().hex[:8]}")
        engine = create_engine(database)
        async with engine.begin() as conn:
            await conn.run_sync(platform_metadata.create_all)
        sessions = session_factory(engine)
        for i in range(0, events, batch):
            uow = SqlAlchemyUnitOfWork(sessions)
            async with uow:
                for _ in range(min(batch, events - i)):
                    uow.publish(
                        build_event(
                            events_pb2.FeedbackRecorded(job="regions/EMSOU/jobs/x"),
                            domain=domain,
                            source="bench",
                            region=Region.EMSOU,
                        )
                    )
                await uow.commit()
        # The consumer runs in its own process, as a consuming service does; the relay runs here.
        consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.tasking.consumer_proc",
                database,
                nats.url,
                spec.name,
                spec.subjects[0],
                str(events),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert consumer.stdout is not None
        await asyncio.to_thread(consumer.stdout.readline)  # "ready"
        stop = asyncio.Event()
        relay = OutboxRelay(engine, js, batch_size=batch, poll_seconds=0.05)
        started = time.time()
        relay_task = asyncio.create_task(relay.run(stop))
        relayed_at = None
        while relay.published < events:
            await asyncio.sleep(0.02)
        relayed_at = time.time()
        finished_line = await asyncio.to_thread(consumer.stdout.readline)
        consumer.wait(30)
        finished = float(finished_line.split()[1])
        e2e_rate = events / (finished - started)
        relay_rate = events / (relayed_at - started)
        stop.set()
        await relay_task
        await engine.dispose()
    finally:
        await nc.close()
    table = "\n".join(
        [
            "| path | events/s | ratio to raw |",
            "| --- | ---: | ---: |",
            f"| raw nats-py JetStream publish_async, acks awaited per window of {batch} | {raw_rate:,.0f} | 1.00 (baseline) |",
            f"| raw nats-py JetStream publish (a request per event), {batch} at a time: the earlier baseline | {request_rate:,.0f} | {request_rate / raw_rate:.2f} |",
            f"| outbox rows -> relay -> JetStream (relay alone, same run) | {relay_rate:,.0f} | {relay_rate / raw_rate:.2f} |",
            f"| outbox rows -> relay -> JetStream -> idempotent consumer (inbox + commit per batch) | {e2e_rate:,.0f} | {e2e_rate / raw_rate:.2f} |",
        ]
    )
    return table, [
        f"outbox end to end {e2e_rate / raw_rate:.2f}x of raw publishing ({events:,} events; goal: at least 0.5); "
        f"{e2e_rate / request_rate:.2f}x of the earlier baseline (a request per event)"
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for checking the benchmark works")
    parser.add_argument(
        "--seconds", type=float, default=None, help="seconds per load run (default 15, quick 3)"
    )
    parser.add_argument("--only", choices=["grpc", "outbox"], help="run one of the two benchmarks")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    events = 5_000 if args.quick else 50_000
    work = Path(tempfile.mkdtemp(prefix="toex-bench-"))
    work.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    pg = Postgres(data_dir=work / "pg")
    nats = NatsServer(store_dir=work / "nats")
    external = os.environ.get("TOEX_BENCH_KEYCLOAK_URL")
    keycloak = (
        Keycloak.external(external)
        if external
        else Keycloak(home_dir=work / "kc", realm_file=Path("deploy/keycloak/realm-toex.json"))
    )
    try:
        pg.start()
        nats.start()
        grpc_table, grpc_summary = "(not run)", []
        outbox_table, outbox_summary = "(not run)", []
        if args.only in (None, "grpc"):
            if not external:
                keycloak.start()
            grpc_table, grpc_summary = await grpc_bench(seconds, pg, nats, keycloak)
        if args.only in (None, "outbox"):
            outbox_table, outbox_summary = await outbox_bench(events, pg, nats)
    finally:
        if not external and keycloak.running:
            keycloak.stop()
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(
        [
            "# Tasking benchmarks",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.tasking.run"
            f"{' --quick' if args.quick else ''}`. PostgreSQL with default durability (fsync on), nats-server with "
            "JetStream file storage, Keycloak tokens (RS256), all on loopback. The servers are separate processes; the "
            f"load generator (this process, {CONCURRENCY} concurrent calls, closed loop, {seconds:.0f} s per run after "
            "a 1 s warm-up) shares the same 2 cores with them.",
            "",
            "## gRPC through the full interceptor chain",
            "",
            grpc_table,
            "",
            "## Outbox relay to an idempotent consumer",
            "",
            outbox_table,
            "",
            "## Summary",
            "",
            *(f"- {line}" for line in grpc_summary + outbox_summary),
            "",
        ]
    )
    path = write_results("tasking", report)
    print(report)
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
