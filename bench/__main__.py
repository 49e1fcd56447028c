"""`python -m bench [--quick]`: run every benchmark in turn and rebuild bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import RESULTS, ROOT

BENCHMARKS = sorted(p.parent.name for p in (ROOT / "bench").glob("*/run.py"))


def main() -> int:
    args = sys.argv[1:]
    failed = []
    for name in BENCHMARKS:
        print(f"== bench/{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}.run", *args], cwd=ROOT).returncode != 0:
            failed.append(name)
    collect()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def collect() -> Path:
    """Join bench/results/*.md into bench/RESULTS.md."""
    parts = [
        "# Benchmark results",
        "",
        "Each section is written by `python -m bench.<name>.run`; see bench/<name>/.",
        "",
    ]
    for result in sorted(RESULTS.glob("*.md")):
        parts += [result.read_text().strip().replace("\n# ", "\n## ").replace("# ", "## ", 1), ""]
    target = ROOT / "bench" / "RESULTS.md"
    target.write_text("\n".join(parts))
    return target


if __name__ == "__main__":
    raise SystemExit(main())
