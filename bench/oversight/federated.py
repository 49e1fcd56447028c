"""National oversight through the real federation (issue 15's lag and catch-up figures).

The federation of `make up-federation` (toex_devstack.federation: the hub and the EMSOU and
LONDON installations, three nats-servers joined as leaf nodes, EMSOU's link through a relay the
benchmark can cut, every installation's services in their own processes), started on free
loopback ports with the running Keycloak. Events are published as the regions' tasking,
safeguarding, pnd and entity services publish them (bench/oversight/workload.py: CloudEvents
headers, `toex.<region>.<domain>.<Event>`) onto each region's own NATS, so they travel: the
region's reporter -> the region's OVERSIGHT -> the hub's OVERSIGHT sourcing it over the leaf link
-> the hub's aggregator -> GetOverview at the hub.

1. Lag (goal: p99 under 2 s at 1,000 events/s from two regions): each region's JobCreated and
   ReferralDrafted events are the probes, seen when the hub's GetOverview (polled through gRPC)
   counts them. Floors in the same run: a plain JetStream subscriber on the region's own TASKING
   (publish -> region stream), and one at the hub on OVERSIGHT (publish -> the region's report
   arrived at the hub, i.e. everything but the aggregator and the overview).
2. Catch-up (goal: under 60 s, exactly once): EMSOU's leaf link cut, K events published in
   EMSOU, the benchmark waits until EMSOU's reporter has put every report on EMSOU's OVERSIGHT
   (the partition lasts as long as publishing and reporting take), then restores the link and
   times until the hub has counted all of them; then the count checks.

    python -m bench.oversight.run --federation [--quick] [--only lag|catchup] [--reporter direct|outbox]
        [--hub-core | --hub-first]

`--hub-core` puts the hub's processes on one CPU and the regions' and the load on the other
(`pin_hub`: a stand-in for the hub on hardware of its own; results in
bench/results/oversight-federation-hub-core.md). `--hub-first` leaves every process on either core
but puts the regions' processes at a lower CPU priority (`favour_hub`; results in
bench/results/oversight-federation-hub-first.md).

`--reporter` sets every installation's TOEX_REPORTER (the reporter's path: straight to OVERSIGHT,
or through the outbox), for A/B runs in one session. A run that fails keeps the federation's logs
(their directory is printed).

Set TOEX_BENCH_KEYCLOAK_URL to the running Keycloak with the toex realm (default
http://127.0.0.1:8080).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.events.bus import subject_of
from toex_devstack.federation import HUB, Federation, FederationPorts, local_ports
from toex_devstack.keycloak import Keycloak
from toex_devstack.stack import load_services
from toex_kernel.regions import Region

from bench.common import ROOT, machine, write_results
from bench.oversight.run import lag_row, mark_seen, pct, publish
from bench.oversight.workload import Planned, in_batches, workload

COORDINATOR = "national_coordinator.national"
TWO = (Region.EMSOU, Region.LONDON)
CUT = Region.EMSOU


def event_id_of(msg: Any) -> str:
    headers = msg.headers or {}
    return str(headers.get("Nats-Msg-Id") or headers.get("ce-id") or "")


class Hub:
    """GetOverview at the hub's oversight service, as the national coordinator."""

    def __init__(self, federation: Federation, keycloak: Keycloak) -> None:
        self.address = federation.service_address(HUB, "oversight")
        self.keycloak = keycloak
        self.channel = grpc.aio.insecure_channel(self.address, options=[("grpc.enable_http_proxy", 0)])
        self.stub = oversight_pb2_grpc.OversightServiceStub(self.channel)
        self.token = ""
        self.token_at = 0.0

    async def overview(self, regions: tuple[Region, ...] = TWO) -> pb.GetOverviewResponse:
        if time.monotonic() - self.token_at > 120:  # tokens live a few minutes; runs last longer
            self.token = await asyncio.to_thread(self.keycloak.password_token, COORDINATOR)
            self.token_at = time.monotonic()
        metadata = (("authorization", f"Bearer {self.token}"), ("x-toex-purpose", "Op BENCH federation"))
        request = pb.GetOverviewRequest(regions=[r.to_proto() for r in regions])  # type: ignore[misc]
        return await self.stub.GetOverview(request, metadata=metadata, timeout=30)

    async def close(self) -> None:
        await self.channel.close(None)


