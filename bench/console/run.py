"""Console page server time (issue 17's figure): the jobs board and an entity page through the
console, against the gRPC call each page makes (tasking ListJobs; entity GetEntity; same request,
same person's token and purpose) measured alone, in one run.

Real servers: PostgreSQL, nats-server, Keycloak (its own, or $TOEX_BENCH_KEYCLOAK_URL), the tasking
and entity services and the console in their own processes. A person signs in to the console
through the Keycloak login form (authorisation code + PKCE). Then rounds of closed loops at 50
concurrent users, alternating: ListJobs alone, /jobs page, GetEntity alone, entity page, ...

"Page server time" is what the console itself reports in its Server-Timing header (switched on
with TOEX_SERVER_TIMING for the run): from the request reaching the console to the rendered
page's headers, with the part spent awaiting gRPC. The load runs in separate processes
(bench/console/load.py: bare asyncio HTTP/1.1 and grpc.aio clients), so the measuring client
does not share an interpreter with the servers. The issue's target: page server time p95 under
150 ms, and at most 1.30x the p95 of its gRPC call alone.

If the console has no entity page yet, the entity rounds measure GetEntity alone only and the
result says so.

    uv run --frozen --no-sync python -m bench.console.run [--seconds 10] [--pairs 3] [--jobs 200] \
        [--users 50] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack._proc import free_port
from toex_devstack.keycloak import DEMO_PASSWORD, Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_entity.__main__ import migrations_dir as entity_migrations
from toex_tasking.__main__ import migrations_dir

from bench.common import RESULTS, closed_loop, machine, subprocess_server, wait_serving, write_results
from bench.console.load import GrpcTarget, HttpTarget, Measured, closed_loops, pct

USERS = 50  # the load; --users changes it
PURPOSE = "Op BENCH"
REALM_FILE = Path("deploy/keycloak/realm-toex.json")


def ensure_client(keycloak: Keycloak, redirect: str) -> str:
    import json

    definition = next(
        c for c in json.loads(REALM_FILE.read_text())["clients"] if c["clientId"] == "toex-console"
    )
    with httpx.Client(timeout=30) as http:
        token = http.post(
            f"{keycloak.base_url}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": keycloak.admin_user,
                "password": keycloak.admin_password,
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        clients = f"{keycloak.base_url}/admin/realms/toex/clients"
        found = http.get(clients, params={"clientId": "toex-console"}, headers=headers).json()
        if not found:
            http.post(clients, json=definition, headers=headers).raise_for_status()
            found = http.get(clients, params={"clientId": "toex-console"}, headers=headers).json()
        client = found[0]
        if redirect not in client.get("redirectUris", []):
            client["redirectUris"] = [*client.get("redirectUris", []), redirect]
            http.put(f"{clients}/{client['id']}", json=client, headers=headers).raise_for_status()
    return str(definition["secret"])


async def sign_in(console: httpx.AsyncClient, username: str) -> None:
    started = await console.get("/auth/login")
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(started.headers["location"], follow_redirects=True)
        found = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
        assert found, "no Keycloak login form"
        jar = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
        answer = await browser.post(
            html.unescape(found.group(1)),
            data={"username": username, "password": DEMO_PASSWORD},
            headers={"Cookie": jar},
        )
    back = httpx.URL(answer.headers["location"])
    done = await console.get(f"{back.path}?{back.query.decode()}")
    assert done.status_code == 303, done.text[:300]
    board = await console.get("/jobs")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', board.text)
    assert csrf
    await console.post("/purpose", data={"purpose": PURPOSE, "csrf_token": csrf.group(1)})


def job(region: str) -> pb.CreateJobRequest:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=3))
    return pb.CreateJobRequest(
        parent=f"regions/{region}",
        job=pb.Job(
            requesting_unit="Bench",
            requesting_officer="DS Bench",
            operation_name=f"Op {uuid.uuid4().hex[:6].upper()}",
            job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
            priority=pb.PRIORITY_ROUTINE,
            due_time=stamp,
            description="Bench job",
        ),
    )


GRADING = entity_pb2.Grading(
    source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
    intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
)


def person(n: int) -> entity_pb2.SourceRecord:
    record = entity_pb2.SourceRecord(
        ref=entity_pb2.SourceRecordRef(source_system="niche", source_record_id=uuid.uuid4().hex),
        grading=GRADING,
        person=entity_pb2.Person(
            given_name="Kezia",
            surname=f"Bench{uuid.uuid4().hex[:8]}",
            birth_date=f"19{70 + n % 20}-03-1{n % 10}",
        ),
    )
    record.person.addresses.append(
        entity_pb2.Address(lines=[f"{n + 1} Friar Gate"], town="Derby", postcode="DE1 1AA")
    )
    return record


# One round of the benchmark: what is loaded, and under which name in the table.
Round = tuple[str, str, HttpTarget | GrpcTarget]


async def bench(
    args: argparse.Namespace, pg: Postgres, nats: NatsServer, keycloak: Keycloak
) -> tuple[list[tuple[str, str, Measured]], str]:
    tasking_db = pg.create_database(f"bench_console_{uuid.uuid4().hex[:6]}")
    entity_db = pg.create_database(f"bench_console_entity_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, tasking_db, migrations_dir())
    await asyncio.to_thread(upgrade, entity_db, entity_migrations())
    grpc_port, entity_port, http_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    secret = ensure_client(keycloak, f"{url}/auth/callback")
    common_env = {
        "TOEX_NATS_URL": nats.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_LOG_LEVEL": "WARNING",
    }
    tasking_env = {
        **common_env,
        "TOEX_DATABASE_URL": tasking_db,
        "TOEX_GRPC_PORT": str(grpc_port),
        "TOEX_SERVICE_CLIENT_SECRET": "toex-tasking-local-secret",
    }
    entity_env = {
        **common_env,
        "TOEX_DATABASE_URL": entity_db,
        "TOEX_GRPC_PORT": str(entity_port),
        "TOEX_SERVICE_CLIENT_SECRET": "toex-entity-local-secret",
        "TOEX_CONSUME": "false",
        "TOEX_LEARNING": "false",
    }
    console_env = {
        **common_env,
        "TOEX_HTTP_PORT": str(http_port),
        "TOEX_PUBLIC_URL": url,
        "TOEX_CONSOLE_CLIENT_SECRET": secret,
        "TOEX_TASKING_ADDR": f"127.0.0.1:{grpc_port}",
        "TOEX_ENTITY_ADDR": f"127.0.0.1:{entity_port}",
        "TOEX_SERVER_TIMING": "true",
    }
    results: list[tuple[str, str, Measured]] = []
    with (
        subprocess_server(["-m", "toex_tasking", "serve"], tasking_env, "console-tasking") as tasking,
        subprocess_server(["-m", "toex_entity", "serve"], entity_env, "console-entity") as entity,
        subprocess_server(["-m", "toex_console", "serve"], console_env, "console-console") as console_proc,
    ):
        await wait_serving(f"127.0.0.1:{grpc_port}")
        await wait_serving(f"127.0.0.1:{entity_port}")
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{entity_port}") as entity_channel,
            httpx.AsyncClient(
                base_url=url, timeout=30, limits=httpx.Limits(max_connections=args.users)
            ) as console,
        ):
            for _ in range(100):
                try:
                    if (await console.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
            stub = tasking_pb2_grpc.TaskingServiceStub(channel)
            nc = [("authorization", f"Bearer {keycloak.password_token('national_coordinator.national')}")]
            for i in range(args.jobs):
                await stub.CreateJob(
                    job("EMSOU" if i % 2 else "ERSOU"), metadata=[*nc, ("x-toex-purpose", PURPOSE)]
                )
            # The same person's token the console holds, for the gRPC-alone loops.
            token = keycloak.password_token("researcher.emsou")
            metadata = (("authorization", f"Bearer {token}"), ("x-toex-purpose", PURPOSE))
            entities = entity_pb2_grpc.EntityResolutionServiceStub(entity_channel)
            resolved = None
            for n in range(args.records):
                resolved = await entities.ResolveRecord(
                    entity_pb2.ResolveRecordRequest(parent="regions/EMSOU", record=person(n)),
                    metadata=metadata,
                )
            assert resolved is not None
            entity_name = resolved.entity.name
            await sign_in(console, "researcher.emsou")
            cookie = f"toex_session={console.cookies.get('toex_session')}"
            page = await console.get("/jobs")
            assert page.status_code == 200 and "regions/EMSOU/jobs/" in page.text, page.text[:500]
            assert "server-timing" in page.headers, "the console did not send Server-Timing"
            shown = (
                await entities.GetEntity(entity_pb2.GetEntityRequest(name=entity_name), metadata=metadata)
            ).entity
            entity_size = (
                f"The entity read has {len(shown.records)} record(s), {len(shown.history)} history entries and"
                f" {len(shown.relations)} relations; GetEntity's answer is {shown.ByteSize()} bytes."
            )
            entity_path = args.entity_path.format(name=entity_name, id=entity_name.rsplit("/", 1)[-1])
            entity_page = await console.get(entity_path)
            has_entity_page = (
                entity_page.status_code == 200 and entity_name.rsplit("/", 1)[-1] in entity_page.text
            )
            note = (
                f"The entity page is the console's `{args.entity_path}` ({entity_path} here)."
                if has_entity_page
                else (
                    f"The console has no entity page yet (`{entity_path}` answered {entity_page.status_code}): "
                    "the entity rounds measure only GetEntity, the call that page will make."
                )
            )
            note = f"{note} {entity_size}"
            print(note, flush=True)
            watch = {
                "console": console_proc.pid,
                "tasking": tasking.pid,
                "entity": entity.pid,
                "PostgreSQL": pg.pid or 0,
            }
            host = "127.0.0.1"
            list_jobs = pb.ListJobsRequest(parent="regions/-", page_size=25).SerializeToString()
            get_entity = entity_pb2.GetEntityRequest(name=entity_name).SerializeToString()
            rounds: list[Round] = [
                (
                    "jobs board",
                    "gRPC ListJobs alone",
                    GrpcTarget(
                        f"{host}:{grpc_port}", "/toex.tasking.v1.TaskingService/ListJobs", list_jobs, metadata
                    ),
                ),
                ("jobs board", "console /jobs page", HttpTarget(host, http_port, "/jobs", cookie)),
                (
                    "entity page",
                    "gRPC GetEntity alone",
                    GrpcTarget(
                        f"{host}:{entity_port}",
                        "/toex.entity.v1.EntityResolutionService/GetEntity",
                        get_entity,
                        metadata,
                    ),
                ),
            ]
            if has_entity_page:
                rounds.append(
                    ("entity page", "console entity page", HttpTarget(host, http_port, entity_path, cookie))
                )

            async def httpx_page() -> None:
                answer = await console.get("/jobs")
                if answer.status_code != 200:
                    raise RuntimeError(answer.status_code)

            rounds = [r for r in rounds if args.only in ("", r[0].split()[0])]
            for _ in range(args.pairs):
                if args.httpx_round and args.only in ("", "jobs"):
                    # The earlier way of measuring, for comparison: httpx in this process, client time.
                    old = await closed_loop(
                        httpx_page, concurrency=args.users, seconds=args.seconds, watch=watch
                    )
                    measured = Measured(
                        calls=old.calls,
                        errors=old.errors,
                        seconds=old.seconds,
                        client_ms=old.latencies_ms,
                        cpu_seconds=old.cpu_seconds,
                    )
                    print(
                        f"httpx page: {measured.rate:.0f}/s p95 {pct(measured.client_ms, 95):.1f} ms",
                        flush=True,
                    )
                    results.append(
                        ("httpx", "console /jobs page, httpx client in the bench process", measured)
                    )
                for figure, name, target in rounds:
                    if isinstance(target, GrpcTarget):
                        # A new token each round: a run outlives the realm's 5-minute access tokens
                        # (the console renews its own).
                        fresh = keycloak.password_token("researcher.emsou")
                        target = replace(target, metadata=(("authorization", f"Bearer {fresh}"), metadata[1]))
                    measured = await asyncio.to_thread(
                        closed_loops,
                        target,
                        users=args.users,
                        processes=args.processes,
                        seconds=args.seconds,
                        watch=watch,
                        think=args.think,
                    )
                    print(
                        f"{name}: {measured.rate:.0f}/s p95 {pct(measured.client_ms, 95):.1f} ms", flush=True
                    )
                    results.append((figure, name, measured))
    return results, note


async def run_all(args: argparse.Namespace) -> tuple[list[tuple[str, str, Measured]], str]:
    work = Path(tempfile.mkdtemp(prefix="toex-bench-console-"))
    work.chmod(0o755)  # PostgreSQL may run as another system user
    pg = Postgres(data_dir=work / "pg")
    nats = NatsServer(store_dir=work / "nats")
    external = os.environ.get("TOEX_BENCH_KEYCLOAK_URL")
    keycloak = (
        Keycloak.external(external) if external else Keycloak(home_dir=work / "kc", realm_file=REALM_FILE)
    )
    try:
        pg.start()
        nats.start()
        if not external:
            keycloak.start()
        return await bench(args, pg, nats, keycloak)
    finally:
        if not external and keycloak.running:
            keycloak.stop()
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def report(args: argparse.Namespace, results: list[tuple[str, str, Measured]], note: str) -> str:
    command = (
        f"python -m bench.console.run --seconds {args.seconds:g} --pairs {args.pairs} --jobs {args.jobs}"
        f" --users {args.users} --processes {args.processes}"
        + (f" --think {args.think:g} --results {args.results}" if args.think else "")
    )
    users = (
        f"{args.users} concurrent users (closed loops in {args.processes} load processes of their own, each"
        f" pausing {0.5 * args.think:g} to {1.5 * args.think:g} s, {args.think:g} s on average, before its next"
        " page, as a person reading it would)"
        if args.think
        else f"{args.users} concurrent users (closed loops in {args.processes} load processes of their own, each"
        " asking for its next page as soon as it has the last: the most load 50 users can make)"
    )
    lines = [
        "# Console: page server time against the pages' gRPC calls alone",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `{command}`. {users}, alternating in one"
        " session:"
        " tasking ListJobs (page of 25, researcher.emsou's token and purpose) straight over gRPC, the"
        " console's /jobs page (which makes that call and renders it), entity GetEntity straight over"
        " gRPC, the console's entity page. Page server time is the console's own Server-Timing (request"
        " in to rendered page's headers out); `console gRPC` is the part of it awaiting gRPC; `client` is"
        " what the load process saw. CPU is per call, in ms, over the counted seconds.",
        note,
        f"Load average {os.getloadavg()[0]:.1f} at the end of the run (other work may share the machine);"
        " compare within a round.",
        "",
        "| run | calls/s | client p50 | client p95 | server p50 | server p95 | console gRPC p95 | gRPC calls/page | errors"
        " | console CPU | tasking CPU | entity CPU | PostgreSQL CPU | load CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ms(value: float) -> str:
        return "" if value != value else f"{value:.1f}"

    def per_page(m: Measured) -> str:
        return f"{sum(m.server_calls) / len(m.server_calls):.1f}" if m.server_calls else ""

    for _, name, m in results:
        cpu = " | ".join(
            f"{m.cpu_ms_per_call(p):.2f}"
            for p in ("console", "tasking", "entity", "PostgreSQL", "load generator")
        )
        lines.append(
            f"| {name} | {m.rate:.0f} | {ms(pct(m.client_ms, 50))} | {ms(pct(m.client_ms, 95))} "
            f"| {ms(pct(m.server_ms, 50))} | {ms(pct(m.server_ms, 95))} | {ms(pct(m.server_grpc_ms, 95))} | {per_page(m)} "
            f"| {m.errors} | {cpu} |"
        )
    errors = sorted({m.first_error for _, _, m in results if m.first_error})
    if errors:
        lines += ["", "First errors: " + "; ".join(errors)]
    lines.append("")
    for figure in ("jobs board", "entity page"):
        alone = [pct(m.client_ms, 95) for f, n, m in results if f == figure and n.startswith("gRPC")]
        pages = [pct(m.server_ms, 95) for f, n, m in results if f == figure and not n.startswith("gRPC")]
        if not pages:
            lines.append(
                f"- {figure}: gRPC alone p95 (median of rounds) {_median(alone):.1f} ms; no page measured."
            )
            continue
        ratio = _median(pages) / _median(alone)
        verdict = "met" if _median(pages) < 150 and ratio <= 1.30 else "not met"
        lines.append(
            f"- {figure}: page server time p95 (median of rounds) {_median(pages):.1f} ms, its gRPC call alone"
            f" {_median(alone):.1f} ms: {ratio:.2f}x (target: under 150 ms and at most 1.30x): {verdict}."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--records", type=int, default=20, help="person records resolved before the run")
    parser.add_argument("--users", type=int, default=USERS, help="concurrent users (closed loops)")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--entity-path", default="/{name}", help="the console's entity page ({name}: entities/<id>; {id})"
    )
    parser.add_argument(
        "--httpx-round",
        action="store_true",
        help="also load /jobs with httpx inside the bench process (the earlier client), for comparison",
    )
    parser.add_argument("--only", choices=["", "jobs", "entity"], default="", help="only one page's rounds")
    parser.add_argument("--quick", action="store_true", help="short loops (3 s, 2 rounds)")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="each user's mean pause between pages, in seconds (0: none, the most load the users can make)",
    )
    parser.add_argument("--results", default="console", help="bench/results/<name>.md")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.pairs = 3.0, 2
    results, note = asyncio.run(run_all(args))
    text = report(args, results, note)
    # Hand-written sections after the generated part are kept.
    previous = RESULTS / f"{args.results}.md"
    if previous.exists():
        old = previous.read_text()
        kept = old.find("\n## ")  # the generated part has no second-level headings
        if kept >= 0:
            text += old[kept:]
    path = write_results(args.results, text)
    print(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
