"""The national performance pack over a quarter of 1,000,000 jobs (issue 16; goal: under 30 s).

The read model is loaded as the consumers would leave it (bench/oversight/run.py's loader, the
projection's own code), with every job raised in one quarter and asked for by one of the 45
requesting forces. The real oversight service runs in its own process (interceptors, a Keycloak
token, audit). Timed, alternating in one session:

- baseline: one bare GetOverview for the quarter (what `toex national overview` asks);
- `toex national pack --period QUARTER -o pack.xlsx` (the CLI in-process: 1 + 45 GetOverview
  calls, then the workbook);
- the same with `-o pack.pdf`.

    python -m bench.oversight.pack [--quick] [--rounds N]

Set TOEX_BENCH_KEYCLOAK_URL to reuse a running Keycloak with the toex realm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from click.testing import CliRunner
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex_cli.main import main as toex
from toex_common.migrations import upgrade
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.forces import Force
from toex_oversight.__main__ import migrations_dir
from toex_oversight.domain.model import JobRecord

from bench.common import machine, subprocess_server, wait_serving, write_results
from bench.oversight import run

FORCES = list(Force)


def last_full_quarter(today: date) -> tuple[str, date, date]:
    quarter = (today.month - 1) // 3  # the current one, 0-based
    year, quarter = (today.year - 1, 4) if quarter == 0 else (today.year, quarter)
    first = date(year, 3 * quarter - 2, 1)
    last = (date(year + (quarter == 4), 1 if quarter == 4 else 3 * quarter + 1, 1)) - timedelta(days=1)
    return f"{year}-Q{quarter}", first, last


def quarter_job(first: date, last: date) -> Any:
    """run.synthetic_job's jobs, moved into the quarter and given a requesting force."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    span = (last - first).days + 1
    generate = run.synthetic_job

    def make(i: int, rng: random.Random) -> JobRecord:
        record = generate(i, rng)
        created = start + timedelta(
            days=rng.uniform(0, span - 0.1)
        )  # Europe/London days: keep off the last UTC hour
        shift = created - record.created_at
        delivered = min(record.delivered_at + shift, run.NOW) if record.delivered_at else None
        force = FORCES[i % len(FORCES)]
        return replace(
            record,
            created_at=created,
            due_at=record.due_at + shift,
            delivered_at=delivered,
            rated_at=delivered if record.rating else None,
            force=force.code,
        )

    return make


def invoke_pack(env: dict[str, str | None], period: str, target: Path) -> None:
    result = CliRunner().invoke(
        toex, ["national", "pack", "--period", period, "-o", str(target)], env=env, catch_exceptions=False
    )
    if result.exit_code != 0:
        raise RuntimeError(result.output)


