"""Unit of work: owns the transaction. Only `commit()` here ever commits.

Integration events collected with `publish()` are written to the outbox in the same
transaction as the state change, so a change and its events are stored together or not at all.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson
from google.protobuf.message import Message
from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from toex_kernel.errors import InvalidArgument, NotFound
from toex_kernel.idempotency import Idempotency
from toex_kernel.pacing import Pacer

from toex_common.batching import Batcher
from toex_common.db import driver_connection, driver_pool, idempotency_table, outbox_table, session_driver
from toex_common.events.envelope import EventEnvelope
from toex_common.grants import SqlGrants
from toex_common.installation import ensure_publishable


def request_fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


T = TypeVar("T")
MAX_REQUEST_ID_LENGTH = 128
# Queued writes: (statement with numbered $n parameters, the rows to run it with).
_Writes = list[tuple[str, list[tuple[Any, ...]]]]
# From this many events in one unit of work on, the outbox rows are copied in (COPY).
OUTBOX_COPY_FROM = 50
# Run once the unit's transaction has committed (say, the audit entry of what it changed).
AfterCommit = Callable[[], Awaitable[object]]
# Claim events in a consumer's inbox: one statement whatever the batch size (arrays, not one
# parameter per row), so it is compiled and prepared once. Returns the ids not claimed before.
_CLAIM_EVENTS = (
    "INSERT INTO inbox (consumer, event_id, subject) "
    "SELECT {consumer}, event_id, subject FROM unnest(CAST({ids} AS text[]), CAST({subjects} AS text[])) "
    "AS claimed(event_id, subject) ON CONFLICT DO NOTHING RETURNING event_id"
)
_CLAIM_EVENTS_BOUND = text(_CLAIM_EVENTS.format(consumer=":consumer", ids=":ids", subjects=":subjects"))
_CLAIM_EVENTS_NUMBERED = _CLAIM_EVENTS.format(consumer="$1", ids="$2", subjects="$3")


async def replayed(
    uow: UnitOfWork,
    scope: str,
    idempotency: Idempotency | None,
    load: Callable[[str], Awaitable[T | None]],
) -> T | None:
    """What a repeated request (AIP-155) produced the first time, loaded by the last segment of
    the resource name its request id was remembered with; None for a request not seen before
    (or one without a request id). A request id reused for a different request is refused."""
    if idempotency is None:
        return None
    name = await uow.recall_request(scope, idempotency.request_id, idempotency.fingerprint)
    if name is None:
        return None
    found = await load(name.rsplit("/", 1)[-1])
    if found is None:
        raise NotFound(f"{name} not found")
    return found


async def remember(uow: UnitOfWork, scope: str, idempotency: Idempotency | None, name: str) -> None:
    """Remember that the request produced resource `name`, in the unit's transaction."""
    if idempotency is not None:
        await uow.remember_request(scope, idempotency.request_id, idempotency.fingerprint, name)


def request_scope(service: str, method: str, subject: str) -> str:
    """The namespace of a caller's request ids: per service, method and caller (AIP-155)."""
    return f"{service}.{method}:{subject}"


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


def _recalled(stored_fingerprint: str, resource: str, fingerprint: str) -> str:
    """The resource a request id was first used for, if this is the same request again."""
    if stored_fingerprint != fingerprint:
        raise InvalidArgument.field(
            "request_id", "already used for a different request; use a new request_id"
        )
    return str(resource)


class _Unattached:
    """The holder of domain events recorded on the unit of work itself (`record`)."""

    def __init__(self) -> None:
        self.events: list[Any] = []