def by_region(answer: pb.GetOverviewResponse) -> dict[Region, Any]:
    return {Region.from_proto(f.region): f for f in answer.regions}


async def lag_bench(
    federation: Federation, hub: Hub, rate: int, seconds: float, reporter_path: str = "direct"
) -> tuple[list[str], list[str]]:
    planned, expected = workload(int(rate * seconds), seed=2)
    loop = asyncio.get_running_loop()
    regions = {r: await nats.connect(federation.nats_url(r.value, "services")) for r in TWO}
    streams = {r: nc.jetstream() for r, nc in regions.items()}
    # The floors subscribe as admin: an ordered consumer's flow-control replies ($JS.FC.>) are
    # not among what the services user may publish.
    watchers = {r: await nats.connect(federation.nats_url(r.value, "admin")) for r in TWO}
    hub_nc = await nats.connect(federation.nats_url(HUB, "admin"))
    published: dict[tuple[str, Region, int], float] = {}
    seen: dict[tuple[str, Region, int], float] = {}
    sent_at: dict[str, float] = {}
    at_region: dict[str, float] = {}
    at_hub: dict[str, float] = {}
    jobs_probed = {p.envelope.event_id for p in planned if p.created >= 0}

    def recorder(into: dict[str, float]) -> Any:
        async def on(msg: Any) -> None:
            event_id = event_id_of(msg)
            if event_id in jobs_probed:
                into.setdefault(event_id, loop.time())

        return on

    new = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    subs = [
        await watchers[r]
        .jetstream()
        .subscribe(
            subject_of(tasking_events.JobCreated, r.value.lower()),
            cb=recorder(at_region),
            ordered_consumer=True,
            config=new,
        )
        for r in TWO
    ]
    subs.append(
        await hub_nc.jetstream().subscribe(
            subject_of(tasking_events.JobCreated, domain="oversight"),
            stream="OVERSIGHT",
            cb=recorder(at_hub),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
    )
    before = await hub.overview()
    assert before.total.events_counted == 0, before.total.events_counted
    done = asyncio.Event()
    polls = 0

    async def poll() -> None:
        nonlocal polls
        while not done.is_set():
            answer = await hub.overview()
            polls += 1
            mark_seen(answer, loop.time(), seen)
            if len(seen) >= len(published) and published and publishing_over.is_set():
                done.set()
            await asyncio.sleep(0.05)

    publishing_over = asyncio.Event()
    poller = asyncio.create_task(poll())
    started = loop.time()
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    for n, batch in enumerate(in_batches(planned, per_tick)):
        await asyncio.sleep(max(0.0, started + n * tick - loop.time()))
        parts = {r: [p for p in batch if p.region is r] for r in TWO}
        stamps: dict[Region, list[float]] = {r: [] for r in TWO}
        await asyncio.gather(*(publish(streams[r], parts[r], stamps[r], core=regions[r]) for r in TWO))
        for r in TWO:
            for item, stamp in zip(parts[r], stamps[r], strict=True):
                if item.created >= 0:
                    published[("job", r, item.created)] = stamp
                    sent_at[item.envelope.event_id] = stamp
                if item.drafted >= 0:
                    published[("referral", r, item.drafted)] = stamp
    publishing = loop.time() - started
    publishing_over.set()
    try:
        await asyncio.wait_for(done.wait(), timeout=180)
    except TimeoutError:
        pass
    done.set()
    await poller
    # Then every event, not only the probes; then a while longer, to see nothing counted twice.
    final = await hub.overview()
    waited = loop.time()
    while final.total.events_counted < len(planned) and loop.time() - waited < 180:
        await asyncio.sleep(0.5)
        final = await hub.overview()
    await asyncio.sleep(5)
    final = await hub.overview()
    for sub in subs:
        await sub.unsubscribe()
    for nc in (*regions.values(), *watchers.values(), hub_nc):
        await nc.close()

    def lags_of(kind: str) -> list[float]:
        return [(seen[k] - published[k]) * 1000 for k in published if k[0] == kind and k in seen]

    job_lags, referral_lags = lags_of("job"), lags_of("referral")
    lags = job_lags + referral_lags
    region_floor = [(at_region[e] - sent_at[e]) * 1000 for e in sent_at if e in at_region]
    hub_floor = [(at_hub[e] - sent_at[e]) * 1000 for e in sent_at if e in at_hub]
    base = pct(region_floor, 99)

    def ratio(values: list[float]) -> str:
        return f"{pct(values, 99) / base:.1f}" if values and base else "-"

    figures = by_region(final)
    checks = []
    for r in TWO:
        got = (figures[r].jobs.raised, figures[r].referrals.drafted)
        wanted = (expected.jobs[r], expected.referrals[r])
        checks.append(f"{r.value} jobs raised and referrals drafted {got} (published {wanted})")
    exact = final.total.events_counted == len(planned) and all(
        (figures[r].jobs.raised, figures[r].referrals.drafted) == (expected.jobs[r], expected.referrals[r])
        for r in TWO
    )
    table = [
        "| path | probes | p50 ms | p90 ms | p99 ms | max ms | ratio p99 to the first floor's |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        lag_row(
            "publish -> plain subscriber on the region's TASKING, JobCreated (floor)", region_floor, "1.00"
        ),
        lag_row(
            f"publish -> the region's report in the hub's OVERSIGHT (reporter, {reporter_path}, leaf sourcing), JobCreated",
            hub_floor,
            ratio(hub_floor),
        ),
        lag_row(
            "publish -> counted in the hub's GetOverview, JobCreated (tasking)", job_lags, ratio(job_lags)
        ),
        lag_row(
            "publish -> counted in the hub's GetOverview, ReferralDrafted (safeguarding)",
            referral_lags,
            ratio(referral_lags),
        ),
        lag_row("publish -> counted in the hub's GetOverview, both probes together", lags, ratio(lags)),
    ]
    verdict = "met" if lags and pct(lags, 99) < 2000 and exact and len(lags) == len(published) else "NOT met"
    summary = [
        f"Lag: {len(planned) / publishing:,.0f} events/s from EMSOU and LONDON for {publishing:.0f} s "
        f"({len(planned):,} events; {len(job_lags):,} JobCreated and {len(referral_lags):,} ReferralDrafted "
        f"probes seen of {len(published):,}): p50 {pct(lags, 50):,.0f} ms, p99 {pct(lags, 99):,.0f} ms, max "
        f"{max(lags, default=float('nan')):,.0f} ms at the hub (goal p99 < 2,000 ms: {verdict}); the report "
        f"reached the hub's OVERSIGHT at p99 {pct(hub_floor, 99):,.0f} ms; the region's own stream at p99 "
        f"{base:,.1f} ms. Counted at the end: {final.total.events_counted:,} of {len(planned):,} events "
        f"({'each once' if exact else 'NOT exactly once'}): {'; '.join(checks)}. {polls:,} GetOverview polls."
    ]
    return table, summary


