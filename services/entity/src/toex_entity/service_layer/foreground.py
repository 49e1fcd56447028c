"""Resolution before learning, in one replica: while a resolution is in flight, the background
estimating process (Splink in its own idle-priority process, adapters/splink_model.py) is
stopped, and it is continued when none is.

Idle priority alone gives resolution every CPU it asks for, but not the caches, the memory
bandwidth and the hyperthread sibling a busy estimate shares with it: measured at 100,000 stored
persons, resolution's p99 was 1.6 times its quiet p99 while an idle-priority estimate ran
(bench/results/entity-learning.md). Stopping the estimate (SIGSTOP) for the few milliseconds a
resolution takes removes that, and costs the estimate only the time resolution is busy.

So that a service that is never idle still learns, the estimate is not kept stopped for longer
than `max_pause_seconds` at a time: after that it runs (at idle priority still) until
resolution next goes idle and busy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator


class Foreground:
    def __init__(self, *, max_pause_seconds: float = 2.0) -> None:
        self.max_pause_seconds = max_pause_seconds
        self._pids: set[int] = set()
        self._busy = 0
        self._stopped = False
        self._release: asyncio.TimerHandle | None = None
        self.stops = 0  # how many times a background process was stopped (for tests and figures)
        self.paused_seconds = 0.0
        self._stopped_at = 0.0

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def attach(self, pid: int) -> None:
        """A background process that yields to resolution (stopped now if resolution is busy)."""
        self._pids.add(pid)
        if self._busy and self._stopped:
            _signal(pid, signal.SIGSTOP)

    def detach(self, pid: int) -> None:
        """The process is done (or about to be killed): continue it, forget it."""
        if pid in self._pids:
            self._pids.discard(pid)
            _signal(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def resolving(self) -> Iterator[None]:
        """Around a resolution: the first one in flight stops the background processes, the
        last one out continues them."""
        self._busy += 1
        if self._busy == 1 and self._pids:
            self._stop()
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._continue()

    def _stop(self) -> None:
        for pid in self._pids:
            _signal(pid, signal.SIGSTOP)
        self._stopped = True
        self._stopped_at = time.monotonic()
        self.stops += 1
        with contextlib.suppress(RuntimeError):  # no running loop: no bound on the pause
            self._release = asyncio.get_running_loop().call_later(self.max_pause_seconds, self._continue)

    def _continue(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if not self._stopped:
            return
        self._stopped = False
        self.paused_seconds += time.monotonic() - self._stopped_at
        for pid in self._pids:
            _signal(pid, signal.SIGCONT)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
