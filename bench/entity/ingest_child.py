"""One bulk ingest, run by bench/entity/ingest_rate.py in a process of its own with one tree's
packages first on the path: migrates the given database with that tree's migrations, resolves
N generated persons through that tree's handler (what IngestRecords runs, without the gRPC hop),
then S more one at a time (what ResolveRecord runs), and prints the rate and their latencies as
JSON. It imports only what every tree compared has kept the same."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_entity import synthetic
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands
from toex_entity.domain.records import Grading, Handling, RecordType
from toex_entity.service_layer import handlers
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

CHUNK = 20_000


async def main(database: str, n: int, seed: int, singles: int) -> None:
    actor = Principal("bench", "bench", Region.NATIONAL, frozenset({Role.SERVICE}))
    grading = Grading(2, "B", Handling.P)
    # The generator streams: its first n records are the same whatever comes after them.
    generated = [
        commands.IncomingRecord(Region.EMSOU, "bench", g.record_id, RecordType.PERSON, grading, g.person)
        for g in synthetic.generate(n + singles, seed=seed)
    ]
    records, more = generated[:n], generated[n:]
    engine = create_engine(database, pool_size=4)
    sessions = session_factory(engine)
    deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type,return-value]
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, CHUNK):
            await handlers.resolve_records(
                commands.ResolveRecords(actor, records[start : start + CHUNK], single=False), deps
            )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # Then records one at a time (what ResolveRecord runs), against what was just loaded:
        # about a fifth are duplicates of stored persons.
        single_ms = []
        for record in more:
            began = time.perf_counter()
            await handlers.resolve_records(commands.ResolveRecords(actor, [record], single=True), deps)
            single_ms.append((time.perf_counter() - began) * 1000)
    finally:
        await engine.dispose()
    print(json.dumps({"records": n, "seconds": seconds, "cpu_seconds": cpu, "single_ms": single_ms}))


if __name__ == "__main__":
    upgrade(sys.argv[1], migrations_dir())  # alembic runs its own event loop
    singles = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), singles))