async def oversight_messages(federation: Federation, region: Region | str) -> int:
    """The OVERSIGHT stream's message count at an installation (a region, or the hub)."""
    nc = await nats.connect(federation.nats_url(region if isinstance(region, str) else region.value, "admin"))
    try:
        info = await nc.jetstream().stream_info("OVERSIGHT")
        return int(info.state.messages)
    finally:
        await nc.close()


async def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> float:
    began = time.perf_counter()
    while not await check():
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(interval)
    return time.perf_counter() - began


async def catchup_bench(
    federation: Federation, hub: Hub, events: int, partition_minutes: float = 0.0
) -> tuple[list[str], list[str]]:
    # EMSOU's share of a two-region workload (its jobs worked by LONDON too), about `events`.
    planned: list[Planned] = [p for p in workload(2 * events, seed=3)[0] if p.region is CUT][:events]
    jobs = sum(1 for p in planned if p.created >= 0)
    referrals = sum(1 for p in planned if p.drafted >= 0)
    hub_monitor = federation.federation_ports().members[HUB].nats_monitor

    async def counted() -> Any:
        return by_region(await hub.overview((CUT,)))[CUT]

    start = await counted()
    reports_before = await oversight_messages(federation, CUT)
    link = federation.links[CUT.value]
    cut_at = time.perf_counter()
    link.cut()
    await wait_for(
        lambda: asyncio.to_thread(lambda: Federation.leaf_links(hub_monitor) == 1), 30, "EMSOU's link down"
    )
    nc = await nats.connect(federation.nats_url(CUT.value, "services"))
    js = nc.jetstream()
    began = time.perf_counter()
    for batch in in_batches(planned, 1000):
        await publish(js, batch)
    publish_seconds = time.perf_counter() - began
    await nc.close()

    async def reported() -> bool:
        return await oversight_messages(federation, CUT) >= reports_before + len(planned)

    report_seconds = await wait_for(reported, 1800, "EMSOU's reporter")
    # The link stays cut for `partition_minutes` in all (at least as long as publishing and
    # reporting take): the leaf link's and the source's retries back off meanwhile.
    held = partition_minutes * 60 - (time.perf_counter() - cut_at)
    if held > 0:
        print(f"holding the partition {held:.0f} s more", flush=True)
        await asyncio.sleep(held)
    during = await counted()
    hub_before = await oversight_messages(federation, HUB)
    partition = time.perf_counter() - cut_at
    link.restore()
    restored = time.perf_counter()
    target = start.events_counted + len(planned)
    # Which of the two steps sets the pace: the hub's OVERSIGHT sourcing EMSOU's over the leaf
    # link, or the aggregator counting what has arrived. Both sampled every second.
    timeline: list[tuple[float, int, int]] = []

    async def watch() -> None:
        while True:
            sourced = await oversight_messages(federation, HUB) - hub_before
            done = (await counted()).events_counted - start.events_counted
            timeline.append((time.perf_counter() - restored, sourced, done))
            if done >= len(planned):
                return
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())

    async def caught_up() -> bool:
        return bool((await counted()).events_counted >= target)

    await wait_for(lambda: asyncio.to_thread(lambda: Federation.leaf_links(hub_monitor) == 2), 60, "link up")
    link_seconds = time.perf_counter() - restored
    catchup_seconds = await wait_for(caught_up, 1800, "the hub's catch-up", interval=0.25) + link_seconds
    await asyncio.wait_for(watcher, 30)
    sourced_at = next((t for t, sourced, _ in timeline if sourced >= len(planned)), float("nan"))
    await asyncio.sleep(5)
    end = await counted()
    reports = await oversight_messages(federation, CUT) - reports_before
    got = (
        end.events_counted - start.events_counted,
        end.jobs.raised - start.jobs.raised,
        end.referrals.drafted - start.referrals.drafted,
    )
    wanted = (len(planned), jobs, referrals)
    exact = got == wanted and during.events_counted == start.events_counted
    verdict = "met" if catchup_seconds < 60 and exact else "NOT met"
    table = [
        "| step | seconds | events/s |",
        "| --- | ---: | ---: |",
        f"| publish {len(planned):,} events in EMSOU (link cut) | {publish_seconds:.1f} | {len(planned) / publish_seconds:,.0f} |",
        f"| EMSOU's reporter: every report on EMSOU's OVERSIGHT (from the first publish) | {report_seconds + publish_seconds:.1f} | "
        f"{len(planned) / (report_seconds + publish_seconds):,.0f} |",
        f"| partition (link cut to restored) | {partition:.1f} | |",
        f"| link restored -> leaf link up at the hub | {link_seconds:.1f} | |",
        f"| link restored -> every report in the hub's OVERSIGHT (the source over the leaf link; sampled each second) | {sourced_at:.1f} | {len(planned) / sourced_at:,.0f} |",
        f"| link restored -> the hub counted all of them (catch-up) | {catchup_seconds:.1f} | {len(planned) / catchup_seconds:,.0f} |",
        "",
        "Sourced and counted after the link was restored (every 10 s of the samples):",
        "",
        "| seconds | in the hub's OVERSIGHT | counted | counted behind the source |",
        "| ---: | ---: | ---: | ---: |",
        *(
            f"| {t:.0f} | {sourced:,} | {done:,} | {sourced - done:,} |"
            for i, (t, sourced, done) in enumerate(timeline)
            if i % 10 == 0 or i == len(timeline) - 1
        ),
    ]
    summary = [
        f"Catch-up: {len(planned):,} EMSOU events ({jobs:,} jobs raised, {referrals:,} referrals drafted) published "
        f"while EMSOU's link was cut for {partition:.0f} s"
        + (
            f" (held for {partition_minutes:g} minutes); "
            if partition_minutes
            else " (the time to publish and report them, not 10 minutes); "
        )
        + f"the hub counted none of them during the partition ({during.events_counted - start.events_counted} more), "
        f"and all of them {catchup_seconds:.1f} s after the link was restored (goal < 60 s: {verdict}). "
        f"Counted (events, jobs, referrals) {got}, published {wanted}: {'each once' if exact else 'NOT exactly once'}; "
        f"EMSOU's OVERSIGHT took {reports:,} reports."
    ]
    return table, summary


