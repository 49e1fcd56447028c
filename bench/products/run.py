"""Briefing pack benchmark (issue 16.2): the pack for one job, end to end (reads through the
real services with Keycloak tokens, assembly, PDF rendering), against the same reads alone,
alternated in one run (A, B, A, B, ...) so machine noise falls on both.

Real tasking, entity, comms, safeguarding and PND service processes (and the PND simulator):
the job (with --notes notes) has --entities subject entities in the entity service (40 phones,
--vehicles vehicles when there is ANPR data, the rest persons), --referrals safeguarding referrals
linked to it among --other-referrals of the region linked to none, and --pnd PND records made for
it among --other-pnd made for none. With --rows N the comms service holds N CDR rows for the job
between the 40 phone subjects and their contacts (`toex_comms.demo`); with --anpr N, N ANPR reads
with planted convoys of the vehicle subjects.

    python -m bench.products.run [--notes N] [--rows N] [--anpr N] [--entities N] [--referrals N]
        [--rounds N]

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pypdfium2
from google.protobuf.field_mask_pb2 import FieldMask
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc, pole_pb2
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex.type.v1 import security_pb2
from toex_common.migrations import upgrade
from toex_comms import demo
from toex_comms.__main__ import migrations_dir as comms_migrations
from toex_devstack._proc import free_port
from toex_devstack.keycloak import Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_entity.__main__ import migrations_dir as entity_migrations
from toex_pnd.__main__ import migrations_dir as pnd_migrations
from toex_products import render
from toex_products.grpc_sources import GrpcSources
from toex_products.pack import assemble
from toex_safeguarding.__main__ import migrations_dir as safeguarding_migrations
from toex_tasking.__main__ import migrations_dir as tasking_migrations

from bench.common import RESULTS, machine, subprocess_server, wait_serving, write_results
from bench.pnd.run import Simulator
from bench.tasking.run import create_request

CALL_TIMEOUT = 600
ENTITY_GRADING = entity_pb2.Grading(
    source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
    intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)
PND_GRADING = pole_pb2.Grading(
    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def _md(token: str, purpose: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), ("x-toex-purpose", purpose))


def _import(method: Any, first: Any, kind: Any, path: Path, metadata: Any) -> int:
    def requests() -> Iterator[Any]:
        yield kind(header=first)
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                yield kind(chunk=chunk)

    return int(method(requests(), metadata=metadata, timeout=3600).dataset.rows_read)


def _subject_records(entities: int, vehicles: Sequence[str]) -> list[entity_pb2.SourceRecord]:
    """40 phones (the CDR's targets), the vehicles, then persons up to `entities`: distinct, so
    each record is an entity of its own."""
    records = [
        entity_pb2.SourceRecord(
            ref=entity_pb2.SourceRecordRef(source_system="bench", source_record_id=f"phone-{i}"),
            grading=ENTITY_GRADING,
            phone=entity_pb2.Phone(number=number),
        )
        for i, number in enumerate(demo.bench_targets(40))
    ]
    records += [
        entity_pb2.SourceRecord(
            ref=entity_pb2.SourceRecordRef(source_system="bench", source_record_id=f"vehicle-{vrm}"),
            grading=ENTITY_GRADING,
            vehicle=entity_pb2.Vehicle(vrm=vrm),
        )
        for vrm in vehicles
    ]
    for i in range(max(0, entities - len(records))):
        records.append(
            entity_pb2.SourceRecord(
                ref=entity_pb2.SourceRecordRef(source_system="bench", source_record_id=f"person-{i}"),
                grading=ENTITY_GRADING,
                person=entity_pb2.Person(
                    given_name=f"Given{i:04d}",
                    surname=f"Benchfamily{i:04d}",
                    birth_date=f"{1960 + i % 40}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                ),
            )
        )
    return records


def run(args: argparse.Namespace, keycloak: Keycloak, pg: Postgres, nats: NatsServer, work: Path) -> str:
    ports = {name: free_port() for name in ("tasking", "comms", "entity", "safeguarding", "pnd")}
    databases = {
        "tasking": tasking_migrations(),
        "comms": comms_migrations(),
        "entity": entity_migrations(),
        "safeguarding": safeguarding_migrations(),
        "pnd": pnd_migrations(),
    }
    urls = {}
    for name, migrations in databases.items():
        urls[name] = pg.create_database(f"bench_products_{name}_{uuid.uuid4().hex[:8]}")
        upgrade(urls[name], migrations)
    common = {
        "TOEX_NATS_URL": nats.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_LOG_LEVEL": "WARNING",
    }
    env = {
        name: {
            **common,
            "TOEX_DATABASE_URL": urls[name],
            "TOEX_GRPC_PORT": str(ports[name]),
            "TOEX_SERVICE_CLIENT_SECRET": f"toex-{name}-local-secret",
        }
        for name in ports
    }
    env["tasking"]["TOEX_DIRECTORY"] = "static"
    env["comms"]["TOEX_DATA_DIR"] = str(work / "comms-data")
    env["entity"]["TOEX_LEARNING"] = "false"  # no re-estimation running under the timing
    env["safeguarding"]["TOEX_TASKING_ADDRESS"] = f"127.0.0.1:{ports['tasking']}"
    simulator = Simulator(work / "pnd-simulator")
    simulator.start()
    env["pnd"]["TOEX_PND_URL"] = simulator.url
    fetched: dict[str, tuple[float, str]] = {}

    def token(user: str) -> str:
        # Keycloak's tokens live minutes; setup (10M rows) and the rounds take longer. A fresh
        # one each minute, fetched between timed runs, never inside one.
        at, value = fetched.get(user, (0.0, ""))
        if time.monotonic() - at > 60:
            value = keycloak.password_token(user)
            fetched[user] = (time.monotonic(), value)
        return value

    options = [("grpc.max_receive_message_length", 64 << 20)]
    with ExitStack() as stack:
        for name in ports:
            stack.enter_context(
                subprocess_server(["-m", f"toex_{name}", "serve"], env[name], f"products-{name}")
            )
        stack.callback(simulator.stop)
        for name in ports:
            asyncio.run(wait_serving(f"127.0.0.1:{ports[name]}", timeout=600))
        channels = {
            name: stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}", options=options))
            for name, port in ports.items()
        }
        tasking = tasking_pb2_grpc.TaskingServiceStub(channels["tasking"])
        comms = comms_pb2_grpc.CommsAnalysisServiceStub(channels["comms"])
        entity = entity_pb2_grpc.EntityResolutionServiceStub(channels["entity"])
        safeguarding = safeguarding_pb2_grpc.SafeguardingServiceStub(channels["safeguarding"])
        pnd = pnd_pb2_grpc.PndSyncServiceStub(channels["pnd"])

        coordinator = "national_coordinator.national"
        job = tasking.CreateJob(create_request(), metadata=_md(token(coordinator), "Op BENCH")).job
        for i in range(args.notes):
            tasking.AddJobNote(
                pb.AddJobNoteRequest(
                    parent=job.name,
                    request_id=str(uuid.uuid4()),
                    text=f"Note {i}: sighting and phone activity " * 3,
                ),
                metadata=_md(token(coordinator), "Op BENCH"),
            )

        # The subjects: entities in the entity service, named on the job.
        vehicles = (
            [f"CV{k:03d}{side}" for k in range(args.vehicles // 2) for side in "AB"] if args.anpr else []
        )
        records = _subject_records(args.entities, vehicles)
        ingested = entity.IngestRecords(
            (entity_pb2.IngestRecordsRequest(parent="regions/EMSOU", record=r) for r in records),
            metadata=_md(token("analyst.emsou"), job.name),
            timeout=CALL_TIMEOUT,
        )
        subjects = list(dict.fromkeys(r.entity for r in ingested.results if r.entity))
        tasking.UpdateJob(
            pb.UpdateJobRequest(
                job=pb.Job(name=job.name, subject_entity_ids=subjects),
                update_mask=FieldMask(paths=["subject_entity_ids"]),
                request_id=str(uuid.uuid4()),
            ),
            metadata=_md(token(coordinator), job.name),
        )

        # Call data and ANPR reads for the job.
        imported = anpr_imported = 0
        if args.rows:
            csv = demo.write_bench_cdr(work / "cdr.csv", args.rows)
            imported = _import(
                comms.ImportCdr,
                comms_pb2.ImportHeader(parent="regions/EMSOU", job=job.name, display_name="Bench CDR"),
                comms_pb2.ImportCdrRequest,
                csv,
                _md(token("analyst.emsou"), job.name),
            )
            csv.unlink()
        if args.anpr:
            csv = demo.write_bench_anpr(work / "anpr.csv", args.anpr)
            anpr_imported = _import(
                comms.ImportAnpr,
                comms_pb2.ImportHeader(parent="regions/EMSOU", job=job.name, display_name="Bench ANPR"),
                comms_pb2.ImportAnprRequest,
                csv,
                _md(token("analyst.emsou"), job.name),
            )
            csv.unlink()

        # Referrals: the job's among the region's others; PND records likewise.
        for i in range(args.referrals + args.other_referrals):
            linked = i < args.referrals
            safeguarding.CreateReferral(
                sg.CreateReferralRequest(
                    parent="regions/EMSOU",
                    referral=sg.Referral(
                        subject=sg.Subject(
                            entity_id=f"bench-child-{i}", age_band=sg.AGE_BAND_CHILD, local_authority="Derby"
                        ),
                        concerns=[sg.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                        linked_job=job.name if linked else "",
                    ),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=_md(token("safeguarding_officer.emsou"), job.name if linked else "Op BENCH"),
                timeout=CALL_TIMEOUT,
            )
        for i in range(args.pnd + args.other_pnd):
            linked = i < args.pnd
            pnd.SubmitIntelligence(
                pnd_pb2.SubmitIntelligenceRequest(
                    parent="regions/EMSOU",
                    record=pnd_pb2.IntelligenceRecord(
                        entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=f"+4479{90000000 + i:08d}")),
                        grading=PND_GRADING,
                    ),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=_md(token("researcher.emsou"), job.name if linked else "Op BENCH"),
                timeout=CALL_TIMEOUT,
            )

        def call(_service: str, method: Any, request: Any) -> Any:
            return method(request, metadata=_md(fetched[coordinator][1], job.name), timeout=CALL_TIMEOUT)

        sources = GrpcSources(
            call, lambda: tasking, lambda: entity, lambda: comms, lambda: safeguarding, lambda: pnd
        )

        def reads() -> None:
            # The pack's reads, made as `assemble` makes them (the job; the entities 8 at once;
            # comms, safeguarding and PND at once), with nothing assembled or rendered.
            facts = sources.job(job.name)
            with ThreadPoolExecutor(max_workers=8) as pool:
                found = list(pool.map(sources.entity, facts.subject_ids))
            targets = [e.display_name for e in found if e.kind == "PHONE"]
            cars = [e.display_name for e in found if e.kind == "VEHICLE"]
            with ThreadPoolExecutor(max_workers=3) as pool:
                futures: list[Future[Any]] = [
                    pool.submit(sources.comms, job.name, "EMSOU", targets, cars),
                    pool.submit(sources.referrals, job.name, "EMSOU"),
                    pool.submit(sources.pnd, job.name, "EMSOU"),
                ]
                for future in futures:
                    future.result()

        def pack() -> None:
            render.pdf(assemble(sources, job.name))

        token(coordinator)
        reads()
        pack()  # warm both paths
        # What the pack holds at this size (so the figure is not of empty sections).
        built = assemble(sources, job.name)
        sections = {x.title: x for x in built.sections}
        document = render.pdf(built)
        pages = len(pypdfium2.PdfDocument(document))
        if args.pdf:
            Path(args.pdf).write_bytes(document)
        picture = sections["Comms: network picture, common contacts"].image or b""
        counted = {
            "subject entities": "Subjects",
            "common contacts": "Comms: network picture, common contacts",
            "ranked numbers": "Comms: ranked new numbers, with reasons",
            "co-location pairs": "Comms: co-location",
            "travel patterns": "ANPR: travel patterns",
            "convoys": "ANPR: convoys",
            "referrals": "Safeguarding referrals",
            "PND records": "PND submissions",
            "annex rows": "Annex: records used, with grading",
        }
        holds = ", ".join(f"{len(sections[title].rows)} {what}" for what, title in counted.items())
        holds += f", network picture {len(picture)} bytes; {pages} PDF pages"
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.rounds):
            token(coordinator)  # fresh when a minute old, outside the timing
            for fn, out in ((reads, a), (pack, b)):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
        # Where the time of A goes: each read alone (median of 3), and the rendering alone.
        token(coordinator)
        facts = sources.job(job.name)
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(sources.entity, facts.subject_ids))
        targets = [e.display_name for e in found if e.kind == "PHONE"]
        cars = [e.display_name for e in found if e.kind == "VEHICLE"]

        def entities() -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(sources.entity, facts.subject_ids))

        parts: dict[str, Callable[[], object]] = {
            "GetJob": lambda: sources.job(job.name),
            f"GetEntity x{len(facts.subject_ids)}, 8 at once": entities,
            "comms (all its reads)": lambda: sources.comms(job.name, "EMSOU", targets, cars),
            "ListReferrals (job filter)": lambda: sources.referrals(job.name, "EMSOU"),
            "ListIntelligence (job filter)": lambda: sources.pnd(job.name, "EMSOU"),
            "PDF rendering of the assembled pack": lambda: render.pdf(built),
        }
        breakdown: dict[str, float] = {}
        for what, part in parts.items():
            times = []
            for _ in range(3):
                start = time.perf_counter()
                part()
                times.append(time.perf_counter() - start)
            breakdown[what] = statistics.median(times)
    ra, rb = statistics.median(a), statistics.median(b)
    command = (
        f"python -m bench.products.run --notes {args.notes} --rows {args.rows} --anpr {args.anpr} "
        f"--entities {args.entities} --vehicles {args.vehicles} --referrals {args.referrals} "
        f"--other-referrals {args.other_referrals} --pnd {args.pnd} --other-pnd {args.other_pnd} "
        f"--rounds {args.rounds}"
    )
    return "\n".join(
        [
            "# Briefing pack benchmark",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `{command}` "
            f"({imported} CDR rows and {anpr_imported} ANPR reads imported for the job, "
            f"{len(subjects)} subject entities). The pack held: {holds}.",
            "",
            "Real tasking, entity, comms, safeguarding and PND service processes (PostgreSQL, "
            "JetStream, Keycloak RS256 tokens, audit) and the PND simulator, loopback. A = the pack's "
            "reads alone, made as the pack makes them: GetJob; GetEntity for every subject, 8 at "
            "once; then at once: comms (ListDatasets, then FindCommonContacts, RankSuspects, the PNG "
            "Export, ListWatchlistContacts, FindColocations, FindConvoys and GetTravelPattern per "
            "vehicle subject, at once), ListReferrals and ListIntelligence with the job filter. "
            "B = the whole pack (the same reads, assembly, PDF rendering). A and B alternate in one "
            "session; the machine (2 cores) was shared with other work, so figures are noisy.",
            "",
            "| measure | median | p90 | runs |",
            "|---|---|---|---|",
            f"| A: reads alone | {ra * 1000:.1f} ms | {sorted(a)[int(0.9 * len(a))] * 1000:.1f} ms | {len(a)} |",
            f"| B: whole pack (PDF) | {rb * 1000:.1f} ms | {sorted(b)[int(0.9 * len(b))] * 1000:.1f} ms | {len(b)} |",
            f"| ratio B/A | {rb / ra:.2f}x | | |",
            "",
            "Each part alone, after the A/B runs (median of 3; the pack makes the last four at once):",
            "",
            "| part | median |",
            "|---|---|",
            *(f"| {what} | {seconds * 1000:.1f} ms |" for what, seconds in breakdown.items()),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=40, help="notes on the job")
    parser.add_argument("--rows", type=int, default=0, help="CDR rows seeded into comms for the job")
    parser.add_argument("--anpr", type=int, default=0, help="ANPR reads seeded into comms for the job")
    parser.add_argument("--entities", type=int, default=200, help="subject entities of the job")
    parser.add_argument("--vehicles", type=int, default=10, help="of them vehicles (with --anpr)")
    parser.add_argument("--referrals", type=int, default=5, help="referrals linked to the job")
    parser.add_argument("--other-referrals", type=int, default=200, help="referrals of the region, no job")
    parser.add_argument("--pnd", type=int, default=10, help="PND records made for the job")
    parser.add_argument("--other-pnd", type=int, default=200, help="PND records of the region, no job")
    parser.add_argument("--rounds", type=int, default=None, help="A/B pairs (default 20, quick 5)")
    parser.add_argument("--pdf", default="", help="also write the pack built to this file, to look at")
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
        report = run(args, keycloak, pg, nats, work)
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
