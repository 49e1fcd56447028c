"""Outcomes shown on the linked tasking job, reliably.

A note is written to `job_note_outbox` in the same transaction as the change it reports; the
relay then calls the tasking service's AddJobNote with the service's own token, the referral
as the purpose, and the note's id as the request id (so a retried call adds one note). A
tasking outage only delays notes: transient failures are retried with backoff, forever.
A note the tasking service can never accept (the job does not exist, the text is refused) is
marked failed with the reason and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from toex_safeguarding.adapters.tables import job_note_outbox

log = logging.getLogger(__name__)

# Answers that will never change by trying again.
PERMANENT = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class SqlJobNotes:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def queue(self, *, job: str, referral: str, text: str) -> None:
        now = datetime.now(UTC)
        await self.session.execute(
            insert(job_note_outbox).values(
                id=str(uuid.uuid4()),
                job=job,
                referral=referral,
                text=text,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )


class NoteSender(Protocol):
    async def add_note(self, *, job: str, text: str, purpose: str, request_id: str) -> None: ...


class JobNoteRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        sender: NoteSender,
        *,
        batch_size: int = 50,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 300.0,
    ) -> None:
        self._engine = engine
        self._sender = sender
        self._batch = batch_size
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.relay_once()
            except Exception:
                log.exception("job note relay pass failed")
                handled = 0
            if handled >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll)

    async def relay_once(self) -> int:
        """Try every note that is due. Returns how many were tried."""
        c = job_note_outbox.c
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(c.id, c.job, c.referral, c.text, c.attempts)
                    .where(c.sent_at.is_(None), c.failed_at.is_(None), c.next_attempt_at <= datetime.now(UTC))
                    .order_by(c.next_attempt_at)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                now = datetime.now(UTC)
                try:
                    await self._sender.add_note(
                        job=row.job, text=row.text, purpose=row.referral, request_id=row.id
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in PERMANENT:
                        log.error("job note %s for %s refused for good: %s", row.id, row.job, exc.details())
                        await conn.execute(
                            update(job_note_outbox)
                            .where(c.id == row.id)
                            .values(
                                failed_at=now,
                                attempts=row.attempts + 1,
                                last_error=f"{exc.code().name}: {exc.details()}"[:500],
                            )
                        )
                        continue
                    await self._retry_later(conn, row, now, f"{exc.code().name}: {exc.details()}")
                except Exception as exc:
                    await self._retry_later(conn, row, now, repr(exc))
                else:
                    await conn.execute(
                        update(job_note_outbox)
                        .where(c.id == row.id)
                        .values(sent_at=now, attempts=row.attempts + 1)
                    )
                    self.sent += 1
        return len(rows)

    async def _retry_later(self, conn: object, row: object, now: datetime, error: str) -> None:
        attempts = row.attempts + 1  # type: ignore[attr-defined]
        delay = min(self._max_backoff, 0.5 * 2 ** min(attempts, 12))
        log.warning("job note %s: tasking unavailable (%s); retry in %.0fs", row.id, error, delay)  # type: ignore[attr-defined]
        await conn.execute(  # type: ignore[attr-defined]
            update(job_note_outbox)
            .where(job_note_outbox.c.id == row.id)  # type: ignore[attr-defined]
            .values(attempts=attempts, next_attempt_at=now + timedelta(seconds=delay), last_error=error[:500])
        )