async def measure(jobs: int, rounds: int) -> tuple[list[str], list[str]]:
    period, first, last = last_full_quarter(run.TODAY)
    work = Path(tempfile.mkdtemp(prefix="toex-bench-pack-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg")
    nats_server = NatsServer(store_dir=work / "nats")
    external = os.environ.get("TOEX_BENCH_KEYCLOAK_URL")
    keycloak = (
        Keycloak.external(external)
        if external
        else Keycloak(home_dir=work / "kc", realm_file=Path("deploy/keycloak/realm-toex.json"))
    )
    original = run.synthetic_job
    times: dict[str, list[float]] = {"baseline": [], "xlsx": [], "pdf": []}
    try:
        pg.start()
        nats_server.start()
        if not external:
            keycloak.start()
        database = pg.create_database(f"bench_pack_{uuid.uuid4().hex[:6]}")
        await asyncio.to_thread(upgrade, database, migrations_dir())
        run.synthetic_job = quarter_job(first, last)  # the loader's generator, for this run only
        began = time.perf_counter()
        try:
            sizes = await run.load_read_model(
                database.replace("postgresql+asyncpg://", "postgresql://"), jobs, 0
            )
        finally:
            run.synthetic_job = original
        load_seconds = time.perf_counter() - began
        port = free_port()
        env = {
            "TOEX_DATABASE_URL": database,
            "TOEX_NATS_URL": nats_server.url,
            "TOEX_OIDC_ISSUER": keycloak.issuer,
            "TOEX_GRPC_PORT": str(port),
            "TOEX_LOG_LEVEL": "WARNING",
            "TOEX_INSTALLATION": "hub",
            "TOEX_REGION": "NATIONAL",
            "TOEX_CONSUME_EVENTS": "false",
            "TOEX_SERVICE_NAME": f"oversight-{uuid.uuid4().hex[:6]}",
        }
        token = keycloak.password_token("national_coordinator.national")
        cli_env: dict[str, str | None] = {
            "TOEX_TOKEN": token,
            "TOEX_OVERSIGHT_ADDR": f"127.0.0.1:{port}",
            "TOEX_PURPOSE": "Op BENCH pack",
            "TOEX_INSTALLATIONS": None,
            "TOEX_CONFIG_DIR": str(work / "cli"),
        }
        metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op BENCH pack"))
        request = pb.GetOverviewRequest(
            period=pb.Period(first_day=first.isoformat(), last_day=last.isoformat())
        )
        with subprocess_server(["-m", "toex_oversight", "serve"], env, "oversight-pack"):
            await wait_serving(f"127.0.0.1:{port}")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = oversight_pb2_grpc.OversightServiceStub(channel)
                answer = await stub.GetOverview(request, metadata=metadata, timeout=60)  # warm up
                assert answer.total.jobs.raised == jobs, (answer.total.jobs.raised, jobs)
                for _ in range(rounds):
                    began = time.perf_counter()
                    await stub.GetOverview(request, metadata=metadata, timeout=60)
                    times["baseline"].append(time.perf_counter() - began)
                    for kind in ("xlsx", "pdf"):
                        target = work / f"pack.{kind}"
                        began = time.perf_counter()
                        await asyncio.to_thread(invoke_pack, cli_env, period, target)
                        times[kind].append(time.perf_counter() - began)
                        assert target.stat().st_size > 0
        sizes_note = (
            f"{sizes['jobs']:,} jobs, {sizes['counts']:,} counter rows, {sizes['deadlines']:,} open deadlines"
        )
    finally:
        if not external and keycloak.running:
            keycloak.stop()
        nats_server.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["baseline"])
    labels = {
        "baseline": "baseline: one bare GetOverview for the quarter (gRPC)",
        "xlsx": "`toex national pack -o pack.xlsx` (46 GetOverview calls + workbook)",
        "pdf": "`toex national pack -o pack.pdf` (46 GetOverview calls + PDF)",
    }
    table = [
        f"| run | median s | min s | max s (of {rounds}) | ratio of medians to baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {labels[k]} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | "
            f"{statistics.median(v) / base:.1f} |"
            for k, v in times.items()
        ),
    ]
    worst = max(statistics.median(times["xlsx"]), statistics.median(times["pdf"]))
    summary = [
        f"Period {period} ({first} to {last}); read model: {sizes_note}; loading took {load_seconds:.0f} s.",
        f"The pack's slower form takes {worst:.2f} s median (goal < 30 s); "
        f"the bare GetOverview {base * 1000:.0f} ms median.",
    ]
    return table, summary


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 jobs, for checking the benchmark works")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    jobs = 100_000 if args.quick else 1_000_000
    table, summary = await measure(jobs, args.rounds)
    report = "\n".join(
        [
            "# National performance pack benchmark (bench/oversight/pack.py)",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.oversight.pack"
            f"{' --quick' if args.quick else ''} --rounds {args.rounds}`. PostgreSQL (fsync on) and nats-server "
            "on loopback, started by the benchmark; the oversight service in its own process. The three runs "
            "alternate within each round (baseline, xlsx, pdf), in one session; the machine's 2 cores are shared "
            "with other work, so figures are noisy.",
            "",
            "## Pack against a bare GetOverview",
            "",
            f"{jobs:,} jobs raised in one quarter in the eleven regions, each asked for by one of the 45 requesting "
            "forces in turn (older states as bench/oversight/run.py's generator makes them).",
            "",
            *table,
            "",
            "## Summary",
            "",
            *(f"- {line}" for line in summary),
            "",
        ]
    )
    if not args.quick:
        write_results("oversight-pack", report)
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
