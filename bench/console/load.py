"""Load generators for the console benchmark, in their own processes so that the measuring
client does not share an interpreter (or a GIL) with the servers or with itself.

Two kinds of closed-loop user, both as cheap as we can make them in Python (each asks for the
next page as soon as it has the last, or after a think time: `think` seconds on average, drawn
uniformly from half to one and a half times it, as a person reading the page would):

- `http`: one keep-alive HTTP/1.1 connection per user over bare asyncio streams (no client
  library: httpx cost 6-7 ms of CPU a page here), reading the console's `Server-Timing`
  header (`app;dur=..., grpc;dur=...`) beside the time the client saw;
- `grpc`: the same unary call over one grpc.aio channel per process, the request already
  serialised (no protobuf work in the loop).

Processes are started with `spawn` (gRPC and `fork` do not mix) and agree on a wall-clock
window; only calls begun inside it count. Each process reports its own CPU seconds over the
window, so the load generator's cost is on the record beside the servers'.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import process_tree_cpu_seconds

_TIMING = re.compile(rb"(\w+);dur=([0-9.]+)")
_CALLS = re.compile(rb'calls;desc="([0-9]+)"')


@dataclass(frozen=True)
class HttpTarget:
    host: str
    port: int
    path: str
    cookie: str


@dataclass(frozen=True)
class GrpcTarget:
    address: str
    method: str  # "/package.Service/Method"
    request: bytes
    metadata: tuple[tuple[str, str], ...]


@dataclass
class Measured:
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    client_ms: list[float] = field(default_factory=list)
    # From the console's Server-Timing header (pages only): whole page, and its gRPC share.
    server_ms: list[float] = field(default_factory=list)
    server_grpc_ms: list[float] = field(default_factory=list)
    server_calls: list[int] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def cpu_ms_per_call(self, name: str) -> float:
        return self.cpu_seconds.get(name, float("nan")) / self.calls * 1e3 if self.calls else float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _pause(think: float) -> float:
    return random.uniform(0.5 * think, 1.5 * think) if think > 0 else 0.0


async def _http_user(
    target: HttpTarget, start: float, stop: float, out: Measured, think: float = 0.0
) -> None:
    request = (
        f"GET {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Cookie: {target.cookie}\r\nAccept: text/html\r\n\r\n"
    ).encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.time() < stop:
        begun_wall, begun = time.time(), time.perf_counter()
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length, timing, close = 0, b"", False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"server-timing":
                    timing = value
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            if close:
                writer.close()
                reader = writer = None
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
        except Exception as exc:  # a failed page is counted, not fatal
            out.errors += 1
            out.first_error = out.first_error or repr(exc)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if begun_wall >= start:
            out.client_ms.append((time.perf_counter() - begun) * 1000)
            durations = {k: float(v) for k, v in _TIMING.findall(timing)}
            if b"app" in durations:
                out.server_ms.append(durations[b"app"])
                out.server_grpc_ms.append(durations.get(b"grpc", float("nan")))
                calls = _CALLS.search(timing)
                out.server_calls.append(int(calls.group(1)) if calls else 0)
        if think > 0:
            await asyncio.sleep(_pause(think))
    if writer is not None:
        writer.close()


async def _grpc_loop(
    target: GrpcTarget, users: int, start: float, stop: float, out: Measured, think: float = 0.0
) -> None:
    import grpc

    async with grpc.aio.insecure_channel(target.address) as channel:
        call = channel.unary_unary(target.method, None, None)  # bytes in, bytes out
        await call(target.request, metadata=target.metadata, timeout=30)  # connect before the window

        async def user() -> None:
            while time.time() < stop:
                begun_wall, begun = time.time(), time.perf_counter()
                try:
                    await call(target.request, metadata=target.metadata, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    out.errors += 1
                    out.first_error = out.first_error or f"{exc.code()}: {exc.details()}"
                    continue
                if begun_wall >= start:
                    out.client_ms.append((time.perf_counter() - begun) * 1000)
                if think > 0:
                    await asyncio.sleep(_pause(think))

        await asyncio.gather(*(user() for _ in range(users)))


async def _child(
    target: HttpTarget | GrpcTarget, users: int, start: float, stop: float, think: float = 0.0
) -> Measured:
    out = Measured(seconds=stop - start)

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        before = process_tree_cpu_seconds(os.getpid())
        await asyncio.sleep(max(0.0, stop - time.time()))
        out.cpu_seconds["load generator"] = process_tree_cpu_seconds(os.getpid()) - before

    if isinstance(target, HttpTarget):
        await asyncio.gather(meter(), *(_http_user(target, start, stop, out, think) for _ in range(users)))
    else:
        await asyncio.gather(meter(), _grpc_loop(target, users, start, stop, out, think))
    out.calls = len(out.client_ms)
    return out


def _child_main(
    target: HttpTarget | GrpcTarget,
    users: int,
    ready: Any,
    go: Any,
    window: Any,
    queue: Any,
    think: float = 0.0,
) -> None:
    if isinstance(target, GrpcTarget):
        import grpc  # noqa: F401  (imported before the window: it takes a while on a busy machine)
    ready.put(os.getpid())
    go.wait()
    start, stop = window[0], window[1]
    try:
        queue.put(asyncio.run(_child(target, users, start, stop, think)))
    except BaseException as exc:
        queue.put(Measured(errors=1, first_error=repr(exc)))
        raise


def closed_loops(
    target: HttpTarget | GrpcTarget,
    *,
    users: int,
    processes: int,
    seconds: float,
    warmup: float = 2.0,
    watch: dict[str, int] | None = None,
    think: float = 0.0,
) -> Measured:
    """`users` closed loops spread over `processes` processes, counted for `seconds` after a
    warm-up (process start, connections, first calls). `watch` names server processes whose CPU
    over the counted window is recorded. Blocking: call it through `asyncio.to_thread`."""
    context = multiprocessing.get_context("spawn")
    queue, ready, go = context.Queue(), context.Queue(), context.Event()
    window = context.Array("d", 2)
    shares = [users // processes + (1 if i < users % processes else 0) for i in range(processes)]
    children = [
        context.Process(
            target=_child_main, args=(target, share, ready, go, window, queue, think), daemon=True
        )
        for share in shares
        if share
    ]
    for child in children:
        child.start()
    # The window opens once every process is up (starting an interpreter can take seconds on a
    # busy machine), after a warm-up for connections and first calls.
    for _ in children:
        ready.get(timeout=120)
    start = time.time() + warmup
    stop = start + seconds
    window[0], window[1] = start, stop
    go.set()
    time.sleep(max(0.0, start - time.time()))
    before = {name: process_tree_cpu_seconds(pid) for name, pid in (watch or {}).items()}
    time.sleep(max(0.0, stop - time.time()))
    used = {name: process_tree_cpu_seconds(pid) - before[name] for name, pid in (watch or {}).items()}
    parts = [queue.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(30)
    total = Measured(seconds=seconds, cpu_seconds=used)
    total.cpu_seconds["load generator"] = 0.0
    for part in parts:
        total.calls += part.calls
        total.errors += part.errors
        total.client_ms += part.client_ms
        total.server_ms += part.server_ms
        total.server_grpc_ms += part.server_grpc_ms
        total.server_calls += part.server_calls
        total.cpu_seconds["load generator"] += part.cpu_seconds.get("load generator", 0.0)
        total.first_error = total.first_error or part.first_error
    return total
