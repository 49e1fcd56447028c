"""Shared bits for benchmarks: real servers on loopback, load loops, percentiles, result files."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class LoadResult:
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    # CPU seconds (user + system) each watched process used while the calls were counted.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def cpu_us_per_call(self, name: str) -> float:
        return self.cpu_seconds[name] / self.calls * 1e6 if self.calls else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and every process below it, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += used.get(current, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == current)
    return total


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def closed_loop(
    call: Callable[[], Awaitable[object]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    watch: dict[str, int] | None = None,
) -> LoadResult:
    """`concurrency` workers call back-to-back for `seconds` (after a warm-up that is not counted).
    `watch` names processes (by pid, with their children) whose CPU time over the counted
    seconds is recorded, beside this process's own as "load generator"."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    start = loop.time() + warmup
    stop = start + seconds
    cpu_before: dict[str, float] = {}
    cpu_after: dict[str, float] = {}

    def snapshot() -> dict[str, float]:
        taken = {name: process_tree_cpu_seconds(pid) for name, pid in (watch or {}).items()}
        taken["load generator"] = own_cpu_seconds()
        return taken

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - loop.time()))
        cpu_before.update(snapshot())
        await asyncio.sleep(max(0.0, stop - loop.time()))
        cpu_after.update(snapshot())

    async def worker() -> None:
        nonlocal errors
        while True:
            begun = loop.time()
            if begun >= stop:
                return
            try:
                await call()
            except Exception:
                errors += 1
                continue
            ended = loop.time()
            if begun >= start:
                latencies.append((ended - begun) * 1000)

    await asyncio.gather(meter(), *(worker() for _ in range(concurrency)))
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before}
    return LoadResult(len(latencies), errors, seconds, latencies, used)


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{cpus} cores ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_results(name: str, markdown: str) -> Path:
    """Write bench/results/<name>.md. A hand-written section of the file it replaces, from its
    "## Analysis" heading on, is kept (appended) unless the new text has one of its own."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    if path.exists() and "\n## Analysis" not in markdown:
        previous = path.read_text()
        at = previous.find("\n## Analysis")
        if at >= 0:
            markdown = markdown.rstrip("\n") + "\n" + previous[at:]
    path.write_text(markdown)
    return path


@contextmanager
def subprocess_server(
    args: list[str], env: dict[str, str], log_name: str
) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(tempfile.gettempdir()) / f"toex-bench-{log_name}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, *args], env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_serving(address: str, timeout: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{address} did not become SERVING")
