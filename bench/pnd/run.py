"""PND sync benchmarks; writes bench/results/pnd.md.

    uv run --no-sync python bench/pnd/run.py --quick     # under a minute, for development
    uv run --no-sync python bench/pnd/run.py             # the issue's figures

1. Submissions per second to the PND simulator with acknowledgements stored, through the
   service's real sender (handlers, PostgreSQL queue, bulk transport over HTTP, answers and
   events written back in the same transaction), as a ratio to the simulator's own rate for a
   direct client that posts the same bulk batches with the same concurrency and stores nothing.
2. A reconciliation of N local records (1,000,000 in the full run) against the simulator's
   holdings: the holdings report streamed over HTTP into PostgreSQL with COPY, every record
   classified, out-of-step items stored, per-region figures and events written. Baseline: the
   time to only download the same holdings report from the simulator.

PostgreSQL is a throwaway cluster (toex_devstack, fsync off); the simulator is its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region
from toex_pnd import bulk
from toex_pnd.__main__ import migrations_dir
from toex_pnd.adapters.pnd_http import HttpPndGateway
from toex_pnd.adapters.repository import _record_row, _submission_row
from toex_pnd.adapters.uow import SqlPndUnitOfWork
from toex_pnd.domain import commands
from toex_pnd.domain.model import Grading, Handling, IntelligenceRecord, Kind
from toex_pnd.service_layer import handlers
from toex_pnd.simulator.store import PndStore

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "pnd.md"
ORG = "TOEX"
BATCH = 500
SENDERS = 2
REGIONS = [r for r in Region if r is not Region.NATIONAL]
GRADING = Grading("1", "B", Handling.P)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Simulator:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toex_pnd.simulator",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None


def phone_line(ref: str, sid: str, i: int) -> dict[str, Any]:
    return {
        "submission_id": sid,
        "operation": "CREATE",
        "source_ref": ref,
        "record_version": 1,
        "region": "EMSOU",
        "kind": "PHONE",
        "changed": datetime.now(UTC).isoformat(),
        "grading": GRADING.to_json(),
        "entity": {"phone": {"e164": f"+4477{i:08d}"}},
        "links": [],
    }


async def direct_rate(sim: Simulator, n: int) -> float:
    """The simulator's own rate: a client posting bulk batches, SENDERS at a time, storing nothing."""
    lines = [phone_line(f"bench/direct/{i}", str(uuid.uuid4()), i) for i in range(n)]
    batches = [lines[i : i + BATCH] for i in range(0, n, BATCH)]
    async with httpx.AsyncClient(base_url=sim.url, timeout=60) as client:

        async def worker(mine: list[list[dict[str, Any]]]) -> None:
            for batch in mine:
                document = bulk.encode_batch(uuid.uuid4().hex, ORG, batch)
                response = await client.post(
                    "/bulk/v1/batches", content=document, headers={"Content-Type": bulk.CONTENT_TYPE}
                )
                _, answers = bulk.decode_ack(response.content)
                assert all(a["outcome"] == "ACCEPTED" for a in answers)

        started = time.perf_counter()
        await asyncio.gather(*(worker(batches[k::SENDERS]) for k in range(SENDERS)))
        return n / (time.perf_counter() - started)


async def queue_records(database: str, n: int, *, prefix: str) -> None:
    """Put n new records and their version-1 submissions in the queue (setup, not timed)."""
    engine = create_engine(database, pool_size=2)
    now = datetime.now(UTC)
    records, subs = [], []
    for i in range(n):
        record, submission = IntelligenceRecord.create(
            record_id=f"{prefix}{i:08d}",
            region=REGIONS[i % len(REGIONS)],
            kind=Kind.PHONE,
            entity={"phone": {"e164": f"+4478{i:08d}"}},
            grading=GRADING,
            links=[],
            created_by="bench",
            now=now,
        )
        records.append(_record_row(record))
        subs.append(_submission_row(submission))
    from toex_pnd.adapters.tables import intelligence, submissions

    async with engine.begin() as conn:
        for k in range(0, n, 5000):
            await conn.execute(intelligence.insert(), records[k : k + 5000])
            await conn.execute(submissions.insert(), subs[k : k + 5000])
    await engine.dispose()


