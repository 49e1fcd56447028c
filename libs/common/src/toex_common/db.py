"""PostgreSQL through SQLAlchemy 2.x (asyncio, asyncpg). One database per service.

The platform tables every service carries (outbox, inbox, idempotency keys, audit log) are
defined here and created by each service's first Alembic migration with
`create_platform_schema()`.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    exc,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

platform_metadata = MetaData()

outbox_table = Table(
    "outbox",
    platform_metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
)

inbox_table = Table(
    "inbox",
    platform_metadata,
    Column("consumer", String(128), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)

idempotency_table = Table(
    "idempotency_keys",
    platform_metadata,
    Column("scope", String(256), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("resource", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("scope", "request_id"),
)

audit_table = Table(
    "audit_log",
    platform_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor_subject", Text, nullable=False),
    Column("actor_username", Text, nullable=False),
    Column("actor_roles", ARRAY(Text), nullable=False),
    Column("actor_region", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("resources", ARRAY(Text), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("peer", Text, nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

OUTBOX_CHANNEL = "toex_outbox"

# The audit log is append-only: no update, delete or truncate, even by the service's own role.
# A superuser could still disable the trigger; the hash chain is what detects that.
_AUDIT_GUARD = [
    """
    CREATE OR REPLACE FUNCTION toex_audit_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION toex_audit_append_only()
    """,
    """
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION toex_audit_append_only()
    """,
    "CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL",
    # Wake the relay when events are committed, without a round trip of the writer's own.
    f"""
    CREATE OR REPLACE FUNCTION toex_outbox_notify() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION toex_outbox_notify()
    """,
]


def create_platform_schema(op: Any) -> None:
    """Call from a service's first migration: `create_platform_schema(op)`."""
    bind = op.get_bind()
    platform_metadata.create_all(bind)
    for statement in _AUDIT_GUARD:
        op.execute(statement)


def drop_platform_schema(op: Any) -> None:
    bind = op.get_bind()
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    platform_metadata.drop_all(bind)
    op.execute("DROP FUNCTION IF EXISTS toex_audit_append_only()")
    op.execute("DROP FUNCTION IF EXISTS toex_outbox_notify()")


def create_engine(url: str, *, pool_size: int = 20, max_overflow: int = 0, echo: bool = False) -> AsyncEngine:
    """An engine whose pool holds up to `pool_size` connections; a call that finds them all in
    use waits for one (opening and closing overflow connections under load cost more than the
    wait). The pool never hands out a connection the server has closed (after a
    PostgreSQL restart, say). asyncpg notices a closed socket as soon as the server drops it, so
    the check on checkout costs nothing; SQLAlchemy's `pool_pre_ping` would cost three round
    trips (BEGIN, a ping, ROLLBACK) on every checkout instead."""
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, echo=echo, json_deserializer=json_loads
    )
    event.listen(engine.sync_engine.pool, "checkout", _discard_if_closed)
    return engine


def json_loads(text: str) -> Any:
    """A JSON or JSONB column's value: orjson's reading (several times quicker than the standard
    library's, which decoding the records of an entity read spent most of its time in), or the
    standard library's wherever a run of 19 or more digits could be an integer beyond 64 bits,
    which orjson would read as a float, losing digits, where the standard library keeps them."""
    if _NINETEEN_DIGITS not in text.encode().translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# Every digit read as 0, so that a run of 19 is a plain substring search: about a tenth of the
# time a regular expression's search takes.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_NINETEEN_DIGITS = b"0" * 19


def _discard_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise exc.DisconnectionError("the server closed this connection")


DRIVER_POOL_SIZE = 10


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A connection from an asyncpg pool on the engine's database, for hot paths that run
    prepared statements directly: no statement compilation, no result wrapping, and none of the
    pool bookkeeping SQLAlchemy does per checkout (about a tenth of a millisecond a call). The
    caller manages its own transaction (`async with conn.transaction():`). JSON and JSONB
    parameters are passed as serialised text and come back decoded. The pool is made on first
    use and closed when the engine is disposed."""
    async with (await driver_pool(engine)).acquire() as conn:
        yield conn


async def session_driver(session: AsyncSession) -> asyncpg.Connection:
    """The session's own asyncpg connection, inside the session's transaction (begun now if
    the session has sent nothing yet): for COPY and prepared statements on a unit of work's hot
    path, written and read with the rest of its transaction."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():  # SQLAlchemy's driver begins on the first statement
        await connection.exec_driver_sql("SELECT 1")
    return driver  # type: ignore[no-any-return]


async def driver_pool(engine: AsyncEngine) -> asyncpg.Pool:
    """The asyncpg pool `driver_connection` draws from (for callers that acquire and release
    themselves)."""
    pool = _driver_pools.get(engine)
    return pool if pool is not None else await _driver_pool(engine)


_driver_pools: weakref.WeakKeyDictionary[AsyncEngine, asyncpg.Pool] = weakref.WeakKeyDictionary()
# One lock per engine, made in the engine's own event loop (a lock made at import would belong to
# whichever loop first waited on it).
_pool_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _driver_pool(engine: AsyncEngine) -> asyncpg.Pool:
    lock = _pool_locks.setdefault(engine, asyncio.Lock())
    async with lock:
        pool = _driver_pools.get(engine)
        if pool is None:
            url, tls = driver_dsn(engine)
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=DRIVER_POOL_SIZE,
                init=_init_driver_connection,
                reset=_reset,
                **tls,  # type: ignore[arg-type]
            )
            _driver_pools[engine] = pool
            event.listen(engine.sync_engine, "engine_disposed", _closer(engine, pool), once=True)
        return pool


def driver_dsn(engine: AsyncEngine) -> tuple[str, dict[str, str]]:
    """The engine's database as a plain asyncpg DSN, and the connect arguments the DSN cannot
    carry: the engine's `?ssl=verify-full` is a connect argument (in a DSN asyncpg would take it
    for a server setting); the CA then comes from PGSSLROOTCERT, as for the engine's own pool."""
    query = dict(engine.url.query)
    tls = {"ssl": str(mode)} if (mode := query.pop("ssl", None)) else {}
    return engine.url.set(drivername="postgresql", query=query).render_as_string(hide_password=False), tls


def _closer(engine: AsyncEngine, pool: asyncpg.Pool) -> Callable[[Any], None]:
    engine_ref = weakref.ref(engine)

    def close(_: Any) -> None:
        owner = engine_ref()
        if owner is not None and _driver_pools.get(owner) is pool:
            del _driver_pools[owner]
        pool.terminate()

    return close


async def _init_driver_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=str, decoder=json.loads, schema="pg_catalog", format="text")


async def _reset(conn: asyncpg.Connection) -> None:
    # Units of work end their transactions and keep no session state (no LISTEN, no SET, no
    # session locks), so the reset asyncpg would run on every release (a round trip) is needed
    # only after a failure left a transaction open.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def connection_lost(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a lost or refused database connection: the
    database restarting, failing over or dropping the service's sessions. Worth trying again;
    not a bug to report as INTERNAL."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.OperatorInterventionError
            | ConnectionError,
        ):
            return True
        if isinstance(current, asyncpg.exceptions.InterfaceError) and "connection is closed" in str(current):
            return True
        # A connection whose previous operation (a COPY, say) the server cut off: asyncpg still
        # counts that operation as under way. SQLAlchemy discards the connection on the failed
        # rollback that follows, so the next attempt gets a new one.
        if isinstance(current, asyncpg.exceptions.InternalClientError) and "another operation" in str(
            current
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
