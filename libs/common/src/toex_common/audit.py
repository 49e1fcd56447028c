"""The audit log required by DPA 2018 Part 3 s62: who, what, when, outcome and purpose of
every read and change.

Entries are chained: each stores the hash of the one before, so an edited or deleted entry
breaks the chain and `verify` finds it. Writes are group-committed by one batcher per
process (`toex_common.batching`; several replicas can share a database: the primary key on seq
keeps the chain from forking): a call waits until its entry is durable, yet fifty concurrent
calls cost a few statements, not fifty.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from toex_common.batching import Batcher
from toex_common.db import audit_table, driver_connection

log = logging.getLogger(__name__)

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
    """The hash of entry `seq` with the fields in `entry` (a stored row, say), linked to
    `previous_hash`."""
    return _digest(_canonical(seq, entry, previous_hash))


def _canonical(seq: int, entry: dict[str, Any], previous_hash: str) -> str:
    """The entry as the text its hash is taken of: what `json.dumps(fields, sort_keys=True,
    separators=(",", ":"))` writes (ASCII, anything else escaped)."""
    fields = {
        "seq": seq,
        "occurred_at": _timestamp(entry["occurred_at"]),
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
    }
    # orjson writes the same text ten times faster, as long as it is printable ASCII (it leaves
    # DEL and non-ASCII characters unescaped); otherwise the standard encoder writes it.
    text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    if text.isascii() and b"\x7f" not in text:
        return text.decode()
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditSink(Protocol):
    async def record(self, entry: AuditEntry) -> None: ...


UNAUTHENTICATED = "UNAUTHENTICATED"


class UnauthenticatedCalls:
    """Calls without a valid token, summarised per peer and minute: anyone can make them, so a
    row each would be an append-only log anyone could grow without bound.

    The first such call from a peer (its address without the port) in a minute is recorded as
    it comes; the others are counted, and the count is recorded as one entry once that minute
    has passed, at the next unauthenticated call from anyone. At most two rows per peer and
    minute, and past `max_peers` peers in a minute the rest are counted together under "*"."""

    def __init__(self, clock: Any = None, max_peers: int = 10_000) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._max_peers = max_peers
        self._minute: datetime | None = None
        self._counts: dict[str, int] = {}

    def count(self, method: str, peer: str) -> list[AuditEntry]:
        """The entries to record for this call: its own if it is the peer's first this
        minute, and the summaries of a minute that has passed."""
        now = self._clock()
        minute = now.replace(second=0, microsecond=0)
        out: list[AuditEntry] = []
        if minute != self._minute:
            if self._minute is not None:
                out.extend(
                    AuditEntry(
                        action="unauthenticated calls in the minute",
                        outcome=UNAUTHENTICATED,
                        resources=(f"calls:{extra + 1}", f"minute:{self._minute.isoformat()}"),
                        peer=host,
                        occurred_at=now,
                    )
                    for host, extra in self._counts.items()
                    if extra
                )
            self._minute, self._counts = minute, {}
        host = peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer
        if host not in self._counts and len(self._counts) >= self._max_peers:
            host = "*"
        if host in self._counts:
            self._counts[host] += 1
        else:
            self._counts[host] = 0
            out.append(AuditEntry(action=method, outcome=UNAUTHENTICATED, peer=host, occurred_at=now))
        return out


class PostgresAuditLog:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._batcher: Batcher[AuditEntry, None] = Batcher(self._write, max_batch=max_batch)
        self._head: tuple[int, str] | None = None

    async def stop(self) -> None:
        """Write what is queued."""
        await self._batcher.drain()

    async def record(self, entry: AuditEntry) -> None:
        """Returns once `entry` is durable, written with the entries of concurrent calls."""
        await self._batcher.submit(entry)

    async def _write(self, entries: list[AuditEntry]) -> list[None]:
        try:
            await self.append(entries)
        except Exception:
            log.exception("audit write failed for %d entries", len(entries))
            raise
        return [None] * len(entries)

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Append `entries` to the chain in one statement (so all or none are stored).

        The chain's head (last seq and hash) is kept between batches, so a batch costs one round
        trip. Other writers (replicas, worker processes) may append in between: then the first
        seq this batch claims already exists, the primary key refuses the whole statement, and
        the batch is chained again to the head read afresh. The key on seq is what keeps the chain
        from forking; no lock is needed."""
        async with driver_connection(self._engine) as conn:
            for _ in range(_MAX_ATTEMPTS):
                if self._head is None:
                    row = await conn.fetchrow(_HEAD)
                    self._head = (row["seq"], row["entry_hash"]) if row else (0, GENESIS)
                rows, head = chain_rows(entries, *self._head)
                self._head = None  # unknown until the insert is known to have committed
                try:
                    await conn.execute(_INSERT, rows)
                except asyncpg.UniqueViolationError:
                    continue  # another writer appended first
                self._head = head
                return
        raise RuntimeError(f"audit chain still contended after {_MAX_ATTEMPTS} attempts")