class CollectsDomainEvents:
    """Domain events, published by the platform: aggregates record what happened (`events`),
    repositories `track` the aggregates they store, and at commit the unit of work turns every
    event recorded into the service's integration events (its one mapping,
    `integration_events`, the only place that knows protobuf) and writes them to the outbox in
    the same transaction, in the order they were recorded. Handlers publish nothing themselves.

    A fact that belongs to no one aggregate (a reconciliation across a region's submissions, a
    finding across a dataset) is `record`ed on the unit of work: it reaches the mapping with
    `None` as its aggregate, in the order recorded, as if the unit of work were one more
    aggregate tracked.

    A bulk change whose events are a large share of its work can have them mapped while it
    waits on its database (`map_meanwhile`): what commit writes is the same, in the same order."""

    # Set afresh by each unit of work's __init__ and __aenter__ (`_forget_tracked`).
    _tracked: list[Any]
    _tracked_ids: set[int]
    _unattached: _Unattached | None
    _ahead: asyncio.Task[None] | None
    _mapped: _Mapped

    def track(self, aggregate: Any) -> None:
        """Collect `aggregate.events` at commit (once, however often it is stored)."""
        if id(aggregate) not in self._tracked_ids:
            self._tracked_ids.add(id(aggregate))
            self._tracked.append(aggregate)

    def record(self, event: Any) -> None:
        """A domain event of no one aggregate, published at commit like the aggregates' own."""
        if self._unattached is None:
            self._unattached = _Unattached()
            self.track(self._unattached)
        self._unattached.events.append(event)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        """The service's mapping of one domain event; a service without domain events has none."""
        raise NotImplementedError(f"{type(self).__name__} maps no domain events ({type(event).__name__})")

    def map_meanwhile(self) -> None:
        """Start mapping the events recorded so far in the background: a slice of them each
        time the unit's task waits (on its database, say), so the mapping's CPU overlaps the
        database's work instead of following it. Commit waits for it and maps only the events
        recorded after. The mapping must depend on nothing but the events (as a service's
        `integration_events` does); an error in it is raised by commit."""
        snapshot = [(aggregate, len(aggregate.events)) for aggregate in self._tracked]
        self._ahead = asyncio.get_running_loop().create_task(self._map_ahead(self._ahead, snapshot))

    async def _map_ahead(self, previous: asyncio.Task[None] | None, snapshot: list[tuple[Any, int]]) -> None:
        if previous is not None:
            await previous
        pacer = Pacer()
        for aggregate, upto in snapshot:
            entry = self._mapped.setdefault(id(aggregate), [0, []])
            owner = None if isinstance(aggregate, _Unattached) else aggregate
            for event in aggregate.events[entry[0] : upto]:
                entry[1].extend(self.integration_events(owner, event))
                entry[0] += 1
                await pacer.give_way()  # the unit's own task goes on as soon as its answer is in

    def _mapping(self) -> bool:
        """Whether events are being mapped in the background now."""
        return self._ahead is not None and not self._ahead.done()

    def _take_mapped(self) -> list[EventEnvelope]:
        """The integration events mapped so far that come first in the order commit writes
        them (every aggregate's, up to the first not wholly mapped yet, and what that one has
        mapped), taken so that collecting does not return them again."""
        taken: list[EventEnvelope] = []
        for aggregate in self._tracked:
            entry = self._mapped.get(id(aggregate))
            if entry is None:
                break
            taken.extend(entry[1])
            entry[1].clear()
            if entry[0] < len(aggregate.events):
                break
        return taken

    async def _collect_domain_events(self) -> list[EventEnvelope]:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            await ahead
        collected: list[EventEnvelope] = []
        for aggregate in self._tracked:
            recorded = aggregate.events
            start, out = self._mapped.get(id(aggregate), (0, []))
            collected.extend(out)
            owner = None if isinstance(aggregate, _Unattached) else aggregate
            for event in recorded[start:] if start else recorded:
                collected.extend(self.integration_events(owner, event))
            recorded.clear()
        self._forget_tracked()
        return collected

    def _forget_tracked(self) -> None:
        # The aggregates are held until then, so an id in the set is never another object's.
        self._tracked, self._tracked_ids, self._unattached = [], set(), None
        self._mapped = {}
        ahead, self._ahead = getattr(self, "_ahead", None), None
        if ahead is not None:  # rolled back before commit: its mapping is not wanted
            ahead.cancel()
            ahead.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a discarded task's outcome as seen (an error in work nobody wants is not news)."""
    if not task.cancelled():
        task.exception()


# What `map_meanwhile` has mapped: per aggregate (by id), how many of its events and the
# integration events they became (less those taken by an early outbox copy).
_Mapped = dict[int, list[Any]]


class UnitOfWork(Protocol):
    """The port handlers depend on; services extend it with their repositories."""

    def publish(self, event: EventEnvelope) -> None: ...
    def after_commit(self, callback: AfterCommit) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def recall_request(self, scope: str, request_id: str, fingerprint: str) -> str | None: ...
    async def remember_request(
        self, scope: str, request_id: str, fingerprint: str, resource: str
    ) -> None: ...


