"""The person sample kept as records are written (domain/sample.py): bounded, uniform, exactly
the records with the smallest keys; and kept by the repository call that stores the records."""

from __future__ import annotations

import random

import pytest
from scipy.stats import chisquare
from toex_entity import synthetic
from toex_entity.domain import commands
from toex_entity.domain.records import Grading, Handling, PhoneData, RecordType
from toex_entity.domain.sample import TRIM_MARGIN, BottomK, over_bound
from toex_entity.service_layer import handlers
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork

ACTOR = Principal("svc", "svc", Region.NATIONAL, frozenset({Role.SERVICE}))


def test_the_sample_never_holds_more_than_the_cap_and_its_margin_and_is_the_smallest_keys() -> None:
    rng = random.Random(11)
    kept = BottomK(cap=1_000)
    drawn: dict[str, float] = {}
    largest = 0
    for i in range(30_000):
        key = rng.random()
        drawn[f"r{i}"] = key
        kept.offer(f"r{i}", key)
        largest = max(largest, len(kept.keys))
    assert largest <= 1_000 + int(1_000 * TRIM_MARGIN)
    # Whatever the trims, the sample read is exactly the 1,000 records with the smallest keys.
    assert kept.sample() == sorted(drawn, key=drawn.__getitem__)[:1_000]
    assert kept.sample(10) == kept.sample()[:10]
    # Every record kept is under the threshold or was the largest key kept at the last trim.
    assert all(k <= kept.threshold for k in kept.keys.values())
    assert kept.threshold < 1_000 / 30_000 * 1.2


def test_every_record_stands_the_same_chance_whenever_it_was_stored() -> None:
    # 200 records stored in order, a sample of 20, many times: how often each arrival position
    # is sampled. Early and late records must be equally likely (an order-biased rule, such as
    # keeping the first or the last, fails this by far).
    rng = random.Random(2026)
    trials, n, cap = 3_000, 200, 20
    counts = [0] * n
    for _ in range(trials):
        kept = BottomK(cap=cap)
        kept.offer_all((str(i) for i in range(n)), rng)
        for record in kept.sample():
            counts[int(record)] += 1
    bins = [sum(counts[i : i + 10]) for i in range(0, n, 10)]  # 20 bins of 10 positions
    assert sum(bins) == trials * cap
    assert chisquare(bins).pvalue > 0.001
    first, last = sum(counts[: n // 2]), sum(counts[n // 2 :])
    assert abs(first - last) / (trials * cap) < 0.03


def test_a_record_removed_from_the_store_leaves_the_sample() -> None:
    kept = BottomK(cap=5)
    kept.offer("a", 0.1)
    kept.offer("b", 0.2)
    kept.remove("a")
    assert kept.sample() == ["b"]


def test_the_bound_leaves_a_margin_before_a_trim() -> None:
    assert not over_bound(110, 100)
    assert over_bound(111, 100)
    assert over_bound(3, 1)
    with pytest.raises(ValueError, match="at least 1"):
        BottomK(cap=0)


async def test_records_resolved_are_offered_to_the_sample_by_the_call_that_stores_them() -> None:
    repo = FakeRepository()
    repo.sample = BottomK(cap=50)
    deps = handlers.Deps(uow=lambda: FakeUnitOfWork(repo))  # type: ignore[arg-type,return-value]
    people = [
        commands.IncomingRecord(
            Region.EMSOU, "niche", g.record_id, RecordType.PERSON, Grading(2, "B", Handling.P), g.person
        )
        for g in synthetic.generate(400, seed=3)
    ]
    phone = commands.IncomingRecord(
        Region.EMSOU, "niche", "p1", RecordType.PHONE, Grading(2, "B", Handling.P), PhoneData("07700 900123")
    )
    await handlers.resolve_records(commands.ResolveRecords(ACTOR, [*people, phone], single=False), deps)
    sampled = repo.sample.sample()
    persons = {r.id for r in repo.records.values() if r.features is not None}
    assert len(persons) == 400
    assert len(sampled) == 50 and set(sampled) <= persons  # bounded, persons only
    rows = await repo.person_features_sample(100)
    assert [r for r, _ in rows] == sampled and all(f == repo.records[r].features for r, f in rows)
