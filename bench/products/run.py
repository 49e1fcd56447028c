"""Briefing pack benchmark (issue 16.2): the pack for one job, end to end (reads through the
real tasking service with a Keycloak token, assembly, PDF rendering), against the same reads
alone, alternated in one run (A, B, A, B, ...) so machine noise falls on both.

Covers the job (with --notes notes) and, with --rows N, the comms sections: a real comms service
holding N CDR rows for the job between 40 targets and their contacts (`toex_comms.demo`), the
targets as the job's phone subjects. The entity, safeguarding and PND reads are not in this
benchmark (see bench/results/products.md): the 40 phone subjects are given without a read.

    python -m bench.products.run [--notes N] [--rows N] [--rounds N]

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
from google.protobuf.field_mask_pb2 import FieldMask
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_comms import demo
from toex_comms.__main__ import migrations_dir as comms_migrations_dir
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_products import render
from toex_products.grpc_sources import GrpcSources
from toex_products.pack import EntityFacts, assemble
from toex_tasking.__main__ import migrations_dir

from bench.common import RESULTS, machine, subprocess_server, wait_serving, write_results
from bench.tasking.run import create_request


class _BenchSources(GrpcSources):
    """The pack's sources, with the job's phone subjects given (no entity service here)."""

    def __init__(self, targets: dict[str, str], *args: Any) -> None:
        super().__init__(*args)
        self._targets = targets

    def entity(self, name: str) -> EntityFacts:
        return EntityFacts(name=name, display_name=self._targets[name], kind="PHONE", records=[])


def _import_cdr(stub: Any, path: Path, job: str, metadata: Any) -> int:
    def requests() -> Any:
        yield comms_pb2.ImportCdrRequest(
            header=comms_pb2.ImportHeader(parent="regions/EMSOU", job=job, display_name="Bench CDR")
        )
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                yield comms_pb2.ImportCdrRequest(chunk=chunk)

    return int(stub.ImportCdr(requests(), metadata=metadata, timeout=3600).dataset.rows_read)


def run(
    notes: int, rows: int, rounds: int, keycloak: Keycloak, pg: Postgres, nats: NatsServer, work: Path
) -> str:
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
    comms_port = free_port()
    comms_db = pg.create_database(f"bench_products_comms_{uuid.uuid4().hex[:8]}")
    upgrade(comms_db, comms_migrations_dir())
    comms_env = {
        **env,
        "TOEX_DATABASE_URL": comms_db,
        "TOEX_GRPC_PORT": str(comms_port),
        "TOEX_DATA_DIR": str(work / "comms-data"),
    }
    token = keycloak.password_token("national_coordinator.national")
    with (
        subprocess_server(["-m", "toex_tasking", "serve"], env, "products-tasking"),
        subprocess_server(["-m", "toex_comms", "serve"], comms_env, "products-comms"),
    ):
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        asyncio.run(wait_serving(f"127.0.0.1:{comms_port}"))
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            grpc.insecure_channel(
                f"127.0.0.1:{comms_port}", options=[("grpc.max_receive_message_length", 64 << 20)]
            ) as comms_channel,
        ):
            stub = tasking_pb2_grpc.TaskingServiceStub(channel)
            comms_stub = comms_pb2_grpc.CommsAnalysisServiceStub(comms_channel)
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
            targets: dict[str, str] = {}
            imported = 0
            if rows:
                numbers = demo.bench_targets(40)
                targets = {f"entities/bench-phone-{i}": n for i, n in enumerate(numbers)}
                stub.UpdateJob(
                    pb.UpdateJobRequest(
                        job=pb.Job(name=job.name, subject_entity_ids=list(targets)),
                        update_mask=FieldMask(paths=["subject_entity_ids"]),
                        request_id=str(uuid.uuid4()),
                    ),
                    metadata=metadata,
                )
                csv = demo.write_bench_cdr(work / "cdr.csv", rows)
                imported = _import_cdr(comms_stub, csv, job.name, metadata)
                csv.unlink()

            def call(_service: str, method: Any, request: Any) -> Any:
                return method(request, metadata=metadata, timeout=600)

            sources = _BenchSources(targets, call, lambda: stub, lambda: None, lambda: comms_stub)

            def reads() -> None:
                sources.job(job.name)
                sources.comms(job.name, "EMSOU", list(targets.values()))

            def pack() -> None:
                render.pdf(assemble(sources, job.name))

            reads()
            pack()  # warm both paths
            # What the pack holds at this size (so the figure is not of empty sections).
            sections = {x.title: x for x in assemble(sources, job.name).sections}
            holds = (
                f"{len(sections['Comms: network picture, common contacts'].rows)} common contacts, "
                f"{len(sections['Comms: ranked new numbers, with reasons'].rows)} ranked numbers, "
                f"network picture {len(sections['Comms: network picture, common contacts'].image or b'')} bytes"
            )
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
            f"`python -m bench.products.run --notes {notes} --rows {rows} --rounds {rounds}`"
            f" ({imported} CDR rows imported for the job, 40 targets). The pack held: {holds}.",
            "",
            "Real tasking and comms service processes (PostgreSQL, JetStream, Keycloak RS256 token, "
            "audit), loopback. A = the pack's reads alone (GetJob; with rows: ListDatasets, then "
            "FindCommonContacts, RankSuspects and the PNG Export at once, as the pack makes them); "
            "B = the whole pack (the same reads, assembly, PDF rendering with the network picture). "
            "A and B alternate in one session; the machine (2 cores) was shared with other work, so "
            "figures are noisy.",
            "",
            "| measure | median | p90 | runs |",
            "|---|---|---|---|",
            f"| A: reads alone | {ra * 1000:.1f} ms | {sorted(a)[int(0.9 * len(a))] * 1000:.1f} ms | {len(a)} |",
            f"| B: whole pack (PDF) | {rb * 1000:.1f} ms | {sorted(b)[int(0.9 * len(b))] * 1000:.1f} ms | {len(b)} |",
            f"| ratio B/A | {rb / ra:.2f}x | | |",
            "",
            "Not in this benchmark: the entity (200 entities), safeguarding (5 referrals) and PND "
            "reads; the 40 phone subjects are given without an entity read.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notes", type=int, default=40, help="notes on the job")
    parser.add_argument("--rows", type=int, default=0, help="CDR rows seeded into comms for the job")
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
        report = run(args.notes, args.rows, args.rounds, keycloak, pg, nats, work)
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
