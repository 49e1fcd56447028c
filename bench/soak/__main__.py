"""`python -m bench.soak --minutes N`: the soak run of issue 21 (item 2).

1. start a private stack (stack.py) on free loopback ports in a temporary directory;
2. start the stream reader and the client processes (traffic.py), which work the investigation's
   mix for N minutes and stop by themselves (bounded in time and in scenarios per client);
3. inject the faults on their schedule (faults.py): broker restart, database restart, one
   service SIGKILLed and started again; the first part of the run has none (the baseline);
4. drain (outboxes empty, consumers caught up), stop the reader;
5. reconcile and measure (verdict.py), write bench/results/soak.md (report.py), stop the stack.

Exit status 0 on PASS, 1 on FAIL, 2 if the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.soak import verdict
from bench.soak.faults import KILL_ORDER, run_schedule, schedule
from bench.soak.report import Run, render
from bench.soak.stack import SoakStack
from bench.soak.traffic import RETRY_BUDGET, STALL_SECONDS, WEIGHTS, ClientConfig, run_client, run_reader

RAMP_SECONDS = 8.0  # for the client processes to start and fetch their tokens


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long the traffic runs")
    parser.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--lanes", type=int, default=3, help="concurrent scenarios per client (default 3)")
    parser.add_argument(
        "--rate",
        type=float,
        default=6.0,
        help="scenarios started per second, all clients (default 6; 0: back to back)",
    )
    parser.add_argument(
        "--max-scenarios", type=int, default=0, help="bound per client (default: from the rate)"
    )
    parser.add_argument(
        "--every", type=float, default=300.0, help="seconds between faults (default 300; at least 3 faults)"
    )
    parser.add_argument("--faults", type=int, default=None, help="number of faults instead")
    parser.add_argument("--kill-order", default=",".join(KILL_ORDER), help="services to kill, in turn")
    parser.add_argument(
        "--downtime", type=float, default=5.0, help="seconds the broker or database stays down"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds a window stays open after recovery"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument(
        "--keycloak-url",
        default=None,
        help="use this running Keycloak (realm toex, demo users) instead of starting one",
    )
    parser.add_argument("--out", default="soak", help="results file name under bench/results (default soak)")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def echo(message: str) -> None:
    print(message, flush=True)


def load_clients(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    accepted: dict[str, Any] = {
        "jobs": {},
        "datasets": {},
        "records": {},
        "intelligence": {},
        "referrals": {},
        "unanswered": [],
    }
    for path in paths:
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        samples.extend(data["samples"])
        for key, value in data["accepted"].items():
            if isinstance(value, list):
                accepted[key].extend(value)
            else:
                accepted[key].update(value)
    return samples, accepted


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    seconds = args.minutes * 60
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="toex-soak-"))
    echo(f"soak {run_id}: {args.minutes:g} min, work directory {workdir}")
    ctx = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    stack = SoakStack(workdir, keycloak_url=args.keycloak_url, echo=echo)
    try:
        try:
            stack.up()
        except Exception as exc:
            echo(f"the stack did not start: {exc}")
            return 2
        baseline, faults = schedule(
            seconds, every=args.every, count=args.faults, kill_order=tuple(args.kill_order.split(","))
        )
        lanes_total = args.clients * args.lanes
        period = lanes_total / args.rate if args.rate > 0 else 0.0
        max_scenarios = args.max_scenarios or (
            int(seconds / period * args.lanes * 1.1) + 10 if period else 50_000
        )

        stop_reader = ctx.Event()
        reader_out = workdir / "reader.json"
        reader = ctx.Process(target=run_reader, args=(stack.nats_url, str(reader_out), stop_reader))
        reader.start()
        processes.append(reader)

        start_at = time.monotonic() + RAMP_SECONDS
        stop_at = start_at + seconds
        mono_offset = time.time() - time.monotonic()
        traffic_start_wall = start_at + mono_offset - 1.0
        outs = [workdir / f"client-{i}.json" for i in range(args.clients)]
        clients = [
            ctx.Process(
                target=run_client,
                args=(
                    ClientConfig(
                        run_id=run_id,
                        client=i,
                        addresses=stack.addresses(),
                        keycloak_url=stack.keycloak_url,
                        start_at=start_at,
                        stop_at=stop_at,
                        lanes=args.lanes,
                        period=period,
                        max_scenarios=max_scenarios,
                        out=str(outs[i]),
                        seed=args.seed,
                    ),
                ),
            )
            for i in range(args.clients)
        ]
        for client in clients:
            client.start()
        processes.extend(clients)
        echo(
            f"traffic: {args.clients} clients x {args.lanes} lanes, "
            f"{'back to back' if not period else f'{args.rate:g} scenarios/s'}, for {seconds:.0f} s; "
            f"baseline {baseline:.0f} s, then {len(faults)} faults"
        )

        windows = run_schedule(
            stack,
            faults,
            traffic_start=start_at,
            downtime=args.downtime,
            grace=args.grace,
            echo=echo,
            aborted=lambda: not any(c.is_alive() for c in clients),
        )
        notes: list[str] = []
        for client in clients:
            client.join(timeout=max(1.0, stop_at + RETRY_BUDGET + 60 - time.monotonic()))
        hung = [i for i, c in enumerate(clients) if c.is_alive()]
        for i in hung:
            clients[i].terminate()
        crashed = [i for i, c in enumerate(clients) if c.exitcode not in (0, None) and i not in hung]
        traffic_end = time.monotonic()
        echo(f"traffic over after {traffic_end - start_at:.0f} s; draining ...")

        drained_seconds, left = asyncio.run(verdict.drain(stack, args.drain_timeout, echo=echo))
        time.sleep(STALL_SECONDS + 2.0)  # the reader picks up the last messages
        stop_reader.set()
        reader.join(timeout=60)
        reader_data = (
            json.loads(reader_out.read_text()) if reader_out.exists() else {"seen": [], "subscriptions": {}}
        )

        samples, accepted = load_clients(outs)
        echo(f"reconciling {len(samples)} calls, {len(reader_data['seen'])} events read ...")
        reconciliation = asyncio.run(
            verdict.reconcile(stack, run_id, accepted, reader_data["seen"], traffic_start_wall)
        )
        stats = verdict.op_stats(samples, windows)
        throughput = verdict.throughput(
            samples, windows, start=start_at, baseline_end=start_at + baseline, end=stop_at
        )
        recoveries = verdict.recovery(samples, windows, traffic_end)
        lags = verdict.event_lags(reader_data["seen"], windows, mono_offset, start_at)

        reasons = [f"{c.area}: {c.what}: {c.detail or c.found}" for c in reconciliation.checks if not c.ok]
        errors_out = sum(st.attempts_failed_out for st in stats.values())
        if errors_out:
            codes = {op: dict(st.codes_out) for op, st in stats.items() if st.codes_out}
            reasons.append(f"{errors_out} failed call attempts outside the fault windows: {codes}")
        never = sum(st.failed for st in stats.values())
        if never:
            reasons.append(f"{never} calls never answered (refused, or retried past {RETRY_BUDGET:.0f} s)")
        if len(windows) < len(faults):
            reasons.append(f"only {len(windows)} of {len(faults)} faults injected")
        base, outside, _ = throughput
        if not base or outside / base < verdict.THROUGHPUT_GOAL:
            reasons.append(
                f"throughput outside the windows {outside / base if base else 0:.2f} of the baseline"
            )
        slow = [f"#{i + 1} {r:.1f} s" for i, r in enumerate(recoveries) if r >= verdict.RECOVERY_GOAL]
        if slow:
            reasons.append(f"recovery not under {verdict.RECOVERY_GOAL:.0f} s: {', '.join(slow)}")
        if left:
            reasons.append(f"not drained after {args.drain_timeout:.0f} s: {left}")
        if hung or crashed:
            reasons.append(f"client processes hung {hung} or crashed {crashed}")
        if reader.exitcode != 0:
            reasons.append(f"the stream reader exited {reader.exitcode}")
        odd = {
            op: {c: n for c, n in st.codes_in.items() if c not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")}
            for op, st in stats.items()
        }
        odd = {op: codes for op, codes in odd.items() if codes}
        if period:
            notes.append(
                "the load is paced (a fixed rate of scenarios): the throughput ratio says whether the stack kept "
                "up with the offered rate outside the windows, not what it could do at most (`--rate 0` runs "
                "back to back)"
            )
        if odd:
            notes.append(f"inside the windows some calls failed with other codes than UNAVAILABLE: {odd}")

        keycloak = args.keycloak_url or "started by the stack"
        run = Run(
            command="python -m bench.soak " + shlex.join(argv),
            parameters={
                "traffic": f"{seconds:.0f} s",
                "clients x lanes": f"{args.clients} x {args.lanes}",
                "pace": f"{args.rate:g} scenarios/s in all" if period else "back to back",
                "scenario bound per client": max_scenarios,
                "scenario weights": ", ".join(f"{k} {v}" for k, v in WEIGHTS.items()),
                "broker/database downtime": f"{args.downtime:g} s",
                "window grace after recovery": f"{args.grace:g} s",
                "retries": f"UNAVAILABLE, DEADLINE_EXCEEDED, same request, pauses 0.2 s doubling to 2 s, for up to {RETRY_BUDGET:.0f} s",
                "Keycloak": keycloak,
                "stack": f"NATS :{stack.ports.nats}, PostgreSQL :{stack.ports.postgres}, services "
                + ", ".join(f"{n} :{a.rsplit(':', 1)[1]}" for n, a in stack.addresses().items()),
            },
            baseline=baseline,
            start=start_at,
            end=stop_at,
            windows=windows,
            planned=faults,
            stats=stats,
            throughput=throughput,
            recoveries=recoveries,
            window_failures=verdict.failures_per_window(samples, windows),
            lags=lags,
            drained_seconds=drained_seconds,
            left=left,
            reconciliation=reconciliation,
            reasons=reasons,
            accepted_counts={k: len(v) for k, v in accepted.items() if k != "unanswered"},
            reader_subscriptions=reader_data["subscriptions"],
            notes=notes,
        )
        path = write_results(args.out, render(run))
        echo(f"\nwritten {path}")
        echo(f"verdict: {'PASS' if run.passed else 'FAIL'}")
        for reason in reasons:
            echo(f"  - {reason}")
        for note in notes:
            echo(f"  note: {note}")
        return 0 if run.passed else 1
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(10)
        stack.down()
        echo(f"logs: {stack.logs}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
