"""Run `buf breaking` on protos/ against the previous state of main.

On a branch: against the merge base with main. On main itself: against the commit before HEAD.
Where there is no earlier commit with protos/ there is nothing to break, and that is said.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def main() -> int:
    head = git("rev-parse", "HEAD")
    main_ref = git("rev-parse", "--verify", "-q", "main") or git("rev-parse", "--verify", "-q", "origin/main")
    base = ""
    if main_ref and main_ref != head:
        base = git("merge-base", "HEAD", main_ref)
    if not base or base == head:
        base = git("rev-parse", "--verify", "-q", "HEAD~1")
    if not base or not git("ls-tree", "-d", base, "protos"):
        print("buf breaking: no earlier commit with protos/ to compare against")
        return 0
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    against = f"{ROOT}/.git#ref={base},subdir=protos"
    print(f"buf breaking against {base[:12]}")
    return subprocess.run([buf, "breaking", "protos", "--against", against], cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
