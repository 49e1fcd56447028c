"""The audit log required by DPA 2018 Part 3 s62: who, what, when, outcome and purpose of
every read and change.

Entries are chained: each stores the hash of the one before, so an edited or deleted entry
breaks the chain and `verify` finds it. Writes are group-committed by one writer task per
process (under an advisory lock, so several replicas can share a database): a call waits
until its entry is durable, yet fifty concurrent calls cost one transaction, not fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from toex_common.db import audit_table

log = logging.getLogger(__name__)

_LOCK_KEY = 0x70E7A0D1  # advisory lock serialising chain appends
GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    action: str
    outcome: str
    actor_subject: str = ""
    actor_username: str = ""
    actor_roles: tuple[str, ...] = ()
    actor_region: str = ""
    resources: tuple[str, ...] = ()
    purpose: str = ""
    peer: str = ""
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def entry_hash(seq: int, entry: dict[str, Any], previous_hash: str) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "occurred_at": entry["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_subject": entry["actor_subject"],
            "actor_username": entry["actor_username"],
            "actor_roles": list(entry["actor_roles"]),
            "actor_region": entry["actor_region"],
            "action": entry["action"],
            "resources": list(entry["resources"]),
            "purpose": entry["purpose"],
            "outcome": entry["outcome"],
            "peer": entry["peer"],
            "previous_hash": previous_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditSink(Protocol):
    async def record(self, entry: AuditEntry) -> None: ...


class PostgresAuditLog:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[AuditEntry, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def record(self, entry: AuditEntry) -> None:
        if self._task is None:
            await self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((entry, future))
        await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.append([entry for entry, _ in batch])
            except Exception as exc:
                log.exception("audit write failed for %d entries", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
            for _ in batch:
                self._queue.task_done()

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        async with self._engine.begin() as conn:
            await append_entries(conn, entries)


async def append_entries(conn: AsyncConnection, entries: Sequence[AuditEntry]) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    last = (
        await conn.execute(
            select(audit_table.c.seq, audit_table.c.entry_hash).order_by(audit_table.c.seq.desc()).limit(1)
        )
    ).first()
    seq, previous = (last.seq, last.entry_hash) if last else (0, GENESIS)
    rows = []
    for entry in entries:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq,
            "occurred_at": entry.occurred_at,
            "actor_subject": entry.actor_subject,
            "actor_username": entry.actor_username,
            "actor_roles": list(entry.actor_roles),
            "actor_region": entry.actor_region,
            "action": entry.action,
            "resources": list(entry.resources),
            "purpose": entry.purpose,
            "outcome": entry.outcome,
            "peer": entry.peer,
            "previous_hash": previous,
        }
        row["entry_hash"] = previous = entry_hash(seq, row, previous)
        rows.append(row)
    await conn.execute(insert(audit_table), rows)


@dataclass
class VerifyReport:
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


async def verify(engine: AsyncEngine, *, batch: int = 5000) -> VerifyReport:
    """Walk the whole chain. Finds edited entries (hash mismatch), deleted ones (gap in the
    sequence or a broken link) and inserted ones (broken link)."""
    report = VerifyReport()
    expected_seq, previous = 1, GENESIS
    async with engine.connect() as conn:
        result = await conn.stream(select(audit_table).order_by(audit_table.c.seq))
        async for partition in result.mappings().partitions(batch):
            for row in partition:
                report.entries += 1
                seq = row["seq"]
                if seq != expected_seq:
                    report.problems.append(f"entries {expected_seq}..{seq - 1} are missing (deleted?)")
                if row["previous_hash"] != previous:
                    report.problems.append(f"entry {seq} does not link to the entry before it")
                if entry_hash(seq, dict(row), row["previous_hash"]) != row["entry_hash"]:
                    report.problems.append(f"entry {seq} was altered after it was written")
                expected_seq, previous = seq + 1, row["entry_hash"]
    return report