_MAX_ATTEMPTS = 20
_COLUMNS = (
    "seq",
    "occurred_at",
    "actor_subject",
    "actor_username",
    "actor_roles",
    "actor_region",
    "action",
    "resources",
    "purpose",
    "outcome",
    "peer",
    "previous_hash",
    "entry_hash",
)
_HEAD = "SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
_INSERT = (
    f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM jsonb_populate_recordset(NULL::audit_log, $1::jsonb)"
)


def chain_rows(entries: Sequence[AuditEntry], seq: int, previous: str) -> tuple[str, tuple[int, str]]:
    """The entries as audit_log rows, numbered after `seq` and chained to `previous` (the hash
    of entry `seq`): a JSON array for `_INSERT`, and the (seq, hash) of the last. Each row is
    the text its hash was taken of with the hash added, so an entry is serialised once."""
    rows = []
    for entry in entries:
        seq += 1
        canonical = _canonical(
            seq,
            {
                "occurred_at": entry.occurred_at,
                "actor_subject": _text(entry.actor_subject),
                "actor_username": _text(entry.actor_username),
                "actor_roles": [_text(r) for r in entry.actor_roles],
                "actor_region": _text(entry.actor_region),
                "action": _text(entry.action),
                "resources": [_text(r) for r in entry.resources],
                "purpose": _text(entry.purpose),
                "outcome": _text(entry.outcome),
                "peer": _text(entry.peer),
            },
            previous,
        )
        previous = _digest(canonical)
        rows.append(f'{canonical[:-1]},"entry_hash":"{previous}"}}')
    return f"[{','.join(rows)}]", (seq, previous)


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; a resource name from a request might. Without this, one
    such call would fail every call whose entry shares its batch."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class VerifyReport:
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Anchor:
    """The head of a chain (its newest entry's sequence number and hash) as published outside
    the database, so that a rewritten chain or a deleted tail can be told from an intact one."""

    seq: int
    entry_hash: str
    at: str  # when it was published, ISO 8601

    def to_json(self) -> bytes:
        return orjson.dumps({"seq": self.seq, "entry_hash": self.entry_hash, "at": self.at})

    @classmethod
    def from_json(cls, data: bytes) -> Anchor:
        fields = orjson.loads(data)
        return cls(int(fields["seq"]), str(fields["entry_hash"]), str(fields["at"]))


async def head(engine: AsyncEngine) -> Anchor | None:
    """The newest entry, as an anchor to publish (None for an empty log)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(audit_table.c.seq, audit_table.c.entry_hash)
                .order_by(audit_table.c.seq.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    return Anchor(int(row.seq), str(row.entry_hash), datetime.now(UTC).isoformat())


async def verify(engine: AsyncEngine, *, batch: int = 5000, anchor: Anchor | None = None) -> VerifyReport:
    """Walk the whole chain. Finds edited entries (hash mismatch), deleted ones (gap in the
    sequence or a broken link) and inserted ones (broken link). With the last `anchor`
    published, also a deleted tail, an emptied table, or a chain rewritten from its start,
    none of which the chain alone can show."""
    report = VerifyReport()
    expected_seq, previous = 1, GENESIS
    anchored_hash: str | None = None
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
                if anchor is not None and seq == anchor.seq:
                    anchored_hash = row["entry_hash"]
                expected_seq, previous = seq + 1, row["entry_hash"]
    if anchor is not None:
        if report.entries == 0:
            report.problems.append(f"the log is empty, but entry {anchor.seq} was anchored at {anchor.at}")
        elif expected_seq - 1 < anchor.seq:
            report.problems.append(
                f"entries {expected_seq}..{anchor.seq}, anchored at {anchor.at}, are missing (the tail was deleted?)"
            )
        elif anchored_hash != anchor.entry_hash:
            report.problems.append(
                f"entry {anchor.seq} differs from its anchor of {anchor.at} (the chain was rewritten?)"
            )
    return report
