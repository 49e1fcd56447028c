"""bench/results/soak.md: the run's parameters, its schedule, the calls inside and outside the
fault windows, the reconciliation and the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.common import machine
from bench.soak.faults import Window
from bench.soak.verdict import RECOVERY_GOAL, THROUGHPUT_GOAL, OpStats, Reconciliation, percentile


@dataclass
class Run:
    command: str
    parameters: dict[str, Any]
    baseline: float
    start: float  # monotonic time the traffic began
    end: float
    windows: list[Window]
    planned: list[Any]
    stats: dict[str, OpStats]
    throughput: tuple[float, float, float]
    recoveries: list[float]
    window_failures: list[int]  # failed call attempts inside each window
    lags: tuple[list[float], list[float]]
    drained_seconds: float
    left: dict[str, int]
    reconciliation: Reconciliation
    reasons: list[str]
    accepted_counts: dict[str, int]
    reader_subscriptions: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _codes(counts: Any) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "-"


def render(run: Run) -> str:
    t = lambda when: when - run.start  # noqa: E731 - seconds into the traffic
    lines = [
        "# Soak: the investigation's mix under faults (issue 21, item 2)",
        "",
        f"`{run.command}`, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, on {machine()}.",
        "",
        f"**Verdict: {'PASS' if run.passed else 'FAIL'}**"
        + ("" if run.passed else " - " + "; ".join(run.reasons)),
        "",
        "A private stack (`toex_devstack.stack.Stack`, as `make up` runs it: NATS, PostgreSQL, the five",
        "services and the PND simulator on free loopback ports; Keycloak as noted) under the traffic of",
        "several client processes, with faults on a schedule; after the traffic, a drain, then every",
        "accepted request is reconciled against the databases, the streams and the consumers' read",
        "models. See bench/soak/ for what each part does.",
        "",
        "## Parameters",
        "",
        "| parameter | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in run.parameters.items()),
        f"| fault-free baseline | first {run.baseline:.0f} s of the traffic |",
        "",
        "## Schedule",
        "",
        "| # | fault | planned at | injected at | back after | window closes | recovery | failed attempts in window |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, planned in enumerate(run.planned):
        if i < len(run.windows):
            w = run.windows[i]
            failed = run.window_failures[i]
            lines.append(
                f"| {i + 1} | {planned.describe()} | {planned.at:.0f} s | {t(w.injected):.1f} s | {w.outage:.1f} s "
                f"| {t(w.end):.1f} s | {run.recoveries[i]:.1f} s | {failed} |"
            )
        else:
            lines.append(f"| {i + 1} | {planned.describe()} | {planned.at:.0f} s | not injected | | | | |")
    lines += [
        "",
        "A window runs from the injection until the grace period after the component is back. Recovery:",
        "from the injection until the component was back and the last call attempt that failed had failed.",
        "",
        "## Calls",
        "",
        "Latency of each logical call (retries included) in ms; a call is inside when it overlaps a window.",
        "",
        "| operation | calls | p50 outside | p99 outside | p50 inside | p99 inside | failed attempts inside | failed attempts outside | never answered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for st in run.stats.values():
        lines.append(
            f"| {st.op} | {st.calls} | {_ms(percentile(st.out_ms, 50))} | {_ms(percentile(st.out_ms, 99))} "
            f"| {_ms(percentile(st.in_ms, 50))} | {_ms(percentile(st.in_ms, 99))} "
            f"| {st.attempts_failed_in}{' (' + _codes(st.codes_in) + ')' if st.codes_in else ''} "
            f"| {st.attempts_failed_out}{' (' + _codes(st.codes_out) + ')' if st.codes_out else ''} | {st.failed} |"
        )
    base, outside, outside_seconds = run.throughput
    ratio = outside / base if base else float("nan")
    out_lag, in_lag = run.lags
    lines += [
        "",
        f"Throughput (answered calls/s): baseline {base:.2f}, outside the windows after it {outside:.2f} "
        f"(over {outside_seconds:.0f} s): **{ratio:.2f}** of the baseline (goal >= {THROUGHPUT_GOAL}).",
        "",
        f"Event delivery (CloudEvents time to the stream reader), s: outside the windows p50 "
        f"{percentile(out_lag, 50):.2f}, p99 {percentile(out_lag, 99):.2f} ({len(out_lag)} events); inside p50 "
        f"{percentile(in_lag, 50):.2f}, p99 {percentile(in_lag, 99):.2f}, max {max(in_lag, default=float('nan')):.2f} "
        f"({len(in_lag)} events). The reader subscribed {sum(run.reader_subscriptions.values())} times over "
        f"{len(run.reader_subscriptions)} streams (again after each broker restart).",
        "",
        "## Reconciliation",
        "",
        f"Accepted: {', '.join(f'{n} {k}' for k, n in run.accepted_counts.items())}. Drained in "
        f"{run.drained_seconds:.0f} s" + (f"; left: {run.left}" if run.left else "") + ".",
        "",
        "| area | check | expected | found | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in run.reconciliation.checks:
        result = "ok" if c.ok else f"**FAIL** {c.detail}"
        lines.append(f"| {c.area} | {c.what} | {c.expected} | {c.found} | {result} |")
    lines += [
        "",
        "Streams: "
        + ", ".join(f"{s} {n}" for s, n in run.reconciliation.stream_counts.items())
        + " messages.",
        "Events by type: "
        + ", ".join(f"{k} {n}" for k, n in sorted(run.reconciliation.events_by_type.items()))
        + ".",
        "",
        "| consumer | stream | its events | inbox | pending | redelivered |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {c['name']} | {c['stream']} | {c['events']} | {c['inbox']} | {c['pending']} | {c['redelivered']} |"
            for c in sorted(run.reconciliation.consumers, key=lambda c: c["name"])
        ),
        "",
        "## Verdict",
        "",
        f"**{'PASS' if run.passed else 'FAIL'}**",
        "",
    ]
    if run.reasons:
        lines += [f"- {r}" for r in run.reasons]
    else:
        lines.append(
            f"- every accepted change stored once, its events published once, consumers' effects once; "
            f"no errors outside the fault windows; throughput held {ratio:.2f} (>= {THROUGHPUT_GOAL}); "
            f"recovery under {RECOVERY_GOAL:.0f} s after each fault"
        )
    if run.notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in run.notes)]
    return "\n".join(lines) + "\n"
