"""What the service is asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from toex_kernel.principal import Principal
from toex_kernel.regions import Region


@dataclass(frozen=True)
class GetOverview:
    actor: Principal
    # Regions asked for; empty: every region the actor may see.
    regions: frozenset[Region]
    # None: the first day counted, and today.
    first_day: date | None
    last_day: date | None
    # A requesting force's code; "" for every job.
    force: str
