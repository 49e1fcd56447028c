"""The read model's records: what they keep of their events, in any order and told any number of
times, and what they count for."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from toex_kernel.regions import Region
from toex_oversight.domain.model import (
    ClockRecord,
    DeadlineKind,
    Figure,
    JobFacts,
    JobRecord,
    Key,
    ReferralFacts,
    ReferralRecord,
    day_of,
    difference,
)
from toex_oversight.domain.overview import Grain, Span, spans

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB = "regions/EMSOU/jobs/j1"


def lifecycle() -> list[JobFacts]:
    """A job of EMSOU worked by a LONDON researcher: raised, assigned, started, due time moved,
    delivered late, closed, rated."""
    return [
        JobFacts(JOB, Region.EMSOU, 1, "ANPR", "RAISED", "ROUTINE", T0 + timedelta(days=2), created_at=T0),
        JobFacts(JOB, Region.EMSOU, 2, "ANPR", "ASSIGNED", taken_by=frozenset({Region.LONDON})),
        JobFacts(JOB, Region.EMSOU, 3, "ANPR", "IN_PROGRESS", taken_by=frozenset({Region.LONDON})),
        JobFacts(JOB, Region.EMSOU, 4, "", "IN_PROGRESS", "URGENT", T0 + timedelta(days=3)),
        JobFacts(
            JOB,
            Region.EMSOU,
            5,
            "ANPR",
            "DELIVERED",
            delivered_at=T0 + timedelta(days=4),
            taken_by=frozenset({Region.LONDON}),
        ),
        JobFacts(JOB, Region.EMSOU, 6, "ANPR", "CLOSED"),
        JobFacts(JOB, Region.EMSOU, rating=4, rated_at=T0 + timedelta(days=5)),
    ]


def merged(facts: list[JobFacts]) -> JobRecord:
    record = JobRecord(JOB, Region.EMSOU)
    for fact in facts:
        record = record.merge(fact)
    return record


def test_a_job_ends_the_same_whatever_order_its_events_arrive_in() -> None:
    facts = lifecycle()
    expected = merged(facts)
    assert expected.state == "CLOSED" and expected.priority == "URGENT"
    assert expected.due_at == T0 + timedelta(days=3) and expected.taken_by == {"LONDON"}
    assert (expected.rating, expected.delivered_at) == (4, T0 + timedelta(days=4))
    for order in itertools.permutations(facts):
        assert merged(list(order)) == expected


def test_a_job_told_twice_ends_the_same() -> None:
    facts = lifecycle()
    rng = random.Random(15)
    for _ in range(200):
        repeated = facts + rng.choices(facts, k=5)
        rng.shuffle(repeated)
        assert merged(repeated) == merged(facts)


def test_facts_told_again_hand_back_the_same_record() -> None:
    # The projection skips a record whose merge is the record itself: nothing to count again.
    job = merged(lifecycle())
    assert all(job.merge(fact) is job for fact in lifecycle())
    referral = merged_referral(referral_events())
    assert all(referral.merge(fact) is referral for fact in referral_events())
    assert JobRecord(JOB, Region.EMSOU).merge(lifecycle()[0]) != JobRecord(JOB, Region.EMSOU)


def test_what_a_job_counts_for() -> None:
    record = merged(lifecycle())
    day = day_of(T0)

    def key(figure: Figure, value: str) -> Key:
        return Key(day, "EMSOU", "", figure.value, value)

    assert record.contributions() == Counter(
        {
            key(Figure.JOB_STATE, "CLOSED"): 1,
            key(Figure.JOB_TYPE, "ANPR"): 1,
            key(Figure.JOB_PRIORITY, "URGENT"): 1,
            # Delivered on day 4, due on day 3 (moved from day 2 by the update).
            key(Figure.JOB_DELIVERY, "LATE"): 1,
            key(Figure.JOB_TAKEN, ""): 1,
            key(Figure.JOB_TAKEN_BY, "LONDON"): 1,
            key(Figure.JOB_RATING, "4"): 1,
        }
    )
    assert record.deadlines() == []


def test_a_job_without_its_creation_counts_for_nothing_until_it_arrives() -> None:
    later = merged(lifecycle()[1:])
    assert later.state == "CLOSED" and not later.placed
    assert later.contributions() == Counter() and later.deadlines() == []
    placed = later.merge(lifecycle()[0])
    assert placed.contributions() == merged(lifecycle()).contributions()


def test_an_open_job_is_a_deadline_of_the_day_it_was_raised() -> None:
    record = merged(lifecycle()[:3])
    [deadline] = record.deadlines()
    assert (deadline.kind, deadline.item, deadline.cohort, deadline.due_at) == (
        DeadlineKind.JOB,
        JOB,
        day_of(T0),
        T0 + timedelta(days=2),
    )
    assert merged(lifecycle()[:5]).deadlines() == []  # delivered: no longer open


def test_delivered_by_the_due_time_is_on_time() -> None:
    record = merged(lifecycle()[:3]).merge(
        JobFacts(JOB, Region.EMSOU, 5, "ANPR", "DELIVERED", delivered_at=T0 + timedelta(days=1))
    )
    assert Key(day_of(T0), "EMSOU", "", Figure.JOB_DELIVERY.value, "ON_TIME") in record.contributions()


def test_a_researcher_of_the_jobs_own_region_is_no_other_region() -> None:
    record = JobRecord(JOB, Region.EMSOU).merge(
        JobFacts(JOB, Region.EMSOU, 1, "ANPR", "ASSIGNED", taken_by=frozenset({Region.EMSOU}), created_at=T0)
    )
    assert record.taken_by == frozenset()
    assert not any(k.figure.startswith("jobs.taken") for k in record.contributions())


def test_facts_of_another_job_are_refused() -> None:
    with pytest.raises(ValueError):
        JobRecord(JOB, Region.EMSOU).merge(JobFacts("regions/EMSOU/jobs/other", Region.EMSOU, 1))


def test_difference_moves_counts_from_old_to_new() -> None:
    a = Key(date(2026, 3, 2), "EMSOU", "", "jobs.state", "RAISED")
    b = Key(date(2026, 3, 2), "EMSOU", "", "jobs.state", "ASSIGNED")
    c = Key(date(2026, 3, 2), "EMSOU", "", "jobs.type", "ANPR")
    assert difference(Counter({b: 1, c: 1}), Counter({a: 1, c: 1})) == {a: -1, b: 1}
    assert difference(Counter({c: 1}), Counter({c: 1})) == {}


# --- referrals -------------------------------------------------------------------------------------

REFERRAL = "regions/EMSOU/referrals/r1"


def referral_events() -> list[ReferralFacts]:
    return [
        ReferralFacts(REFERRAL, Region.EMSOU, T0, "e1", "DRAFT", drafted=True),
        ReferralFacts(REFERRAL, Region.EMSOU, T0 + timedelta(hours=1), "e2", "APPROVED"),
        ReferralFacts(
            REFERRAL,
            Region.EMSOU,
            T0 + timedelta(hours=2),
            "e3",
            "SUBMITTED",
            clock=ClockRecord("CHILDRENS_SOCIAL_CARE", due_at=T0 + timedelta(days=1)),
        ),
        ReferralFacts(
            REFERRAL,
            Region.EMSOU,
            T0 + timedelta(hours=3),
            "e4",
            "SUBMITTED",
            clock=ClockRecord("NRM", due_at=T0 + timedelta(days=5)),
        ),
        ReferralFacts(
            REFERRAL,
            Region.EMSOU,
            T0 + timedelta(days=2),
            "e5",
            "DECIDED",
            clock=ClockRecord("CHILDRENS_SOCIAL_CARE", met_at=T0 + timedelta(days=2)),
        ),
    ]


def merged_referral(facts: list[ReferralFacts]) -> ReferralRecord:
    record = ReferralRecord(REFERRAL, Region.EMSOU)
    for fact in facts:
        record = record.merge(fact)
    return record


def test_a_referral_ends_the_same_whatever_order_its_events_arrive_in() -> None:
    facts = referral_events()
    expected = merged_referral(facts)
    assert expected.state == "DECIDED" and expected.drafted_at == T0
    for order in itertools.permutations(facts + facts[:2]):
        assert merged_referral(list(order)) == expected


def test_what_a_referral_counts_for_and_its_running_clock() -> None:
    record = merged_referral(referral_events())
    day = day_of(T0)
    assert record.contributions() == Counter(
        {
            Key(day, "EMSOU", "", "referrals.state", "DECIDED"): 1,
            # The local authority decided a day after its one working day.
            Key(day, "EMSOU", "", "referrals.clock", "MET_LATE"): 1,
        }
    )
    [running] = record.deadlines()
    assert (running.kind, running.part, running.due_at) == (DeadlineKind.CLOCK, "NRM", T0 + timedelta(days=5))


def test_a_decision_before_its_submission_event_still_meets_the_clock() -> None:
    facts = referral_events()
    record = merged_referral([facts[0], facts[4], facts[2]])
    clock = next(c for c in record.clocks if c.destination == "CHILDRENS_SOCIAL_CARE")
    assert clock.due_at is not None and clock.met_at is not None


# --- periods ------------------------------------------------------------------------------------


def days_of(found: list[Span]) -> list[date]:
    covered = []
    for span in found:
        if span.grain is Grain.DAY:
            covered += [span.first + timedelta(days=i) for i in range((span.last - span.first).days + 1)]
        else:
            month = span.first
            while month <= span.last:
                following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
                covered += [month + timedelta(days=i) for i in range((following - month).days)]
                month = following
    return sorted(covered)


def test_spans_cover_exactly_the_days_asked_for() -> None:
    rng = random.Random(7)
    for _ in range(500):
        first = date(2025, 1, 1) + timedelta(days=rng.randrange(800))
        last = first + timedelta(days=rng.randrange(500))
        found = spans(first, last)
        assert days_of(found) == [first + timedelta(days=i) for i in range((last - first).days + 1)]
        assert len(found) <= 3
        assert sum(1 for s in found if s.grain is Grain.DAY) <= 2


def test_whole_months_are_read_as_months() -> None:
    assert spans(date(2026, 1, 1), date(2026, 3, 31)) == [
        Span(Grain.MONTH, date(2026, 1, 1), date(2026, 3, 1))
    ]
    assert spans(date(2026, 2, 10), date(2026, 2, 12)) == [
        Span(Grain.DAY, date(2026, 2, 10), date(2026, 2, 12))
    ]
    assert spans(date(2026, 2, 12), date(2026, 2, 10)) == []


def test_days_are_london_days() -> None:
    # 23:30 UTC on 30 June is 00:30 on 1 July in London (summer time).
    assert day_of(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == date(2026, 7, 1)
    assert day_of(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == date(2026, 12, 31)