async def _run_after_commit(callbacks: list[AfterCommit]) -> None:
    """Run every callback, even after one fails (the work is committed: each is owed its run),
    then raise the first failure."""
    failures = []
    for callback in callbacks:
        try:
            await callback()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


class SqlAlchemyUnitOfWork(CollectsDomainEvents):
    session: AsyncSession

    @property
    def grants(self) -> SqlGrants:
        """Job grants (toex_common.grants), read in this unit's transaction."""
        return SqlGrants(self.session)

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions
        self._events: list[EventEnvelope] = []
        self._forget_tracked()
        self._after_commit: list[AfterCommit] = []

    async def __aenter__(self) -> Any:
        self.session = self._sessions()
        self._events, self._after_commit = [], []
        self._forget_tracked()
        self._after_enter()
        return self

    def _after_enter(self) -> None:
        """Subclasses build their repositories on `self.session` here."""

    async def __aexit__(self, *exc: object) -> None:
        await self.rollback()
        await self.session.close()

    def publish(self, event: EventEnvelope) -> None:
        self._events.append(event)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once this unit has committed; never if it rolls back."""
        self._after_commit.append(callback)

    async def claim_events(self, consumer: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Claim (event id, subject) pairs in `consumer`'s inbox, in this unit's transaction: the
        ids claimed now (the others were processed before)."""
        claimed = await self.session.execute(
            _CLAIM_EVENTS_BOUND,
            {"consumer": consumer, "ids": [e[0] for e in events], "subjects": [e[1] for e in events]},
        )
        return {row.event_id for row in claimed}

    async def commit(self) -> None:
        if self._mapping():
            # Events still being mapped (`map_meanwhile`): those ready go in first, and the rest
            # are mapped while PostgreSQL takes them.
            early, self._events = self._events + self._take_mapped(), []
            if len(early) >= OUTBOX_COPY_FROM:
                ensure_publishable(self.session.bind, (e.subject for e in early))
                self._events = early
                await self._copy_outbox()
            else:
                self._events = early
        self._events.extend(await self._collect_domain_events())
        if self._events:
            # A region installation publishes nothing for another region (toex_common.installation).
            ensure_publishable(self.session.bind, (e.subject for e in self._events))
        if len(self._events) >= OUTBOX_COPY_FROM:
            await self._copy_outbox()
        elif self._events:
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
        callbacks, self._after_commit = self._after_commit, []
        await _run_after_commit(callbacks)

    async def _copy_outbox(self) -> None:
        """A bulk change's events (thousands of rows) go in with COPY, in the same transaction:
        an executemany of that many rows costs more than the change itself."""
        driver = await session_driver(self.session)
        await driver.copy_records_to_table(
            "outbox",
            columns=["event_id", "subject", "event_type", "payload", "headers"],
            records=[_outbox_row(e) for e in self._events],
        )
        self._events = []

    async def rollback(self) -> None:
        self._events, self._after_commit = [], []
        self._forget_tracked()
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
        return None if row is None else _recalled(row.fingerprint, row.resource, fingerprint)

    async def remember_request(self, scope: str, request_id: str, fingerprint: str, resource: str) -> None:
        await self.session.execute(
            pg_insert(idempotency_table)
            .values(scope=scope, request_id=request_id, fingerprint=fingerprint, resource=resource)
            .on_conflict_do_nothing()
        )


def _outbox_row(event: EventEnvelope) -> tuple[str, str, str, bytes, str]:
    """The outbox columns event_id, subject, event_type, payload, headers (JSON text)."""
    return (
        event.event_id,
        event.subject,
        event.event_type,
        event.payload,
        orjson.dumps(event.headers).decode(),
    )


_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, subject, event_type, payload, headers) VALUES ($1, $2, $3, $4, $5)"
)
_RECALL = "SELECT fingerprint, resource FROM idempotency_keys WHERE scope = $1 AND request_id = $2"
_REMEMBER = (
    "INSERT INTO idempotency_keys (scope, request_id, fingerprint, resource) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING"
)