HUB_CPU, REST_CPU = {0}, {1}


def _members(ports: FederationPorts) -> list[tuple[Path, bool]]:
    """The federation's processes, each with whether it is the hub's: a service belongs to the
    installation whose nats-server its TOEX_NATS_URL names; a nats-server to the installation
    whose port it serves. PostgreSQL (shared by every installation, as in `make up-federation`)
    and Keycloak are no installation's."""
    member_of = {str(p.nats): name for name, p in ports.members.items()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        port = ""
        for variable in environ:
            if variable.startswith(b"TOEX_NATS_URL="):
                port = variable.rsplit(b":", 1)[-1].decode(errors="replace").strip("/")
        if argv and argv[0].endswith(b"nats-server") and b"-p" in argv:
            port = argv[argv.index(b"-p") + 1].decode(errors="replace")
        if port in member_of:
            found.append((entry, member_of[port] == HUB))
    return found


def _each_thread(entry: Path, do: Any) -> bool:
    try:
        for task in (entry / "task").iterdir():  # every thread, not only the first
            do(int(task.name))
    except OSError:
        return False
    return True


def pin_hub(ports: FederationPorts) -> tuple[int, int]:
    """`--hub-core`: the hub's services and nats-server on CPU 0, the regions' services and
    nats-servers and this benchmark (the load) on CPU 1; PostgreSQL and Keycloak on either. A
    stand-in for a hub on hardware of its own, which a deployment gives it (the chart's CPU
    requests), on a machine of two cores. Returns how many processes went to each CPU."""
    hub = rest = 0
    for entry, on_hub in _members(ports):
        cpus = HUB_CPU if on_hub else REST_CPU
        if _each_thread(entry, lambda tid, cpus=cpus: os.sched_setaffinity(tid, cpus)):
            hub, rest = (hub + 1, rest) if on_hub else (hub, rest + 1)
    os.sched_setaffinity(0, REST_CPU)
    return hub, rest


# `--hub-first`: how much lower the regions' CPU priority is than the hub's.
REGIONS_NICE = 10


def favour_hub(ports: FederationPorts) -> tuple[int, int]:
    """`--hub-first`: every process may run on either core, but the regions' services and
    nats-servers at nice REGIONS_NICE, the hub's at the default: when the two cores are short,
    the hub's work goes first. Another stand-in for a hub on hardware of its own, one that still
    lets the regions use whatever the hub leaves (pinned, they would have one core between
    them). PostgreSQL, Keycloak and this benchmark (the load) keep the default.

    Each service runs in a session of its own (the devstack starts it so), and where the kernel
    groups a session's processes for scheduling (`/proc/sys/kernel/sched_autogroup_enabled`),
    the groups share the cores equally whatever their threads' nice values: so the nice value
    is set on the process's group (`/proc/<pid>/autogroup`) as well as on its threads. Returns
    (the hub's processes, the others reniced)."""
    hub = rest = 0
    for entry, on_hub in _members(ports):
        if on_hub:
            hub += 1
            continue
        if _each_thread(entry, lambda tid: os.setpriority(os.PRIO_PROCESS, tid, REGIONS_NICE)):
            rest += 1
        try:
            (entry / "autogroup").write_text(str(REGIONS_NICE))
        except OSError:  # a kernel without autogroups: the threads' nice is what counts
            pass
    return hub, rest


async def measure(args: Any) -> None:
    rate, seconds = (1000, 10.0) if args.quick else (1000, 60.0)
    events = 10_000 if args.quick else 100_000
    keycloak_url = os.environ.get("TOEX_BENCH_KEYCLOAK_URL", "http://127.0.0.1:8080")
    reporter = getattr(args, "reporter", None)
    reporter_path = "outbox" if reporter == "outbox" else "direct"
    keycloak = Keycloak.external(keycloak_url)
    state = Path(tempfile.mkdtemp(prefix="toex-bench-federation-"))
    state.chmod(0o755)  # PostgreSQL runs as an unprivileged user when run as root
    said: list[str] = []
    ports = FederationPorts.free(local_ports(load_services(ROOT)))
    federation = Federation(
        ROOT,
        state_dir=state,
        ports=ports,
        keycloak_url=keycloak_url,
        cuttable=(CUT.value,),
        extra_env={"TOEX_REPORTER": args.reporter} if getattr(args, "reporter", None) else None,
        echo=said.append,
    )
    sections: dict[str, tuple[list[str], list[str]]] = {}
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    failed = True
    try:
        if await asyncio.to_thread(federation.up) != 0:
            raise RuntimeError("the federation did not start:\n" + "\n".join(said[-40:]))
        startup = time.perf_counter() - began
        print(f"federation started in {startup:.0f} s ({state})", flush=True)
        pinned = pin_hub(ports) if getattr(args, "hub_core", False) else None
        if pinned:
            print(
                f"pinned {pinned[0]} hub processes to CPU 0, {pinned[1]} others and this one to CPU 1",
                flush=True,
            )
        favoured = favour_hub(ports) if getattr(args, "hub_first", False) else None
        if favoured:
            print(
                f"{favoured[1]} region processes at nice {REGIONS_NICE}; the hub's {favoured[0]} at 0",
                flush=True,
            )
        await asyncio.sleep(5)  # the services' consumers set up, the hub's sources running
        hub = Hub(federation, keycloak)
        try:
            if args.only in (None, "lag"):
                sections["lag"] = await lag_bench(federation, hub, rate, seconds, reporter_path)
                print(*sections["lag"][0], *sections["lag"][1], sep="\n", flush=True)
            if args.only in (None, "catchup"):
                sections["catchup"] = await catchup_bench(
                    federation, hub, events, getattr(args, "partition_minutes", 0.0) or 0.0
                )
                print(*sections["catchup"][0], *sections["catchup"][1], sep="\n", flush=True)
        finally:
            await hub.close()
        failed = False
    finally:
        for link in federation.links.values():
            link.restore()
        await asyncio.to_thread(federation.down)
        if failed and federation.logs.exists():
            kept = Path(tempfile.mkdtemp(prefix="toex-bench-federation-logs-"))
            shutil.copytree(federation.logs, kept, dirs_exist_ok=True)
            print(f"the federation's logs: {kept}", flush=True)
        shutil.rmtree(state, ignore_errors=True)
    titles = {
        "lag": (
            "Region event to hub overview lag",
            f"{rate:,} events/s for {seconds:.0f} s in total, split between EMSOU and LONDON (each region's "
            "events on its own nats-server), about three quarters tasking, the rest referrals, PND answers and "
            "deconfliction notices. The region's other services consume the same events as they would "
            "(they are on the region's streams). GetOverview at the hub is polled every 50 ms (plus its own "
            "time), which the lag includes. The floors are plain ordered JetStream subscribers: on the region's "
            "TASKING, and on the hub's OVERSIGHT.",
        ),
        "catchup": (
            "Catch-up after a partition",
            f"EMSOU's share of the same mix ({events:,} events) published in EMSOU while its leaf link to the "
            "hub is cut (the benchmark's relay drops it); once EMSOU's reporter has put every report on EMSOU's "
            "OVERSIGHT, the link is restored and the time is taken until the hub's GetOverview counts all of "
            "them. The hub's OVERSIGHT sources EMSOU's over the link (deploy/nats/hub_streams.py); the "
            "catch-up includes the leaf link's reconnection and the source's resumption.",
        ),
    }
    parts = [
        "# National oversight through the federation (bench/oversight, federated)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.oversight.run --federation"
        f"{' --quick' if args.quick else ''}{f' --only {args.only}' if args.only else ''}"
        f"{f' --reporter {reporter}' if reporter else ''}{' --hub-core' if pinned else ''}"
        f"{' --hub-first' if favoured else ''}"
        f"{f' --partition-minutes {args.partition_minutes:g}' if getattr(args, 'partition_minutes', 0) else ''}`; the reporters publish "
        f"{'through the outbox' if reporter_path == 'outbox' else 'straight to OVERSIGHT'}. The federation of "
        "`make up-federation` (toex_devstack.federation) on free loopback ports: the hub, EMSOU and LONDON, "
        "three nats-servers (JetStream file storage) joined as leaf nodes, one PostgreSQL (fsync on) with every "
        "installation's databases, the running Keycloak, each installation's services in their own processes "
        f"(started in {startup:.0f} s), at their default settings. "
        + (
            f"**The hub on a core of its own** (`--hub-core`, a stand-in for the hub's own hardware): its "
            f"{pinned[0]} processes (services and nats-server) on CPU 0; the regions' {pinned[1]} and the "
            "benchmark's load on CPU 1; PostgreSQL and Keycloak on either. Load "
            if pinned
            else (
                f"**The hub first** (`--hub-first`, another stand-in for the hub's own hardware): every process on "
                f"either core, the regions' {favoured[1]} processes (services and nats-servers) at nice "
                f"{REGIONS_NICE} (their threads and their scheduling groups), the hub's {favoured[0]} at the default, so "
                "the hub's work goes first when the cores are short; PostgreSQL, Keycloak and the benchmark's load at "
                "the default. Load "
            )
            if favoured
            else "The machine's 2 cores run all of it; load "
        )
        + f"average {load_before:.1f} when the federation started and {os.getloadavg()[0]:.1f} at the end; "
        "bench/results/oversight.md has the single-server figures.",
        "",
    ]
    summaries: list[str] = []
    for key, (table, summary) in sections.items():
        title, text = titles[key]
        parts += [f"## {title}", "", text, "", *table, ""]
        summaries += summary
    parts += ["## Summary", "", *(f"- {line}" for line in summaries), ""]
    report = "\n".join(parts)
    name = "oversight-federation" + ("-hub-core" if pinned else "-hub-first" if favoured else "")
    write_results(name, report)
    print(report)
