"""The outbox relay: publishes committed outbox rows to JetStream until each is acknowledged.

`Nats-Msg-Id` is the event id, so a publish retried after a lost acknowledgement is dropped
by the stream's duplicate window. Rows are claimed with FOR UPDATE SKIP LOCKED, so several
replicas can relay from one database. A failed publish is retried with backoff, forever.
A row is deleted once the stream has acknowledged it: the stream is the record of what was
published, and a delete costs PostgreSQL a fraction of an update (no new row version, no new
index entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from toex_common.db import OUTBOX_CHANNEL, driver_dsn, driver_pool, outbox_table

log = logging.getLogger(__name__)


@dataclass
class _Claim:
    """A batch of outbox rows locked in an open transaction, with its publishes under way."""

    conn: asyncpg.Connection
    transaction: Any
    seqs: list[int]
    acks: list[asyncio.Future[Any]]


# Statements the relay runs on every pass, prepared once per connection (asyncpg's statement
# cache): the next unpublished rows after the last claimed, and the delete of the published.
_CLAIM = (
    "SELECT seq, subject, payload, headers FROM outbox WHERE published_at IS NULL AND seq > $1 "
    "ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED"
)
# The same, for a relay scoped to an installation's subjects (`subject LIKE ANY($3)`).
_CLAIM_SCOPED = (
    "SELECT seq, subject, payload, headers FROM outbox WHERE published_at IS NULL AND seq > $1 "
    "AND subject LIKE ANY($3::text[]) ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_OUTSIDE = (
    "SELECT count(*) AS rows, min(subject) AS example FROM outbox "
    "WHERE published_at IS NULL AND NOT subject LIKE ANY($1::text[])"
)
_DELETE = "DELETE FROM outbox WHERE seq = ANY($1::bigint[])"
_FAILED = "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE seq = ANY($1::bigint[])"


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        max_backoff_seconds: float = 15.0,
        rescan_seconds: float = 5.0,
        gather_seconds: float = 0.02,
        subjects: Sequence[str] | None = None,
    ) -> None:
        """`subjects`: the subject patterns (`toex.london.>`; `*` for one token) the relay may
        publish, for an installation that does not serve every region; None for any. Rows
        outside them (queued before a single installation became a region's) stay in the
        outbox, untouched: they would wait forever for an acknowledgement that the
        installation's NATS user is not allowed to get, holding every later row back. The relay
        says how many at start (docs/operations.md says what to do with them)."""
        self._engine = engine
        self._js = js
        self._batch = batch_size
        self._poll = poll_seconds
        self._timeout = publish_timeout
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()
        self.published = 0
        # The next batch starts after the last one claimed: scanning from there skips the dead
        # index entries that published rows leave until vacuum.
        self._after = 0
        self._last_rescan = 0.0
        self._rescan_seconds = rescan_seconds
        self._gather = gather_seconds
        self._patterns = None if subjects is None else [_like(pattern) for pattern in subjects]
        self.outside = 0

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        with contextlib.suppress(Exception):  # a report only: the relay runs without it
            await self.report_outside()
        failures = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent, failed = await self.relay_pass()
                except Exception:
                    log.exception("outbox relay pass failed")
                    sent, failed = 0, 1
                if failed:
                    failures += 1
                    delay = min(self._max_backoff, 0.2 * 2 ** min(failures, 10))
                    await _wait(stop, delay)
                    continue
                failures = 0
                if sent >= self._batch:
                    continue
                if sent and self._gather:
                    # Events keep coming: let 20 ms' worth gather, so that under load a pass (a
                    # claim, the publishes, a delete and a commit) carries many, not one or two.
                    # (Tasking CreateJob under 50 concurrent calls, two runs each: 696 -> 840
                    # calls/s, 1,475 -> 1,208 us of server CPU a call.) The first event after a
                    # quiet spell goes at once.
                    await _wait(stop, self._gather)
                await _wait_any(stop, self._wake, self._poll)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        url, tls = driver_dsn(self._engine)
        try:
            conn = await asyncpg.connect(url, **tls)  # type: ignore[arg-type]
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            return conn
        except Exception as exc:  # polling still works without it
            log.warning("outbox LISTEN unavailable, polling only: %s", exc)
            return None

    async def report_outside(self) -> int:
        """How many unpublished rows lie outside the relay's subjects (logged when any do)."""
        if self._patterns is None:
            return 0
        pool = await driver_pool(self._engine)
        async with pool.acquire() as conn:
            row = await conn.fetchrow(_OUTSIDE, self._patterns)
        self.outside = int(row["rows"])
        if self.outside:
            log.warning(
                "outbox: %d unpublished rows are for subjects this installation does not publish "
                "(e.g. %s), queued before it became a region's installation; they stay in the "
                "outbox unpublished: see docs/operations.md, 'Events queued for another region'",
                self.outside,
                row["example"],
            )
        return self.outside

    async def relay_once(self) -> tuple[int, int]:
        """Publish one batch. Returns (published, failed)."""
        self._after = 0
        claim = await self._claim()
        return (0, 0) if claim is None else await self._finish(claim)

    async def relay_pass(self, max_batches: int = 16) -> tuple[int, int]:
        """Publish up to `max_batches` batches, claiming the next batch while the previous one
        waits for its acknowledgements. A batch's publishes are written to the connection
        before the next batch is claimed, so the stream keeps the outbox order."""
        sent = failed = 0
        pending: asyncio.Task[tuple[int, int]] | None = None
        # Scan from the lowest unpublished row again every few seconds (and whenever a scan finds
        # nothing): a transaction that took its sequence number early but committed late is
        # published within that time. Rescanning on every pass would walk the dead index entries
        # of everything published since the last vacuum, each time.
        now = asyncio.get_running_loop().time()
        if now - self._last_rescan >= self._rescan_seconds:
            self._after = 0
            self._last_rescan = now
        try:
            for _ in range(max_batches):
                claim = await self._claim()
                if claim is None:
                    break
                finishing = asyncio.create_task(self._finish(claim))
                if pending is not None:
                    done_sent, done_failed = await pending
                    sent, failed = sent + done_sent, failed + done_failed
                pending = finishing
                if failed or len(claim.seqs) < self._batch:
                    break
        finally:
            if pending is not None:
                done_sent, done_failed = await pending
                sent, failed = sent + done_sent, failed + done_failed
        return sent, failed

    async def _claim(self) -> _Claim | None:
        pool = await driver_pool(self._engine)
        conn = await pool.acquire()
        acks: list[asyncio.Future[Any]] = []
        try:
            transaction = conn.transaction()
            await transaction.start()
            if self._patterns is None:
                rows = await conn.fetch(_CLAIM, self._after, self._batch)
            else:
                rows = await conn.fetch(_CLAIM_SCOPED, self._after, self._batch, self._patterns)
            if not rows:
                self._after = 0
                await transaction.rollback()
                await pool.release(conn)
                return None
            self._after = rows[-1]["seq"]
            # JetStream's asynchronous publish: each acknowledgement settles a future through one
            # reply subscription, with no request (timer, inbox, wait) per event.
            for row in rows:
                acks.append(
                    await self._js.publish_async(row["subject"], row["payload"], headers=row["headers"])
                )
        except BaseException:
            for ack in acks:  # nobody waits for these now; free their places in nats-py's window
                ack.cancel()
            await pool.release(conn)  # the pool's reset rolls back the open transaction
            raise
        return _Claim(conn, transaction, [row["seq"] for row in rows], acks)

    async def _finish(self, claim: _Claim) -> tuple[int, int]:
        conn, acks = claim.conn, claim.acks
        try:
            _, unanswered = await asyncio.wait(acks, timeout=self._timeout)
            for ack in unanswered:
                ack.cancel()
            ok: list[int] = []
            failed: list[int] = []
            error = ""
            for seq, ack in zip(claim.seqs, acks, strict=True):
                problem = "no acknowledgement in time" if ack.cancelled() else ack.exception()
                if problem is None:
                    ok.append(seq)
                else:
                    failed.append(seq)
                    error = error or repr(problem)
            if ok:
                await conn.execute(_DELETE, ok)
            if failed:
                self._after = 0  # retry from the lowest unpublished row
                await conn.execute(_FAILED, failed, error[:500])
                log.warning(
                    "outbox: %d of %d publishes failed (%s); will retry", len(failed), len(acks), error
                )
            await claim.transaction.commit()
        finally:
            await (await driver_pool(self._engine)).release(conn)
        self.published += len(ok)
        return len(ok), len(failed)


def _like(pattern: str) -> str:
    """A NATS subject pattern as a LIKE pattern: `>` any tail, `*` any token (approximately:
    `%` may span dots, which the subjects toex publishes make harmless), LIKE's own wildcards
    escaped."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace(">", "%").replace("*", "%")


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(func.count()).select_from(outbox_table).where(outbox_table.c.published_at.is_(None))
        )
        return int(result.scalar_one())


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# What the relay has still to publish: how many events, and how long the oldest has waited.
OUTBOX_BACKLOG_SQL = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
    "FROM outbox WHERE published_at IS NULL"
)


async def outbox_backlog(engine: AsyncEngine) -> tuple[int, float]:
    """(events not yet published, seconds the oldest of them has waited)."""
    async with engine.connect() as connection:
        row: Any = (await connection.exec_driver_sql(OUTBOX_BACKLOG_SQL)).one()
    return int(row[0]), float(row[1])
