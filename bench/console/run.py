"""Console page server time: the jobs board through the console against the gRPC call it makes
(tasking ListJobs, same request, same token and purpose) measured alone, in one run.

Real servers: PostgreSQL, nats-server, Keycloak (its own, or $TOEX_BENCH_KEYCLOAK_URL), the tasking
service and the console in their own processes. A person signs in to the console through the
Keycloak login form (authorisation code + PKCE). Then pairs of closed loops at 50 concurrent
users, alternating: gRPC alone, console page, gRPC alone, console page, ... The issue's target:
the console adds at most 30% to the p95.

    uv run --frozen --no-sync python -m bench.console.run [--seconds 10] [--pairs 3] [--jobs 200]
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack._proc import free_port
from toex_devstack.keycloak import DEMO_PASSWORD, Keycloak
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_tasking.__main__ import migrations_dir

from bench.common import LoadResult, closed_loop, machine, subprocess_server, wait_serving, write_results

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


async def bench(
    args: argparse.Namespace, pg: Postgres, nats: NatsServer, keycloak: Keycloak
) -> list[tuple[str, LoadResult]]:
    database = pg.create_database(f"bench_console_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    grpc_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    secret = ensure_client(keycloak, f"{url}/auth/callback")
    tasking_env = {
        "TOEX_DATABASE_URL": database,
        "TOEX_NATS_URL": nats.url,
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_GRPC_PORT": str(grpc_port),
        "TOEX_SERVICE_CLIENT_SECRET": "toex-tasking-local-secret",
        "TOEX_LOG_LEVEL": "WARNING",
    }
    console_env = {
        "TOEX_OIDC_ISSUER": keycloak.issuer,
        "TOEX_HTTP_PORT": str(http_port),
        "TOEX_PUBLIC_URL": url,
        "TOEX_CONSOLE_CLIENT_SECRET": secret,
        "TOEX_TASKING_ADDR": f"127.0.0.1:{grpc_port}",
        "TOEX_LOG_LEVEL": "WARNING",
    }
    results: list[tuple[str, LoadResult]] = []
    with (
        subprocess_server(["-m", "toex_tasking", "serve"], tasking_env, "console-tasking") as tasking,
        subprocess_server(["-m", "toex_console", "serve"], console_env, "console-console") as console_proc,
    ):
        await wait_serving(f"127.0.0.1:{grpc_port}")
        limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as console,
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
            await sign_in(console, "researcher.emsou")
            # The same token the console holds, for the gRPC-alone loop.
            token = keycloak.password_token("researcher.emsou")
            metadata = [("authorization", f"Bearer {token}"), ("x-toex-purpose", PURPOSE)]
            request = pb.ListJobsRequest(parent="regions/-", page_size=25)
            page = await console.get("/jobs")
            assert page.status_code == 200 and "regions/EMSOU/jobs/" in page.text, page.text[:500]
            watch = {"tasking": tasking.pid, "console": console_proc.pid, "PostgreSQL": pg.pid or 0}

            async def page_call() -> None:
                answer = await console.get("/jobs")
                if answer.status_code != 200:
                    raise RuntimeError(answer.status_code)

            for _ in range(args.pairs):
                results.append(
                    (
                        "gRPC ListJobs alone",
                        await closed_loop(
                            lambda: stub.ListJobs(request, metadata=metadata),
                            concurrency=args.users,
                            seconds=args.seconds,
                            watch=watch,
                        ),
                    )
                )
                results.append(
                    (
                        "console /jobs page",
                        await closed_loop(
                            page_call, concurrency=args.users, seconds=args.seconds, watch=watch
                        ),
                    )
                )
    return results


async def run_all(args: argparse.Namespace) -> list[tuple[str, LoadResult]]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--users", type=int, default=USERS, help="concurrent users (closed loops)")
    parser.add_argument("--quick", action="store_true", help="short loops (3 s, 2 pairs)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.pairs = 3.0, 2
    results = asyncio.run(run_all(args))
    lines = [
        "# Console: jobs board page against its gRPC call alone",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.console.run"
        f" --seconds {args.seconds:g} --pairs {args.pairs} --jobs {args.jobs} --users {args.users}`."
        f" {args.users} concurrent users (closed"
        " loops), alternating A/B in one session: tasking ListJobs (page of 25, researcher.emsou's token and"
        " purpose) straight over gRPC, then the console's /jobs page, which makes that call and renders it.",
        "The machine is shared with other work while this runs: figures are noisy; compare within a pair.",
        "",
        "| run | calls/s | p50 ms | p95 ms | errors | console CPU µs/call | tasking CPU µs/call | load generator CPU µs/call |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results:
        lines.append(
            f"| {name} | {result.rate:.0f} | {result.p50:.1f} | {result.pct(95):.1f} | {result.errors} "
            f"| {result.cpu_us_per_call('console'):.0f} | {result.cpu_us_per_call('tasking'):.0f} "
            f"| {result.cpu_us_per_call('load generator'):.0f} |"
        )
    grpc_p95 = sorted(r.pct(95) for n, r in results if n.startswith("gRPC"))
    page_p95 = sorted(r.pct(95) for n, r in results if n.startswith("console"))
    median_grpc, median_page = grpc_p95[len(grpc_p95) // 2], page_p95[len(page_p95) // 2]
    lines += [
        "",
        f"Median p95: gRPC alone {median_grpc:.1f} ms, console page {median_page:.1f} ms: the page takes "
        f"{median_page / median_grpc:.2f}x the call alone (target: at most 1.30x).",
        "",
    ]
    path = write_results("console", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
