"""Comms benchmarks: CDR import vs a raw polars read, common contacts, convoy detection.

    uv run --no-sync python bench/comms/run.py --quick    # under a minute
    uv run --no-sync python bench/comms/run.py            # the issue's figures (10M CDR rows, 5M ANPR reads)

Each phase runs in its own child process so its peak memory (max RSS) is its own. Results go
to bench/results/comms.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "comms.md"


def child(phase: str, work: Path) -> None:
    import resource

    import polars as pl
    from toex_comms import demo
    from toex_comms.adapters import ingest
    from toex_comms.domain import analysis
    from toex_comms.domain.identifiers import parse_number_key
    from toex_comms.domain.profiles import BUILTIN_PROFILES

    out: dict[str, float] = {}
    start = time.perf_counter()
    if phase == "raw":
        frame = pl.read_csv(work / "cdr.csv", infer_schema=False)
        out["rows"] = frame.height
    elif phase == "import":
        shutil.rmtree(work / "cdr", ignore_errors=True)
        result = ingest.ingest_cdr(work / "cdr.csv", work / "cdr", BUILTIN_PROFILES["canonical"])
        out["rows"] = result.rows_accepted
        out["rejected"] = result.rows_rejected
    elif phase == "common":
        # As the service answers a whole-dataset scope: from the pair totals the import wrote.
        rows = pl.scan_parquet(sorted((work / "cdr").glob("rows-*.parquet")))
        pairs = pl.scan_parquet(work / "cdr" / "pairs.parquet")
        targets = [parse_number_key(t) for t in demo.bench_targets(40)]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = analysis.common_contacts(rows, targets, min_targets=2, pairs=pairs)
            times.append(time.perf_counter() - t0)
        out["best"] = min(times)
        out["found"] = len(found)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            suspects = analysis.rank_suspects(rows, targets, pairs=pairs)
            times.append(time.perf_counter() - t0)
        out["suspects_best"] = min(times)
        out["suspects"] = len(suspects)
        # A window narrower than the data: the records in it are read (30 of the 90 days).
        since = demo.BASE + timedelta(days=30)
        windowed = analysis.window(rows, "start", since, since + timedelta(days=30))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = analysis.common_contacts(windowed, targets, min_targets=2)
            times.append(time.perf_counter() - t0)
        out["window_best"] = min(times)
        out["window_found"] = len(found)
    elif phase == "anpr-import":
        result = ingest.ingest_anpr(work / "anpr.csv", work / "anpr")
        out["rows"] = result.rows_accepted
    elif phase == "convoys":
        rows = pl.scan_parquet(sorted((work / "anpr").glob("rows-*.parquet")))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            found = analysis.convoys(rows, window_seconds=180, min_occasions=3)
            times.append(time.perf_counter() - t0)
        out["best"] = min(times)
        out["found"] = len(found)
        out["planted_found"] = sum(1 for c in found if c.vrm_a.startswith("CV"))
    out["seconds"] = time.perf_counter() - start
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_phase(phase: str, work: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--work", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work)
        return
    from toex_comms import demo

    cdr_rows = 500_000 if args.quick else 10_000_000
    anpr_reads = 300_000 if args.quick else 5_000_000
    with tempfile.TemporaryDirectory(prefix="toex-comms-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        demo.write_bench_cdr(work / "cdr.csv", cdr_rows)
        demo.write_bench_anpr(work / "anpr.csv", anpr_reads)
        generated = time.perf_counter() - t0
        size_mb = (work / "cdr.csv").stat().st_size / 1e6
        # Alternated, best of three each: the machine is shared, so neither side gets the quiet slot.
        raws, imps = [], []
        for _ in range(3):
            raws.append(run_phase("raw", work))
            imps.append(run_phase("import", work))
        raw = min(raws, key=lambda r: r["seconds"])
        imp = min(imps, key=lambda r: r["seconds"])
        common = run_phase("common", work)
        anpr_import = run_phase("anpr-import", work)
        conv = run_phase("convoys", work)
    raw_runs = ", ".join(f"{r['seconds']:.1f}" for r in raws)
    imp_runs = ", ".join(f"{r['seconds']:.1f}" for r in imps)
    raw_rate = raw["rows"] / raw["seconds"]
    imp_rate = imp["rows"] / imp["seconds"]
    mode = "quick" if args.quick else "full"
    lines = [
        "# Comms analysis benchmarks",
        "",
        f"Mode: **{mode}**; run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. Data generated by `toex_comms.demo` in {generated:.0f} s; "
        "each phase in its own process (peak memory = that process's max RSS).",
        "",
        f"## CDR import ({cdr_rows:,} rows, {size_mb:,.0f} MB CSV, 40 targets, contacts drawn from 200,000 numbers in two formats)",
        "",
        "| | seconds | rows/s | peak memory (MB) |",
        "| --- | ---: | ---: | ---: |",
        f"| polars `read_csv` alone (baseline) | {raw['seconds']:.1f} | {raw_rate:,.0f} | {raw['max_rss_mb']:,.0f} |",
        f"| comms import (validate, normalise, Parquet, phone index, pair totals) | {imp['seconds']:.1f} | {imp_rate:,.0f} | {imp['max_rss_mb']:,.0f} |",
        "",
        f"Each side run three times, alternately, best kept (raw read {raw_runs} s; import {imp_runs} s).",
        "",
        f"Throughput ratio import / raw read: **{imp_rate / raw_rate:.2f}** (goal at least 0.3). "
        f"Memory ratio: {imp['max_rss_mb'] / raw['max_rss_mb']:.2f} (the import streams batches of 500,000 rows; the raw read holds the whole file).",
        "",
        "## Common contacts, 40 targets over the imported rows",
        "",
        f"Best of 3: **{common['best']:.3f} s** (goal under 1 s); {int(common['found'])} numbers in contact "
        "with at least 2 targets. Whole-dataset scope, answered from the pair totals the import "
        "writes (`pairs.parquet`), as the service does.",
        "",
        f"Same, 30-day window (read from the records in the window): best of 3 {common['window_best']:.3f} s, "
        f"{int(common['window_found'])} numbers. Suspect ranking, whole dataset: best of 3 "
        f"{common['suspects_best']:.3f} s ({int(common['suspects'])} ranked).",
        "",
        f"## Convoy detection over {anpr_reads:,} ANPR reads",
        "",
        f"Import {anpr_import['seconds']:.1f} s. Detection (window 180 s, at least 3 joint sightings), best of 2: "
        f"**{conv['best']:.2f} s** (goal under 10 s); {int(conv['found'])} convoys, "
        f"{int(conv['planted_found'])} of the 20 planted ones among them; peak memory {conv['max_rss_mb']:,.0f} MB.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
