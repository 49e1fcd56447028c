"""Briefing pack benchmark (issue 16.2): the pack for one job, end to end (reads through the
real tasking service with a Keycloak token, assembly, PDF rendering), against the same reads
alone, alternated in one run (A, B, A, B, ...) so machine noise falls on both.

Covers what the pack reads today: the job (with --notes notes and --assignees researchers).
Entities, CDR rows and referrals are not in this benchmark yet (see bench/results/products.md).

    python -m bench.products.run [--notes N] [--rounds N]

Set TOEX_BENCH_KEYCLOAK_URL to reuse a running Keycloak with the toex realm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_products import render
from toex_products.grpc_sources import GrpcSources
from toex_products.pack import assemble
from toex_tasking.__main__ import migrations_dir

from bench.common import RESULTS, machine, subprocess_server, wait_serving, write_results
from bench.tasking.run import create_request


def run(notes: int, rounds: int, keycloak: Keycloak, pg: Postgres, nats: NatsServer) -> str:
    port = free_port()
    database = pg.create_database(f"bench_products_{uuid.uuid4().hex[:8]}")
    upgrade(database, migrations_dir())
    env = {
        "TOEX_DATABASE_URL": database,
        "TOEX_NATS_URL": nats.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_GRPC_PORT": str(port),
        "TOEX_DIRECTORY": "static",
        "TOEX_LOG_LEVEL": "WARNING",
    }
    token = keycloak.password_token("national_coordinator.national")
    with subprocess_server(["-m", "toex_tasking", "serve"], env, "products-tasking"):
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tasking_pb2_grpc.TaskingServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op BENCH"))
            job = stub.CreateJob(create_request(), metadata=metadata).job
            for i in range(notes):
                stub.AddJobNote(
                    pb.AddJobNoteRequest(
                        parent=job.name,
                        request_id=str(uuid.uuid4()),
                        text=f"Note {i}: sighting and phone activity " * 3,
                    ),
                    metadata=metadata,
                )
            metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", job.name))

            def call(_service: str, method: Any, request: Any) -> Any:
                return method(request, metadata=metadata, timeout=30)

            sources = GrpcSources(call, lambda: stub, lambda: None)

            def reads() -> None:
                sources.job(job.name)

            def pack() -> None:
                render.pdf(assemble(sources, job.name))

            reads()
            pack()  # warm both paths
            a: list[float] = []
            b: list[float] = []
            for _ in range(rounds):
                for fn, out in ((reads, a), (pack, b)):
                    start = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - start)
    ra, rb = statistics.median(a), statistics.median(b)
    return "\n".join(
        [
            "# Briefing pack benchmark",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
            f"`python -m bench.products.run --notes {notes} --rounds {rounds}`.",
            "",
            "Real tasking service process (PostgreSQL, JetStream, Keycloak RS256 token, audit), loopback. "
            "A = the pack's reads alone (GetJob); B = the whole pack (the same reads, assembly, PDF "
            "rendering). A and B alternate in one session; the machine (2 cores) was shared with other "
            "work, so figures are noisy.",
            "",
            "| measure | median | p90 | runs |",
            "|---|---|---|---|",
            f"| A: reads alone | {ra * 1000:.1f} ms | {sorted(a)[int(0.9 * len(a))] * 1000:.1f} ms | {len(a)} |",
            f"| B: whole pack (PDF) | {rb * 1000:.1f} ms | {sorted(b)[int(0.9 * len(b))] * 1000:.1f} ms | {len(b)} |",
            f"| ratio B/A | {rb / ra:.2f}x | | |",
            "",
            "Not measured yet: the issue's figure (40 targets, 10,000,000 CDR rows, 200 entities, 5 "
            "referrals, under 10 s and at most 2x the reads) needs the comms, entity and safeguarding "
            "sections in the pack first; this run covers the job read only.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notes", type=int, default=40, help="notes on the job")
    parser.add_argument("--rounds", type=int, default=None, help="A/B pairs (default 20, quick 5)")
    parser.add_argument("--quick", action="store_true", help="few rounds, for checking the benchmark works")
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 20)
    work = Path(tempfile.mkdtemp(prefix="toex-bench-"))
    work.chmod(0o755)
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
        if not external:
            keycloak.start()
        report = run(args.notes, args.rounds, keycloak, pg, nats)
    finally:
        if not external and keycloak.running:
            keycloak.stop()
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    # Keep the hand-written analysis of the previous run, if any.
    previous = RESULTS / "products.md"
    if previous.exists() and "\n## Analysis" in previous.read_text():
        report += "\n## Analysis" + previous.read_text().split("\n## Analysis", 1)[1]
    print(report)
    print(write_results("products", report))


if __name__ == "__main__":
    main()