class DriverUnitOfWork(CollectsDomainEvents):
    """The unit of work on a connection from the asyncpg pool of `db.driver_pool`, for services whose
    every call runs through it (tasking): prepared statements, no statement compilation.

    Writes are queued (`write`, `write_many`) and sent at `commit()`. A unit that only writes
    (creating a job: the job row, its events' outbox rows) takes no connection of its own: its
    writes are group-committed with those of the other units committing at the same time, as one
    statement, a chain of INSERTs in a WITH, which PostgreSQL runs atomically. Fifty concurrent
    CreateJob calls then cost a few round trips and WAL flushes, not fifty of each (let alone
    BEGIN, each INSERT, COMMIT). If the shared statement fails, each unit's statement is sent on
    its own, so only a unit that fails alone fails. A unit that reads first (`await
    connection()`: a row to change, a request id to recall) runs in a transaction as usual; its
    queued writes are sent before any read that follows them, so it reads its own writes.

    `read_only=True` runs each read on its own, with no transaction, and refuses writes.
    """

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False) -> None:
        self._engine = engine
        self._read_only = read_only
        self._events: list[EventEnvelope] = []
        self._writes: _Writes = []
        self._after_commit: list[AfterCommit] = []
        self._conn: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._forget_tracked()

    async def __aenter__(self) -> Any:
        self._events, self._writes, self._after_commit, self._transaction = [], [], [], None
        self._forget_tracked()
        self._after_enter()
        return self

    def _after_enter(self) -> None:
        """Subclasses build their repositories on this unit here."""

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.rollback()
        finally:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await (await driver_pool(self._engine)).release(conn)

    async def connection(self) -> asyncpg.Connection:
        """The connection, for a read: inside the transaction (started now if need be) and
        after the writes queued so far."""
        if self._conn is None:
            self._conn = await (await driver_pool(self._engine)).acquire()
        if not self._read_only:
            if self._transaction is None:
                self._transaction = self._conn.transaction()
                await self._transaction.start()
            await self._send_writes(self._conn)
        return self._conn

    def write(self, sql: str, *args: Any) -> None:
        """Queue an INSERT, UPDATE or DELETE (numbered `$n` parameters) for commit."""
        self.write_many(sql, [args])

    def write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work writes nothing")
        if rows:
            self._writes.append((sql, rows))

    async def _send_writes(self, conn: asyncpg.Connection) -> None:
        writes, self._writes = self._writes, []
        for sql, rows in writes:
            if len(rows) == 1:
                await conn.execute(sql, *rows[0])
            else:
                await conn.executemany(sql, rows)

    def publish(self, event: EventEnvelope) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work publishes nothing")
        self._events.append(event)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once this unit has committed; never if it rolls back."""
        self._after_commit.append(callback)

    async def claim_events(self, consumer: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Claim (event id, subject) pairs in `consumer`'s inbox, in this unit's transaction: the
        ids claimed now (the others were processed before)."""
        rows = await (await self.connection()).fetch(
            _CLAIM_EVENTS_NUMBERED, consumer, [e[0] for e in events], [e[1] for e in events]
        )
        return {row["event_id"] for row in rows}

    async def commit(self) -> None:
        await self._commit()
        callbacks, self._after_commit = self._after_commit, []
        await _run_after_commit(callbacks)

    async def _commit(self) -> None:
        self._events.extend(await self._collect_domain_events())
        if self._events:
            ensure_publishable(self._engine, (e.subject for e in self._events))
            self.write_many(_OUTBOX_INSERT, [_outbox_row(e) for e in self._events])
            self._events = []
        if self._transaction is None:
            if not self._writes:
                return
            if _combinable(self._writes):
                writes, self._writes = self._writes, []
                failure = await _group_writer(self._engine).submit(writes)
                if failure is not None:
                    raise failure
                return
        await self.connection()  # in the transaction, with every queued write sent
        transaction, self._transaction = self._transaction, None
        await transaction.commit()

    async def rollback(self) -> None:
        self._events, self._writes, self._after_commit = [], [], []
        self._forget_tracked()
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            if self._conn is not None and not self._conn.is_closed():
                await transaction.rollback()

    async def recall_request(self, scope: str, request_id: str, fingerprint: str) -> str | None:
        row = await (await self.connection()).fetchrow(_RECALL, scope, request_id)
        return None if row is None else _recalled(row["fingerprint"], row["resource"], fingerprint)

    async def remember_request(self, scope: str, request_id: str, fingerprint: str, resource: str) -> None:
        self.write(_REMEMBER, scope, request_id, fingerprint, resource)