async def service_rate(database: str, sim: Simulator, n: int) -> float:
    """The service's sender draining n queued submissions: answers and events stored."""
    await queue_records(database, n, prefix="svc")
    engine = create_engine(database)
    sessions = session_factory(engine)
    gateway = HttpPndGateway(sim.url, ORG, timeout=60)
    deps = handlers.Deps(uow=lambda: SqlPndUnitOfWork(sessions), pnd=gateway)  # type: ignore[arg-type,return-value]
    answered = 0

    async def sender(k: int) -> None:
        nonlocal answered
        command = commands.DispatchOnce(k, SENDERS, BATCH)
        while True:
            result = await handlers.dispatch_once(command, deps)
            answered += result.answered
            if result.sent == 0:
                return

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(SENDERS)))
    elapsed = time.perf_counter() - started
    await gateway.close()
    await engine.dispose()
    assert answered == n, (answered, n)
    return n / elapsed


async def load_local(database: str, n: int, rng: random.Random) -> dict[str, int]:
    """n local records via COPY, with a realistic spread of states; what the PND should hold."""
    engine = create_engine(database, pool_size=2)
    now = datetime.now(UTC)
    entity = json.dumps({"phone": {"e164": "+447700900123"}})
    grading = json.dumps(GRADING.to_json())
    held_version: dict[str, int] = {}
    rows = []
    for i in range(n):
        record_id = f"rec{i:08d}"
        region = REGIONS[i % len(REGIONS)].value
        version = 1 + i % 3
        roll = rng.random()
        state, pnd_version = "SYNCED", version
        if roll < 0.005:
            state, pnd_version = "HELD", version - 1
        elif roll < 0.01:
            state, pnd_version = "REJECTED", version - 1
        elif roll < 0.02:
            state, pnd_version = "PENDING", 0  # missing on the PND
        elif roll < 0.025:
            state, pnd_version = "PENDING", version - 1  # stale there
        if pnd_version:
            held_version[f"regions/{region}/intelligence/{record_id}"] = pnd_version
        changed = now - timedelta(seconds=rng.randint(0, 7 * 86400))
        rows.append(
            (
                record_id,
                region,
                "PHONE",
                entity,
                grading,
                "[]",
                version,
                "bench",
                changed,
                changed,
                None,
                state,
                "",
                pnd_version,
                "[]",
                "",
                pnd_version > 0,
            )
        )
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        await raw.execute("ALTER TABLE intelligence SET UNLOGGED")
        await raw.copy_records_to_table(
            "intelligence",
            records=rows,
            columns=[
                "id",
                "region",
                "kind",
                "entity",
                "grading",
                "links",
                "version",
                "created_by",
                "created_at",
                "updated_at",
                "deleted_at",
                "sync_state",
                "pnd_id",
                "pnd_version",
                "rejection",
                "released_by",
                "ever_sent",
            ],
        )
        await raw.execute("ALTER TABLE intelligence SET LOGGED")
        await raw.execute("ANALYZE intelligence")
    await engine.dispose()
    return held_version


async def reconcile_once(database: str, sim: Simulator) -> tuple[float, handlers.Report]:
    engine = create_engine(database)
    gateway = HttpPndGateway(sim.url, ORG, timeout=120)
    deps = handlers.Deps(uow=lambda: SqlPndUnitOfWork(session_factory(engine)), pnd=gateway)  # type: ignore[arg-type,return-value]
    started = time.perf_counter()
    report, _ = await handlers.run_reconciliation(commands.RunReconciliation("bench", False), deps)
    elapsed = time.perf_counter() - started
    await gateway.close()
    await engine.dispose()
    return elapsed, report


async def download_holdings(sim: Simulator) -> tuple[float, int]:
    size = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=sim.url, timeout=300) as client:
        async with client.stream("GET", "/holdings/v1", params={"organisation": ORG}) as response:
            async for chunk in response.aiter_bytes(1 << 20):
                size += len(chunk)
    return time.perf_counter() - started, size


