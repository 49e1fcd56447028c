"""Resolution before learning: a background process is stopped while a resolution is in flight
and continued after, and never kept stopped longer than the bound (a real child process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from toex_entity.service_layer.foreground import Foreground


def state(pid: int) -> str:
    """The process's state letter in /proc (R running, S sleeping, T stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def settle(pid: int, want: set[str], timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while state(pid) not in want and time.monotonic() < deadline:
        time.sleep(0.005)
    return state(pid)


@pytest.fixture
def busy_child() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


async def test_a_resolution_in_flight_stops_the_background_process_and_the_last_one_continues_it(
    busy_child: int,
) -> None:
    foreground = Foreground()
    foreground.attach(busy_child)
    assert settle(busy_child, {"R"}) == "R"
    with foreground.resolving():
        assert settle(busy_child, {"T"}) == "T"
        with foreground.resolving():  # a second one at once: still stopped
            assert state(busy_child) == "T"
        assert state(busy_child) == "T"  # one still in flight
    assert settle(busy_child, {"R"}) == "R"
    assert foreground.stops == 1 and foreground.paused_seconds > 0


async def test_never_stopped_longer_than_the_bound_while_resolution_stays_busy(busy_child: int) -> None:
    foreground = Foreground(max_pause_seconds=0.2)
    foreground.attach(busy_child)
    with foreground.resolving():
        assert settle(busy_child, {"T"}) == "T"
        await asyncio.sleep(0.4)
        assert settle(busy_child, {"R"}) == "R"  # released by the bound, resolution still busy
    assert state(busy_child) == "R"
    with foreground.resolving():  # idle and busy again: stopped again
        assert settle(busy_child, {"T"}) == "T"
    assert foreground.stops == 2


async def test_a_detached_process_is_continued_and_left_alone(busy_child: int) -> None:
    foreground = Foreground()
    foreground.attach(busy_child)
    with foreground.resolving():
        assert settle(busy_child, {"T"}) == "T"
        foreground.detach(busy_child)
        assert settle(busy_child, {"R"}) == "R"
    with foreground.resolving():
        await asyncio.sleep(0.05)
        assert state(busy_child) == "R"
