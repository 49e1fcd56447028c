"""Relations written by COPY (through a staging table) against the executemany of multi-row
INSERTs they replaced (issue 18.4): the same handler path otherwise, bulk ingest of N generated
records (each with an address: one LIVES_AT relation per record), alternated on fresh databases
of one PostgreSQL. Prints the rates; the figures are quoted in
bench/results/entity-ingest-relations.md.

    python -m bench.entity.relations_copy [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path

from toex_common.migrations import upgrade
from toex_devstack.postgres import Postgres
from toex_entity import synthetic
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters import relations
from toex_entity.service_layer import handlers

from bench.entity.run import service_run


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.records
    people = list(synthetic.generate(n, seed=2026))
    model = handlers.default_model()
    work = Path(tempfile.mkdtemp(prefix="toex-bench-relations-copy-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg")
    pg.start()
    rates: dict[str, list[float]] = {"copy": [], "executemany": []}
    original = relations.COPY_FROM
    try:
        for round_ in range(args.rounds):
            for arm in rates:
                relations.COPY_FROM = original if arm == "copy" else 10**9
                database = pg.create_database(f"bench_relcopy_{uuid.uuid4().hex[:8]}")
                await asyncio.to_thread(upgrade, database, migrations_dir())
                seconds, *_ = await service_run(database, model, people, [])
                rates[arm].append(n / seconds)
                print(f"round {round_ + 1} {arm}: {n / seconds:,.0f} records/s", flush=True)
    finally:
        relations.COPY_FROM = original
        pg.stop()
    copy, many = statistics.median(rates["copy"]), statistics.median(rates["executemany"])
    print(f"medians: copy {copy:,.0f}, executemany {many:,.0f} records/s; copy/executemany {copy / many:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
