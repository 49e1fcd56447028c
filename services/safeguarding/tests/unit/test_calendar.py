"""Working-day clocks across England and Wales bank holidays, with answers checked by hand
against the published bank holiday lists."""

from datetime import UTC, date, datetime

import pytest
from toex_kernel.regions import Region
from toex_safeguarding.domain.calendar import LONDON, calendar, calendar_for

ENG = calendar("ENG")


def local(y: int, m: int, d: int, h: int = 10) -> datetime:
    return datetime(y, m, d, h, tzinfo=LONDON)


@pytest.mark.parametrize(
    ("start", "days", "due_day"),
    [
        # An ordinary week: Monday + 1 = Tuesday; Friday + 1 = Monday.
        (date(2025, 3, 3), 1, date(2025, 3, 4)),
        (date(2025, 3, 7), 1, date(2025, 3, 10)),
        # Easter 2025: Good Friday 18 April, Easter Monday 21 April.
        (date(2025, 4, 17), 1, date(2025, 4, 22)),
        (date(2025, 4, 17), 5, date(2025, 4, 28)),
        # A referral received on Good Friday itself.
        (date(2025, 4, 18), 1, date(2025, 4, 22)),
        # Christmas 2025: Thursday 25 and Friday 26 December; New Year's Day Thursday.
        (date(2025, 12, 22), 5, date(2025, 12, 31)),
        (date(2025, 12, 24), 5, date(2026, 1, 5)),
        # Christmas 2021 fell on a weekend: substitute days Monday 27 and Tuesday 28 December,
        # and New Year's Day 2022 (Saturday) was substituted on Monday 3 January.
        (date(2021, 12, 24), 1, date(2021, 12, 29)),
        (date(2021, 12, 23), 5, date(2022, 1, 4)),
    ],
)
def test_working_days_skip_weekends_and_bank_holidays(start: date, days: int, due_day: date) -> None:
    assert ENG.add_working_days(start, days) == due_day


def test_deadline_is_the_end_of_the_due_day_in_uk_time() -> None:
    # Thursday before Easter 2025 at 16:00 BST: 1 working day ends at midnight Tuesday night.
    due = ENG.deadline(local(2025, 4, 17, 16), 1)
    assert due == datetime(2025, 4, 23, 0, 0, tzinfo=LONDON)
    assert due.tzinfo is UTC and due == datetime(2025, 4, 22, 23, 0, tzinfo=UTC)
    # 23:30 UTC on Friday 24 Jan 2025 is still Friday in London (GMT): due end of Monday.
    assert ENG.deadline(datetime(2025, 1, 24, 23, 30, tzinfo=UTC), 1) == datetime(
        2025, 1, 28, 0, 0, tzinfo=LONDON
    )
    # 23:30 UTC on Thursday 22 May 2025 is already Friday 00:30 in London (BST), and Monday
    # 26 May is the Spring Bank Holiday: due at the end of Tuesday 27 May.
    assert ENG.deadline(datetime(2025, 5, 22, 23, 30, tzinfo=UTC), 1) == datetime(
        2025, 5, 28, 0, 0, tzinfo=LONDON
    )


def test_one_off_bank_holidays_are_honoured() -> None:
    # The State Funeral of Queen Elizabeth II, Monday 19 September 2022.
    assert not ENG.is_working_day(date(2022, 9, 19))
    assert ENG.add_working_days(date(2022, 9, 16), 1) == date(2022, 9, 20)


def test_working_days_late_counts_only_working_days() -> None:
    due = ENG.deadline(local(2025, 4, 16), 1)  # end of Thursday 17 April
    assert ENG.working_days_late(due, local(2025, 4, 17, 12)) == 0
    # Good Friday and Easter Monday do not count as days late.
    assert ENG.working_days_late(due, local(2025, 4, 22, 12)) == 0
    assert ENG.working_days_late(due, local(2025, 4, 23, 12)) == 1


def test_wales_uses_the_welsh_calendar() -> None:
    assert calendar_for(Region.TARIAN).subdivision == "WLS"
    assert calendar_for(Region.EMSOU).subdivision == "ENG"
    assert calendar_for(Region.TARIAN).add_working_days(date(2025, 12, 24), 1) == date(2025, 12, 29)
