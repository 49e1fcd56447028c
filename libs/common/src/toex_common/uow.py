"""Unit of work: owns the transaction. Only `commit()` here ever commits.

Integration events collected with `publish()` are written to the outbox in the same
transaction as the state change, so a change and its events are stored together or not at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from toex_common.db import idempotency_table, outbox_table
from toex_common.errors import InvalidArgument
from toex_common.events.envelope import EventEnvelope


def request_fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


MAX_REQUEST_ID_LENGTH = 128


@dataclass(frozen=True)
class Idempotency:
    """A client-supplied request id (AIP-155) and a fingerprint of the request it came with."""

    request_id: str
    fingerprint: str


def idempotency_of(request: Message) -> Idempotency | None:
    """The request's `request_id` with a fingerprint of everything else in it, or None."""
    request_id: str = getattr(request, "request_id", "")
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument.field("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")  # type: ignore[arg-type]
    return Idempotency(request_id, request_fingerprint(body.SerializeToString(deterministic=True)))


class UnitOfWork(Protocol):
    """The port handlers depend on; services extend it with their repositories."""

    def publish(self, event: EventEnvelope) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def recall_request(self, scope: str, request_id: str, fingerprint: str) -> str | None: ...
    async def remember_request(
        self, scope: str, request_id: str, fingerprint: str, resource: str
    ) -> None: ...


class SqlAlchemyUnitOfWork:
    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions
        self._events: list[EventEnvelope] = []

    async def __aenter__(self) -> Any:
        self.session = self._sessions()
        self._events = []
        self._after_enter()
        return self

    def _after_enter(self) -> None:
        """Subclasses build their repositories on `self.session` here."""

    async def __aexit__(self, *exc: object) -> None:
        await self.rollback()
        await self.session.close()

    def publish(self, event: EventEnvelope) -> None:
        self._events.append(event)

    async def commit(self) -> None:
        if self._events:
            await self.session.execute(
                insert(outbox_table),
                [
                    {
                        "event_id": e.event_id,
                        "subject": e.subject,
                        "event_type": e.event_type,
                        "payload": e.payload,
                        "headers": e.headers,
                    }
                    for e in self._events
                ],
            )
        await self.session.commit()
        self._events = []

    async def rollback(self) -> None:
        self._events = []
        await self.session.rollback()

    async def recall_request(self, scope: str, request_id: str, fingerprint: str) -> str | None:
        """The resource a repeated request created or changed, if this request id was seen."""
        row = (
            await self.session.execute(
                select(idempotency_table.c.fingerprint, idempotency_table.c.resource).where(
                    idempotency_table.c.scope == scope, idempotency_table.c.request_id == request_id
                )
            )
        ).first()
        if row is None:
            return None
        if row.fingerprint != fingerprint:
            raise InvalidArgument.field(
                "request_id", "already used for a different request; use a new request_id"
            )
        return str(row.resource)

    async def remember_request(self, scope: str, request_id: str, fingerprint: str, resource: str) -> None:
        await self.session.execute(
            pg_insert(idempotency_table)
            .values(scope=scope, request_id=request_id, fingerprint=fingerprint, resource=resource)
            .on_conflict_do_nothing()
        )