async def main(quick: bool) -> None:
    submissions = 5_000 if quick else 50_000
    local_records = 100_000 if quick else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="toex-pnd-bench-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="toex-pnd-bench-pg-"))
    pg = Postgres(data_dir=pg_dir, fsync=False)
    pg.start()
    lines: list[str] = []
    try:
        # 1. submissions/s
        sim = Simulator(work / "sim-throughput")
        sim.start()
        database = pg.create_database("bench_throughput")
        await asyncio.to_thread(upgrade, database, migrations_dir())
        direct = await direct_rate(sim, submissions)
        service = await service_rate(database, sim, submissions)
        sim.stop()

        # 2. reconciliation
        recon_db = pg.create_database("bench_reconcile")
        await asyncio.to_thread(upgrade, recon_db, migrations_dir())
        t0 = time.perf_counter()
        held = await load_local(recon_db, local_records, random.Random(7))
        store = PndStore(work / "sim-reconcile" / "pnd.sqlite3")
        store.load_holdings(ORG, ((ref, version, False) for ref, version in held.items()))
        store.close()
        setup = time.perf_counter() - t0
        sim = Simulator(work / "sim-reconcile")
        sim.start()
        download, size = await download_holdings(sim)
        elapsed, report = await reconcile_once(recon_db, sim)
        sim.stop()
        totals = {
            "local": sum(f.local_records for f in report.regions),
            "in_sync": sum(f.in_sync for f in report.regions),
            **{
                c: sum(f.get(c).count for f in report.regions)
                for c in ("MISSING", "STALE", "REJECTED", "HELD", "CONFLICT")
            },
        }
        assert totals["local"] == local_records, totals

        mode = "quick" if quick else "full"
        lines = [
            "# PND sync benchmarks",
            "",
            f"Run `{' '.join(['bench/pnd/run.py', *(['--quick'] if quick else [])])}` ({mode} mode) on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z; {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}.",
            "PostgreSQL: a throwaway local cluster with fsync off (toex_devstack); the PND simulator runs as its "
            "own process (SQLite, WAL) on loopback. Everything shares the same 2 cores.",
            "",
            "## Submissions to the PND with acknowledgements",
            "",
            f"{submissions:,} new phone records, bulk batches of {BATCH}, {SENDERS} senders at once.",
            "",
            "| path | submissions/s |",
            "| --- | --- |",
            f"| simulator, direct client (baseline: posts batches, stores nothing) | {direct:,.0f} |",
            f"| service sender (PostgreSQL queue -> bulk HTTP -> answers, sync state and events stored) | {service:,.0f} |",
            f"| **ratio service / direct** | **{service / direct:.2f}** |",
            "",
            "## Reconciliation",
            "",
            f"{local_records:,} local records over {len(REGIONS)} regions; the simulator holds "
            f"{len(held):,} of them ({size / 1e6:.1f} MB of holdings report). Setup (not timed): {setup:.1f} s.",
            "",
            "| step | seconds |",
            "| --- | --- |",
            f"| baseline: download the holdings report only | {download:.2f} |",
            f"| reconciliation (download + COPY + classify + store items + report + events) | {elapsed:.2f} |",
            f"| ratio reconciliation / download | {elapsed / download:.1f} |",
            "",
            f"Goal: under 60 s for 1,000,000 records. Found: {totals['in_sync']:,} in sync, {totals['MISSING']:,} missing, "
            f"{totals['STALE']:,} stale, {totals['REJECTED']:,} rejected, {totals['HELD']:,} held, "
            f"{totals['CONFLICT']:,} in conflict (as seeded).",
            "",
        ]
        print("\n".join(lines))
        if quick and RESULTS.exists() and "(full mode)" in RESULTS.read_text():
            print(f"quick run: {RESULTS} keeps the full run's figures")
        else:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text("\n".join(lines))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    asyncio.run(main(parser.parse_args().quick))
