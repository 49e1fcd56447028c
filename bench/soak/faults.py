"""The soak's faults: a schedule scaled to the run's length, and what each fault does.

| fault | what happens | back when |
| --- | --- | --- |
| broker | nats-server stopped (SIGTERM), left down `downtime` seconds, started on the same port and store | JetStream answers its health check |
| database | PostgreSQL stopped (`pg_ctl stop -m fast`: sessions cut, open transactions rolled back), left down `downtime` seconds, started | it accepts connections |
| kill | one service's process group SIGKILLed and started again (`python -m toex_<name> serve`, as a restarted pod) | its gRPC health answers SERVING |

The first part of the run (a quarter, at least a minute when there is room, at most five) has no fault:
it is the same mix without faults, measured in the same run, that throughput is compared with.
Then the faults come at even intervals, cycling broker, database, kill (the killed service
rotating through `KILL_ORDER`), one per `every` seconds (the issue's figure: one every five
minutes), at least three in any run; the last fault is over well before the traffic stops.

A fault's window runs from the moment it is injected until `grace` seconds after the component
is back: calls that fail inside a window are the fault's, calls that fail outside one are errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.soak.stack import SoakStack

KINDS = ("broker", "database", "kill")
KILL_ORDER = ("tasking", "comms", "entity", "pnd", "safeguarding")
BASELINE_SHARE = 0.25
MIN_BASELINE = 60.0
MAX_BASELINE = 300.0
TAIL_SHARE = 0.15  # the end of the traffic is fault-free too: the last recovery is measured


@dataclass(frozen=True)
class Fault:
    kind: str  # broker | database | kill
    target: str  # nats | postgres | a service's name
    at: float  # seconds after the traffic starts

    def describe(self) -> str:
        return {
            "broker": "restart nats-server",
            "database": "restart PostgreSQL",
            "kill": f"SIGKILL {self.target}, start it again",
        }[self.kind]


@dataclass
class Window:
    """A fault as it happened: monotonic times."""

    fault: Fault
    injected: float
    back: float  # the component is back (started, healthy)
    end: float  # back + grace: where the window closes
    note: str = ""

    @property
    def outage(self) -> float:
        return self.back - self.injected

    def covers(self, start: float, end: float) -> bool:
        """Whether [start, end] overlaps the window."""
        return start <= self.end and end >= self.injected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fault": asdict(self.fault)}


def schedule(
    seconds: float,
    *,
    every: float = 300.0,
    count: int | None = None,
    kill_order: tuple[str, ...] = KILL_ORDER,
) -> tuple[float, list[Fault]]:
    """(baseline seconds, the faults) for a run whose traffic lasts `seconds`."""
    baseline = max(min(seconds * BASELINE_SHARE, MAX_BASELINE), min(MIN_BASELINE, seconds / 3))
    usable = seconds * (1 - TAIL_SHARE) - baseline
    if count is None:
        count = max(len(KINDS), round(seconds / every))
    spacing = usable / count
    faults = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        target = {"broker": "nats", "database": "postgres"}.get(kind) or kill_order[
            (i // len(KINDS)) % len(kill_order)
        ]
        faults.append(Fault(kind, target, round(baseline + spacing * (i + 0.5), 1)))
    return baseline, faults


def inject(stack: SoakStack, fault: Fault, *, downtime: float, grace: float) -> Window:
    """Do `fault` to the stack now; returns once the component is back."""
    injected = time.monotonic()
    note = ""
    if fault.kind == "broker":
        stack.stop_nats()
        time.sleep(max(0.0, injected + downtime - time.monotonic()))
        stack.start_nats()
    elif fault.kind == "database":
        stack.stop_postgres()
        time.sleep(max(0.0, injected + downtime - time.monotonic()))
        stack.start_postgres()
    elif fault.kind == "kill":
        pid = stack.kill_service(fault.target)
        note = f"pid {pid} killed"
        stack.start_service(fault.target)
    else:
        raise ValueError(f"unknown fault {fault.kind}")
    back = time.monotonic()
    return Window(fault, injected, back, back + grace, note)


def run_schedule(
    stack: SoakStack,
    faults: list[Fault],
    *,
    traffic_start: float,
    downtime: float,
    grace: float,
    echo: Callable[[str], None] = print,
    aborted: Callable[[], bool] = lambda: False,
) -> list[Window]:
    """Inject each fault at its time (a fault never starts before the previous one's window
    has closed); returns the windows as they happened."""
    windows: list[Window] = []
    for fault in faults:
        due = traffic_start + fault.at
        if windows:
            due = max(due, windows[-1].end)
        while time.monotonic() < due:
            if aborted():
                return windows
            time.sleep(min(0.5, due - time.monotonic()))
        echo(f"  t={time.monotonic() - traffic_start:6.1f}s fault: {fault.describe()}")
        window = inject(stack, fault, downtime=downtime, grace=grace)
        echo(f"  t={time.monotonic() - traffic_start:6.1f}s back after {window.outage:.1f} s")
        windows.append(window)
    return windows
