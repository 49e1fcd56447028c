"""Background work on the event loop that gives way often enough: a task doing CPU work that
the task it serves does not wait for (mapping events, validating the next records) lets the
loop run whenever it has worked for a slice, so the served task goes on as soon as its answer
from the database is in, and the background work fills the time that task would spend waiting.

Giving way after a fixed number of items makes the slice as long as the items are slow; giving
way on a clock keeps it near `slice_seconds` whatever they cost, and costs a clock read per
item (tens of nanoseconds) instead of a loop turn per few items."""

from __future__ import annotations

import asyncio
import time

# Half a millisecond: the longest a served task waits for the loop once its answer is in.
SLICE_SECONDS = 0.0005


class Pacer:
    def __init__(self, slice_seconds: float = SLICE_SECONDS) -> None:
        self.slice_seconds = slice_seconds
        self._since = time.perf_counter()

    async def give_way(self) -> None:
        """Let the loop run other tasks if this one has worked for a slice since it last did."""
        now = time.perf_counter()
        if now - self._since >= self.slice_seconds:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
