"""The overview: a period of days, the counters summed over it, and the figures per region.

Counters are kept per day and per month (`Grain`), so a period of any length is summed from at
most two months' worth of days and one row per whole month in between (`spans`): the answer's
cost grows with the months asked for, never with the jobs counted.
"""

from __future__ import annotations

import calendar
import enum
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from toex_kernel.regions import Region

from toex_oversight.domain.model import (
    LATE,
    MET_LATE,
    MET_ON_TIME,
    ON_TIME,
    OPEN_JOB_STATES,
    DeadlineKind,
    Figure,
    Reconciliation,
)

# Regions in the order of the Region enum (the API's order).
REGION_ORDER = {region: position for position, region in enumerate(Region)}
# Where a period with no first day starts: before anything could have been counted.
EARLIEST_DAY = date(1970, 1, 1)


class Grain(enum.StrEnum):
    DAY = "D"
    MONTH = "M"


def month_of(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


@dataclass(frozen=True)
class Span:
    """Buckets of one grain, `first` to `last` inclusive (a month bucket is its first day)."""

    grain: Grain
    first: date
    last: date


def spans(first: date, last: date) -> list[Span]:
    """The fewest buckets that make up the days `first`..`last`: the days of a partial first
    and last month, the months in between whole."""
    if last < first:
        return []
    if month_of(first) == month_of(last):
        if first.day == 1 and last == month_end(last):
            return [Span(Grain.MONTH, month_of(first), month_of(first))]
        return [Span(Grain.DAY, first, last)]
    found: list[Span] = []
    whole_from, whole_to = month_of(first), month_of(last)
    if first.day != 1:
        found.append(Span(Grain.DAY, first, month_end(first)))
        whole_from = month_of(month_end(first) + timedelta(days=1))
    if last != month_end(last):
        found.append(Span(Grain.DAY, month_of(last), last))
        whole_to = month_of(month_of(last) - timedelta(days=1))
    if whole_from <= whole_to:
        found.append(Span(Grain.MONTH, whole_from, whole_to))
    return found


@dataclass(frozen=True)
class Period:
    first: date
    last: date

    @property
    def spans(self) -> list[Span]:
        return spans(self.first, self.last)


@dataclass(frozen=True)
class OverviewQuery:
    """What the counters are summed over: the regions answered (in the API's order), the
    days, and a requesting force ("" for every job)."""

    regions: tuple[Region, ...]
    period: Period
    force: str
    now: datetime
    # With no first day asked for: from the first day counted.
    open_start: bool = False


@dataclass
class Tallies:
    """The read model's sums for a query, as the repository reads them."""

    # (region, figure, value) -> count, over the period (rows of the regions answered, and the
    # `jobs.taken_by` rows naming one of them, whatever region's jobs they count).
    counts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # (region, deadline kind) -> (due, overdue) now, of work raised in the period.
    deadlines: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    reconciliations: Mapping[str, Reconciliation] = field(default_factory=dict)
    # region -> (events counted, newest event's time)
    activity: Mapping[str, tuple[int, datetime | None]] = field(default_factory=dict)
    # With a force asked for: the period's jobs that name no force (they cannot be counted under one).
    jobs_without_force: int = 0
    # The first day anything was counted, when the period asked for no first day.
    first_counted: date | None = None


@dataclass
class JobSummary:
    raised: int = 0
    states: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    priorities: Counter[str] = field(default_factory=Counter)
    overdue: int = 0
    delivered_on_time: int = 0
    delivered_late: int = 0
    taken_by_other_regions: int = 0
    taken_by: Counter[Region] = field(default_factory=Counter)
    taken_for_other_regions: int = 0
    ratings: Counter[int] = field(default_factory=Counter)
    commented: int = 0
    # By threat category's short code (`cce`).
    threats: Counter[str] = field(default_factory=Counter)

    @property
    def open(self) -> int:
        return sum(self.states[s] for s in OPEN_JOB_STATES)

    @property
    def rated(self) -> int:
        return sum(self.ratings.values())

    @property
    def mean_rating(self) -> float:
        return sum(r * n for r, n in self.ratings.items()) / self.rated if self.rated else 0.0

    def add(self, other: JobSummary) -> None:
        self.raised += other.raised
        self.states.update(other.states)
        self.types.update(other.types)
        self.priorities.update(other.priorities)
        self.overdue += other.overdue
        self.delivered_on_time += other.delivered_on_time
        self.delivered_late += other.delivered_late
        self.taken_by_other_regions += other.taken_by_other_regions
        self.taken_by.update(other.taken_by)
        self.taken_for_other_regions += other.taken_for_other_regions
        self.ratings.update(other.ratings)
        self.commented += other.commented
        self.threats.update(other.threats)


@dataclass
class ReferralSummary:
    drafted: int = 0
    states: Counter[str] = field(default_factory=Counter)
    met_on_time: int = 0
    met_late: int = 0
    due: int = 0
    overdue: int = 0

    def add(self, other: ReferralSummary) -> None:
        self.drafted += other.drafted
        self.states.update(other.states)
        self.met_on_time += other.met_on_time
        self.met_late += other.met_late
        self.due += other.due
        self.overdue += other.overdue


@dataclass
class PndSummary:
    accepted: int = 0
    rejected: int = 0
    conflicts: int = 0
    reconciliation: Reconciliation | None = None

    def add(self, other: PndSummary) -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.conflicts += other.conflicts
        theirs = other.reconciliation
        if theirs is None:
            return
        mine = self.reconciliation
        if mine is None:
            self.reconciliation = theirs
            return
        # The total's: the sums of the regions' newest, as old as the oldest of them.
        self.reconciliation = Reconciliation(
            mine.region,
            min(mine.completed_at, theirs.completed_at),
            "",
            mine.local_records + theirs.local_records,
            mine.in_sync + theirs.in_sync,
            mine.held + theirs.held,
            mine.stale + theirs.stale,
            mine.missing + theirs.missing,
            mine.rejected + theirs.rejected,
            mine.conflict + theirs.conflict,
        )


@dataclass
class DeconflictionSummary:
    with_regions: Counter[Region] = field(default_factory=Counter)

    @property
    def notices(self) -> int:
        return sum(self.with_regions.values())

    def add(self, other: DeconflictionSummary) -> None:
        self.with_regions.update(other.with_regions)


@dataclass
class RegionSummary:
    region: Region | None
    jobs: JobSummary = field(default_factory=JobSummary)
    referrals: ReferralSummary = field(default_factory=ReferralSummary)
    pnd: PndSummary = field(default_factory=PndSummary)
    deconfliction: DeconflictionSummary = field(default_factory=DeconflictionSummary)
    latest_event_at: datetime | None = None
    events_counted: int = 0

    def add(self, other: RegionSummary) -> None:
        self.jobs.add(other.jobs)
        self.referrals.add(other.referrals)
        self.pnd.add(other.pnd)
        self.deconfliction.add(other.deconfliction)
        self.events_counted += other.events_counted
        if other.latest_event_at is not None and (
            self.latest_event_at is None or other.latest_event_at > self.latest_event_at
        ):
            self.latest_event_at = other.latest_event_at


@dataclass
class Overview:
    period: Period
    read_at: datetime
    regions: list[RegionSummary]
    total: RegionSummary
    force: str = ""
    notes: list[str] = field(default_factory=list)


FORCE_LEAVES_OUT = (
    "with a requesting force, only jobs are counted: referrals, PND answers and deconfliction "
    "notices name no force"
)


def _region(value: str) -> Region | None:
    try:
        return Region(value)
    except ValueError:
        return None


def build_overview(query: OverviewQuery, tallies: Tallies) -> Overview:
    """The figures of each region of `query` from the read model's sums."""
    summaries = {region: RegionSummary(region) for region in query.regions}
    for (region_code, figure, value), count in tallies.counts.items():
        region = _region(region_code)
        summary = summaries.get(region) if region else None
        if figure == Figure.JOB_TAKEN_BY.value:
            taker = _region(value)
            if taker is not None and taker in summaries:
                summaries[taker].jobs.taken_for_other_regions += count
        if summary is not None:
            _count(summary, figure, value, count)
    for (region_code, kind), (due, overdue) in tallies.deadlines.items():
        summary = summaries.get(_region(region_code))  # type: ignore[arg-type]
        if summary is None:
            continue
        if kind == DeadlineKind.JOB.value:
            summary.jobs.overdue += overdue
        else:
            summary.referrals.due += due
            summary.referrals.overdue += overdue
    for region_code, reconciliation in tallies.reconciliations.items():
        summary = summaries.get(_region(region_code))  # type: ignore[arg-type]
        if summary is not None:
            summary.pnd.reconciliation = reconciliation
    for region_code, (events, latest) in tallies.activity.items():
        summary = summaries.get(_region(region_code))  # type: ignore[arg-type]
        if summary is not None:
            summary.events_counted, summary.latest_event_at = events, latest
    total = RegionSummary(None)
    for summary in summaries.values():
        total.add(summary)
    period = query.period
    if query.open_start:
        period = Period(min(tallies.first_counted or period.last, period.last), period.last)
    notes: list[str] = []
    if query.force:
        notes.append(FORCE_LEAVES_OUT)
        if tallies.jobs_without_force:
            notes.append(
                f"{tallies.jobs_without_force} jobs raised in the period name no requesting force "
                "and are counted under none"
            )
    return Overview(period, query.now, list(summaries.values()), total, query.force, notes)


def _count(summary: RegionSummary, figure: str, value: str, count: int) -> None:
    jobs, referrals = summary.jobs, summary.referrals
    if figure == Figure.JOB_STATE.value:
        jobs.raised += count
        jobs.states[value] += count
    elif figure == Figure.JOB_TYPE.value:
        jobs.types[value] += count
    elif figure == Figure.JOB_PRIORITY.value:
        jobs.priorities[value] += count
    elif figure == Figure.JOB_DELIVERY.value:
        if value == ON_TIME:
            jobs.delivered_on_time += count
        elif value == LATE:
            jobs.delivered_late += count
    elif figure == Figure.JOB_TAKEN.value:
        jobs.taken_by_other_regions += count
    elif figure == Figure.JOB_TAKEN_BY.value:
        taker = _region(value)
        if taker is not None:
            jobs.taken_by[taker] += count
    elif figure == Figure.JOB_RATING.value and value.isdigit():
        jobs.ratings[int(value)] += count
    elif figure == Figure.JOB_COMMENTED.value:
        jobs.commented += count
    elif figure == Figure.JOB_THREAT.value:
        jobs.threats[value] += count
    elif figure == Figure.REFERRAL_STATE.value:
        referrals.drafted += count
        referrals.states[value] += count
    elif figure == Figure.REFERRAL_CLOCK.value:
        if value == MET_ON_TIME:
            referrals.met_on_time += count
        elif value == MET_LATE:
            referrals.met_late += count
    elif figure == Figure.PND_RESULT.value:
        if value == "ACCEPTED":
            summary.pnd.accepted += count
        elif value == "REJECTED":
            summary.pnd.rejected += count
        elif value == "CONFLICT":
            summary.pnd.conflicts += count
    elif figure == Figure.DECONFLICTION.value:
        other = _region(value)
        if other is not None:
            summary.deconfliction.with_regions[other] += count


def ordered(regions: Iterable[Region]) -> tuple[Region, ...]:
    return tuple(sorted(set(regions), key=REGION_ORDER.__getitem__))


def sum_counts(rows: Sequence[tuple[str, str, str, int]]) -> dict[tuple[str, str, str], int]:
    summed: dict[tuple[str, str, str], int] = defaultdict(int)
    for region, figure, value, count in rows:
        summed[(region, figure, value)] += count
    return dict(summed)