_group_writers: weakref.WeakKeyDictionary[AsyncEngine, Batcher[_Writes, Exception | None]] = (
    weakref.WeakKeyDictionary()
)


def _group_writer(engine: AsyncEngine) -> Batcher[_Writes, Exception | None]:
    """The group commit of write-only units (their queued writes, `_combinable`) on `engine`'s
    database: each unit's answer is None once it is stored, or the error that refused it."""
    batcher = _group_writers.get(engine)
    if batcher is None:
        engine_ref = weakref.ref(engine)  # the batcher must not keep its own key alive

        async def store(units: list[_Writes]) -> list[Exception | None]:
            live = engine_ref()
            if live is None:
                raise RuntimeError("the database engine was disposed")
            async with driver_connection(live) as conn:
                return await _store_units(conn, units)

        batcher = _group_writers[engine] = Batcher(store, max_batch=200)
    return batcher


async def _store_units(conn: asyncpg.Connection, units: list[_Writes]) -> list[Exception | None]:
    if len(units) > 1:
        merged: dict[str, list[tuple[Any, ...]]] = {}
        for writes in units:
            for sql, rows in writes:
                merged.setdefault(sql, []).extend(rows)
        shared = combine_inserts(list(merged.items()))
        if shared is not None:
            try:
                await conn.execute(shared[0], *shared[1])
            except asyncpg.PostgresError:
                pass  # one unit's conflict refuses the whole statement: each goes alone, below
            else:
                return [None] * len(units)
    outcomes: list[Exception | None] = []
    for writes in units:
        combined = combine_inserts(writes)
        assert combined is not None  # checked by _combinable at commit
        try:
            await conn.execute(combined[0], *combined[1])
        except asyncpg.PostgresError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


_INSERT_VALUES = re.compile(
    r"^INSERT INTO (?P<target>\w+ \([\w, ]+\)) VALUES \((?P<values>[$\d, ]+)\)(?P<tail> ON CONFLICT DO NOTHING)?$"
)
_MAX_PARAMETERS = 30_000  # PostgreSQL's protocol allows 32,767 per statement


@functools.lru_cache(maxsize=256)
def _plain_insert(sql: str) -> tuple[str, int, str] | None:
    """(target, parameters per row, tail) of `INSERT INTO t (a, b) VALUES ($1, $2)`, or None for
    any other statement (including VALUES that are not $1..$n in order)."""
    match = _INSERT_VALUES.match(sql)
    if match is None:
        return None
    values = [v.strip() for v in match["values"].split(",")]
    if values != [f"${i}" for i in range(1, len(values) + 1)]:
        return None
    return match["target"], len(values), match["tail"] or ""


def _combinable(writes: _Writes) -> bool:
    """Whether `combine_inserts` makes one statement of `writes`."""
    parameters = 0
    for sql, rows in writes:
        plain = _plain_insert(sql)
        if plain is None:
            return False
        parameters += plain[1] * len(rows)
    return bool(writes) and parameters <= _MAX_PARAMETERS


def combine_inserts(writes: _Writes) -> tuple[str, list[Any]] | None:
    """Plain INSERT ... VALUES statements (each with one or more rows) as one statement, or None
    when any is something else or there are too many parameters. The statements are independent
    (PostgreSQL checks foreign keys at the end of the statement, so a row may refer to one
    inserted alongside it)."""
    if not _combinable(writes):
        return None
    parts: list[str] = []
    args: list[Any] = []
    for sql, rows in writes:
        plain = _plain_insert(sql)
        assert plain is not None  # checked above
        target, width, tail = plain
        tuples = []
        for row in rows:
            first = len(args) + 1
            tuples.append("(" + ", ".join([f"${n}" for n in range(first, first + width)]) + ")")
            args.extend(row)
        parts.append(f"INSERT INTO {target} VALUES {', '.join(tuples)}{tail}")
    if len(parts) == 1:
        return parts[0], args
    chained = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts[:-1]))
    return f"WITH {chained} {parts[-1]}", args
