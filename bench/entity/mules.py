"""Money mule analysis over a region (issue 18.5).

Seeds the entity tables directly (COPY: person source records, their attributes, relations) with
N persons and about 2N relations in one region, with R planted mule rings among them, then runs
the service's analysis path (service_layer.mules.analyse_region: the relations and attributes
read from PostgreSQL, analysed in Python) and, as the baseline in the same run, the bare read of
the region's relations (what any analysis must at least do). A and B alternate, `--rounds`
times each, because the machine is shared.

    python -m bench.entity.mules [--persons N] [--rings R] [--rounds K]

Default: 1,000,000 persons (about 2,000,000 relations), 200 rings, 3 rounds.

Background population, each person: lives at one of N/2.5 addresses (1.0 relation); holds an
account with probability 0.55, opened on a random day of 2020-2025 (0.55); uses one phone with
probability 0.4, their own number or (5%) another person's (0.4);
associated with a random person with probability 0.05 (0.05). A ring: a controller (no
account) associated with 6 students (student visa recorded), who live at 2 addresses, hold 1-3
accounts opened within 60 days, and 3 of whom use the controller's phone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_devstack.postgres import Postgres
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.relations import SqlRelationRepository
from toex_entity.domain.mules import MuleReport
from toex_entity.service_layer.mules import analyse_region

from bench.common import machine, write_results

REGION = "EMSOU"
RING_SIZE = 6


def _id(n: int, kind: str) -> str:
    return f"{kind}{n:031d}"[:32]


def generate(persons: int, rings: int, seed: int = 2026) -> tuple[list[tuple], list[tuple], list[str]]:
    """(relations rows, attribute rows as (record id, student, visa), ring controllers)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    relations: list[tuple] = []
    attributes: list[tuple] = []
    rel_no = 0

    def rel(kind: str, subject: str, target: str, opened: date | None = None) -> None:
        nonlocal rel_no
        rel_no += 1
        relations.append(
            (
                _id(rel_no, "r"),
                REGION,
                kind,
                subject,
                target,
                "bench",
                f"r{rel_no}",
                2,
                "B",
                "P",
                "",
                opened,
                None,
                now,
                "bench",
                "",
            )
        )

    addresses = max(1, int(persons / 2.5))
    start = date(2020, 1, 1)
    account = 0
    background = persons - rings * (RING_SIZE + 1)
    for p in range(background):
        person = _id(p, "e")
        rel("LIVES_AT", person, f"addr:B{rng.randrange(addresses)}|1")
        if rng.random() < 0.55:
            account += 1
            rel("HOLDS_ACCOUNT", person, _id(account, "a"), start + timedelta(days=rng.randrange(2190)))
        if rng.random() < 0.4:
            # Mostly one's own phone; 5% use another person's number too.
            owner = rng.randrange(p + 1) if rng.random() < 0.05 else p
            rel("USES_PHONE", person, _id(owner, "t"))
        if rng.random() < 0.05:
            rel("ASSOCIATED_WITH", person, _id(rng.randrange(background), "e"))
        if rng.random() < 0.02:
            attributes.append((_id(p, "x"), person, True, "Student"))
    controllers = []
    for r in range(rings):
        base = background + r * (RING_SIZE + 1)
        controller = _id(base, "e")
        controllers.append(controller)
        phone = f"tring{r}"
        rel("USES_PHONE", controller, phone)
        opened = start + timedelta(days=rng.randrange(2000))
        for s in range(1, RING_SIZE + 1):
            student = _id(base + s, "e")
            attributes.append((_id(base + s, "x"), student, True, "Student"))
            rel("ASSOCIATED_WITH", controller, student)
            rel("LIVES_AT", student, f"addr:RING{r}|{s % 2}")
            for _ in range(rng.randint(1, 3)):
                account += 1
                rel("HOLDS_ACCOUNT", student, _id(account, "a"), opened + timedelta(days=rng.randrange(60)))
            if s <= 3:
                rel("USES_PHONE", student, phone)
    return relations, attributes, controllers


RELATION_COLUMNS = [
    "id", "region", "kind", "subject", "target", "source_system", "source_record_id",
    "source_evaluation", "assessment", "handling", "handling_conditions", "valid_from", "valid_to",
    "recorded_at", "recorded_by", "job",
]  # fmt: skip
RECORD_COLUMNS = [
    "id", "region", "source_system", "source_record_id", "record_type", "source_evaluation",
    "assessment", "handling", "handling_conditions", "content", "identifiers", "content_hash",
    "entity_id", "ingested_at", "ingested_by", "link_method", "link_probability", "linked_by", "linked_at",
]  # fmt: skip


