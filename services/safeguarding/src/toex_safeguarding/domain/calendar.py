"""Working days in England and Wales: weekends and bank holidays (with substitute days) off.

Bank holidays come from the `holidays` package (GB, subdivision ENG or WLS), which follows the
published proclamations including substitute days and one-off holidays, so no hand-typed list
goes stale. Days are counted in UK local time (Europe/London), whatever the server's zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from toex_kernel.regions import Region

LONDON = ZoneInfo("Europe/London")


class WorkingCalendar:
    def __init__(self, subdivision: str = "ENG") -> None:
        self.subdivision = subdivision
        self._holidays = holidays.country_holidays("GB", subdiv=subdivision)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._holidays

    def holiday_name(self, day: date) -> str | None:
        name = self._holidays.get(day)
        return str(name) if name else None

    def add_working_days(self, day: date, count: int) -> date:
        """The `count`th working day after `day` (`day` itself never counts)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        current = day
        remaining = count
        while remaining:
            current += timedelta(days=1)
            if self.is_working_day(current):
                remaining -= 1
        return current

    def deadline(self, start: datetime, working_days: int) -> datetime:
        """End of the `working_days`th working day after the (local) day of `start`: the midnight
        that ends it, in UTC. Received on Thursday before Easter, 1 working day ends Tuesday night."""
        local_day = start.astimezone(LONDON).date()
        due_day = self.add_working_days(local_day, working_days)
        return datetime.combine(due_day + timedelta(days=1), time(0), LONDON).astimezone(UTC)

    def working_days_late(self, due: datetime, now: datetime) -> int:
        """Whole working days that have ended since `due` (0 if not yet due or due today)."""
        if now <= due:
            return 0
        day = due.astimezone(LONDON).date()
        last = now.astimezone(LONDON).date()
        count = 0
        while day < last:
            if self.is_working_day(day):
                count += 1
            day += timedelta(days=1)
        return count


@lru_cache(maxsize=4)
def calendar(subdivision: str) -> WorkingCalendar:
    return WorkingCalendar(subdivision)


def calendar_for(region: Region) -> WorkingCalendar:
    """Wales (TARIAN) uses the Welsh calendar, every other ROCU the English one. They coincide
    today; keeping both means a Welsh-only bank holiday would be honoured."""
    return calendar("WLS" if region is Region.TARIAN else "ENG")
