"""Bulk ingest against the resolver as it was before issue 18 (bench/results/entity-ingest.md).

Issue 18 asks that bulk ingest keep its figure while the resolver gains the address blocking
keys (and the person sample kept as records are written). The baseline is the code itself: the
tree of `--baseline` (the last commit before the issue's work) is checked out beside this one,
and each ingest runs in a process of its own with one tree's packages first on the path
(bench/entity/ingest_child.py): the same N generated persons (seed 7), resolved through that
tree's handler into a fresh database of one PostgreSQL, baseline and current alternating
`--rounds` times. The ratio is current over baseline (at least 1.0: the figure kept). After each
bulk load, `--singles` more persons are resolved one at a time against it (incremental
resolution, which must keep its figure too): their p50 and p99, pooled over the rounds.

    python -m bench.entity.ingest_rate [--records N] [--rounds R] [--singles S] [--baseline COMMIT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from toex_devstack.postgres import Postgres

from bench.common import machine, write_results
from bench.entity.run import pct

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("ingest_child.py")
# 7bf625b began issue 18 (learning, relations, accounts); its parent is the resolver before it.
BASELINE = "eb3352f"


def package_path(tree: Path) -> str:
    """The tree's packages (each workspace member's src/), to put first on PYTHONPATH."""
    return os.pathsep.join(str(p) for p in sorted(tree.glob("*/*/src")))


def ingest(pg: Postgres, tree: Path, n: int, seed: int, singles: int) -> tuple[float, float, list[float]]:
    """Records per second, the ingesting process's CPU seconds (the rest of its time it waited
    on PostgreSQL), and the milliseconds each single resolution after it took."""
    name = f"bench_ingest_{uuid.uuid4().hex[:6]}"
    database = pg.create_database(name)
    try:
        done = subprocess.run(
            [sys.executable, "-P", str(CHILD), database, str(n), str(seed), str(singles)],
            env={**os.environ, "PYTHONPATH": package_path(tree)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ingest under {tree} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return (
            float(result["records"]) / float(result["seconds"]),
            float(result["cpu_seconds"]),
            [float(ms) for ms in result["single_ms"]],
        )
    finally:
        pg.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="generated persons per ingest")
    parser.add_argument("--rounds", type=int, default=3, help="baseline and current ingests, alternating")
    parser.add_argument("--baseline", default=BASELINE, help="the commit whose resolver is the baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--singles", type=int, default=500, help="persons resolved one at a time after each bulk load"
    )
    parser.add_argument("--results", default="entity-ingest", help="bench/results/<name>.md")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    current = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        # The results this bench writes are not a change to what it measures.
        [
            "git",
            "-C",
            str(ROOT),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!bench/results",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="toex-bench-ingest-"))
    work.chmod(0o755)
    baseline_tree = work / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(baseline_tree), commit],
        check=True,
    )
    pg = Postgres(data_dir=work / "pg", shared_buffers="1GB")
    pg.start()
    rates: dict[str, list[float]] = {"baseline": [], "current": []}
    cpu: dict[str, list[float]] = {"baseline": [], "current": []}
    single: dict[str, list[float]] = {"baseline": [], "current": []}
    try:
        for round_ in range(args.rounds):
            for label, tree in (("baseline", baseline_tree), ("current", ROOT)):
                rate, seconds, singles = ingest(pg, tree, args.records, args.seed, args.singles)
                rates[label].append(rate)
                cpu[label].append(seconds)
                single[label].extend(singles)
                print(
                    f"round {round_ + 1}: {label} {rate:,.0f} records/s, {seconds:.1f} s CPU, "
                    f"single p99 {pct(singles, 99):.1f} ms",
                    flush=True,
                )
    finally:
        pg.stop()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], check=False
        )
    base, now = statistics.median(rates["baseline"]), statistics.median(rates["current"])
    pairs = [c / b for b, c in zip(rates["baseline"], rates["current"], strict=True)]
    lines = [
        "# Bulk ingest against the resolver before issue 18",
        "",
        f"Run: `python -m bench.entity.ingest_rate --records {args.records} --rounds {args.rounds} "
        f"--baseline {commit}` on {machine()}; load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end. Current: {current}{' with uncommitted changes' if dirty else ''}.",
        "",
        f"{args.records:,} generated persons (seed {args.seed}, about a fifth of them corrupted duplicates) "
        "resolved through each tree's handler (what IngestRecords runs, without the gRPC hop) in chunks of "
        "20,000, each ingest in a process of its own into a fresh database of one PostgreSQL, alternating. "
        "CPU: the ingesting process's (`time.process_time` over the ingest alone); the rest of the wall "
        "time it waited on PostgreSQL.",
        "",
        "| resolver | records/s (median) | runs, in the order taken | the ingest's wall / CPU seconds (median) |",
        "| --- | ---: | --- | --- |",
        f"| baseline: {commit}, before issue 18 (no address keys, no person sample) | {base:,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in rates["baseline"])
        + f" | {args.records / base:.1f} / {statistics.median(cpu['baseline']):.1f} |",
        "| current: address keys, person sample, bounded pair weights, collector paused per command, no JIT, "
        f"CPU overlapping the database waits | {now:,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in rates["current"])
        + f" | {args.records / now:.1f} / {statistics.median(cpu['current']):.1f} |",
        "",
        f"Ratio current / baseline: **{now / base:.2f}** (medians; per round: "
        + ", ".join(f"{p:.2f}" for p in pairs)
        + "). Goal: at least 1.0 (issue 18: bulk ingest keeps its figure).",
        "",
    ]
    if single["baseline"] and single["current"]:
        b50, b99 = pct(single["baseline"], 50), pct(single["baseline"], 99)
        c50, c99 = pct(single["current"], 50), pct(single["current"], 99)
        lines += [
            f"Incremental: after each bulk load, {args.singles} more persons of the same generator resolved one "
            "at a time through the same handler (what ResolveRecord runs), pooled over the rounds.",
            "",
            "| resolver | single resolutions | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: |",
            f"| baseline | {len(single['baseline']):,} | {b50:.1f} | {b99:.1f} |",
            f"| current | {len(single['current']):,} | {c50:.1f} | {c99:.1f} |",
            "",
            f"p99 ratio current / baseline: **{c99 / b99:.2f}** (p50 {c50 / b50:.2f}). Goal: the figure kept "
            "(bench/results/entity.md: p99 under 50 ms).",
            "",
        ]
    print("\n".join(lines))
    write_results(args.results, "\n".join(lines))


if __name__ == "__main__":
    main()