async def seed(database: str, relations: list[tuple], attributes: list[tuple]) -> None:
    engine = create_engine(database, pool_size=2)
    try:
        async with engine.begin() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            now = datetime.now(UTC)
            await raw.copy_records_to_table("relations", records=relations, columns=RELATION_COLUMNS)  # type: ignore[union-attr]
            records = [
                (rid, REGION, "bench", rid, "PERSON", 2, "B", "P", "", "{}", "{}", "0" * 32, entity, now,
                 "bench", "SEED", 1.0, "bench", now)
                for rid, entity, _, _ in attributes
            ]  # fmt: skip
            await raw.copy_records_to_table("source_records", records=records, columns=RECORD_COLUMNS)  # type: ignore[union-attr]
            await raw.copy_records_to_table(  # type: ignore[union-attr]
                "person_attributes",
                records=[(rid, student, visa) for rid, _, student, visa in attributes],
                columns=["record_id", "student", "visa_type"],
            )
            await raw.execute("ANALYZE")  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def timed_runs(database: str, rounds: int) -> tuple[list[float], list[float], MuleReport]:
    engine = create_engine(database, pool_size=2)
    sessions = session_factory(engine)
    baseline: list[float] = []
    service: list[float] = []
    report = MuleReport()
    try:
        for _ in range(rounds):
            async with sessions() as session:
                connection = await session.connection()
                raw = (await connection.get_raw_connection()).driver_connection
                started = time.perf_counter()
                rows = await raw.fetch(
                    "SELECT kind, subject, target, valid_from FROM relations WHERE region = $1", REGION
                )  # type: ignore[union-attr]
                baseline.append(time.perf_counter() - started)
                del rows
            async with sessions() as session:
                started = time.perf_counter()
                report = await analyse_region(SqlRelationRepository(session), REGION)
                service.append(time.perf_counter() - started)
            print(f"  read {baseline[-1]:.2f} s, analysis {service[-1]:.2f} s", flush=True)
    finally:
        await engine.dispose()
    return baseline, service, report


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--rings", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print(f"generating {args.persons:,} persons", flush=True)
    relations, attributes, controllers = generate(args.persons, args.rings)
    print(f"  {len(relations):,} relations, {len(attributes):,} attribute rows", flush=True)
    work = Path(tempfile.mkdtemp(prefix="toex-bench-mules-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg", shared_buffers="1GB")
    pg.start()
    try:
        database = pg.create_database(f"bench_mules_{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(upgrade, database, migrations_dir())
        started = time.perf_counter()
        await seed(database, relations, attributes)
        seeded = time.perf_counter() - started
        print(f"  seeded in {seeded:.1f} s", flush=True)
        n_relations = len(relations)
        del relations
        baseline, service, report = await timed_runs(database, args.rounds)
    finally:
        pg.stop()

    found = {c.controller for c in report.clusters if c.alert}
    planted = set(controllers)
    recall = len(found & planted) / len(planted) if planted else 1.0
    false_alerts = len(found - planted) + sum(1 for c in report.clusters if c.alert and not c.controller)
    med_base, med_service = statistics.median(baseline), statistics.median(service)
    kinds: dict[str, int] = {}
    for f in report.findings:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    goal = "**met**" if max(service) < 10 else "**not met**"
    lines = [
        "# Entity: money mule analysis (issue 18.5)",
        "",
        f"Run: `python -m bench.entity.mules --persons {args.persons} --rings {args.rings} --rounds {args.rounds}` "
        f"on {machine()}. The machine was shared with other work during the run: the read (A) and the "
        "analysis (B) alternate in one session, and the ratio is of medians.",
        "",
        f"{args.persons:,} persons and {n_relations:,} relations in one region, seeded directly by COPY "
        f"({seeded:.1f} s), {args.rings} planted rings (controller + {RING_SIZE} students) among a random "
        "population (see the module docstring).",
        "",
        "| measure | median | all rounds |",
        "| --- | --- | --- |",
        f"| A: read the region's relations (asyncpg fetch) | {med_base:.2f} s | "
        + ", ".join(f"{x:.2f}" for x in baseline)
        + " |",
        f"| B: the service's analysis (read relations and attributes, analyse) | {med_service:.2f} s | "
        + ", ".join(f"{x:.2f}" for x in service)
        + " |",
        f"| B / A | {med_service / med_base:.2f}x | |",
        "",
        f"Goal: analysis under 10 s: {goal} (slowest round {max(service):.2f} s).",
        "",
        f"Planted rings found as alerting clusters with their controller named: {len(found & planted)} of "
        f"{len(planted)} (recall {recall:.3f}); alerting clusters that are not planted rings: {false_alerts}.",
        f"Findings: {', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))}; clusters scored: "
        f"{len(report.clusters):,}; components too large to analyse: {len(report.oversized)}.",
        "",
    ]
    path = write_results("entity-mules", "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
