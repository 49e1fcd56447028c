"""Resolution before learning, in one replica: while a resolution is in flight, the background
estimating process (Splink in its own idle-priority process, adapters/splink_model.py) is
stopped, and it is continued when none is.

Idle priority alone gives resolution every CPU it asks for, but not the caches, the memory
bandwidth and the hyperthread sibling a busy estimate shares with it: measured at 100,000 stored
persons, resolution's p99 was 1.6 times its quiet p99 while an idle-priority estimate ran
(bench/results/entity-learning.md). Stopping the estimate (SIGSTOP) for the few milliseconds a
resolution takes removes that, and costs the estimate only the time resolution is busy.

So that a service that is never idle still learns, the estimate is never held stopped for more
than `max_stopped_share` (half) of any `window_seconds` (one second): a stop lasts at most what
is left of that budget, and once it is spent the estimate runs (at idle priority still) while
resolution stays busy, and is stopped again when some of the budget is back. Under steady
resolution load the estimate so gets at least half of the time, and finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator

# Shorter stops than this are not worth the two signals: the estimate runs instead.
MIN_STOP_SECONDS = 0.01
# With the budget spent and resolution still busy, how soon to look again.
RETRY_SECONDS = 0.05


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class Foreground:
    def __init__(
        self,
        *,
        window_seconds: float = 1.0,
        max_stopped_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[int, signal.Signals], None] = _signal,
    ) -> None:
        self.window_seconds = window_seconds
        self.budget_seconds = window_seconds * max_stopped_share
        self._clock = clock
        self._send = send
        self._pids: set[int] = set()
        self._busy = 0
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self.stops = 0  # how many times a background process was stopped (for tests and figures)
        self.paused_seconds = 0.0
        self._stopped_at = 0.0
        # The stops that ended within the last window: (stopped at, continued at).
        self._spans: deque[tuple[float, float]] = deque()

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def attach(self, pid: int) -> None:
        """A background process that yields to resolution (stopped now if resolution is busy)."""
        self._pids.add(pid)
        if self._busy and self._stopped:
            self._send(pid, signal.SIGSTOP)
        elif self._busy:
            self._try_stop()

    def detach(self, pid: int) -> None:
        """The process is done (or about to be killed): continue it, forget it."""
        if pid in self._pids:
            self._pids.discard(pid)
            self._send(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def resolving(self) -> Iterator[None]:
        """Around a resolution: the first one in flight stops the background processes (within
        the budget), the last one out continues them."""
        self._busy += 1
        if self._busy == 1 and self._pids:
            self._try_stop()
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._cancel_timer()
                self._continue()

    def stopped_within(self, now: float) -> float:
        """Seconds the background processes were held stopped in the window ending `now`."""
        since = now - self.window_seconds
        while self._spans and self._spans[0][1] <= since:
            self._spans.popleft()
        total = sum(min(end, now) - max(begun, since) for begun, end in self._spans)
        if self._stopped:
            total += now - max(self._stopped_at, since)
        return total

    def _try_stop(self) -> None:
        self._cancel_timer()
        if self._stopped or not self._busy or not self._pids:
            return
        allowed = self.budget_seconds - self.stopped_within(self._clock())
        if allowed < MIN_STOP_SECONDS:  # the estimate's share of this window: it runs
            self._later(RETRY_SECONDS, self._try_stop)
            return
        for pid in self._pids:
            self._send(pid, signal.SIGSTOP)
        self._stopped = True
        self._stopped_at = self._clock()
        self.stops += 1
        self._later(allowed, self._budget_spent)

    def _budget_spent(self) -> None:
        """Resolution is still busy, but the estimate has been held stopped as long as it may."""
        self._timer = None
        self._continue()
        if self._busy:
            self._later(RETRY_SECONDS, self._try_stop)

    def _continue(self) -> None:
        if not self._stopped:
            return
        self._stopped = False
        now = self._clock()
        self._spans.append((self._stopped_at, now))
        self.paused_seconds += now - self._stopped_at
        for pid in self._pids:
            self._send(pid, signal.SIGCONT)

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        with contextlib.suppress(RuntimeError):  # no running loop: no bound on the stop
            self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
