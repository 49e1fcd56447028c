"""Scanning everything an installation holds for values it must not hold (integration tests).

A leak test proves a negative, so it reads everything, not what it expects to find: every message
of every stream on a nats-server (subject, headers and payload) and every row of every table of a
database. Each scan gives (where, bytes) pairs for `leaks` to search; a test also asserts the scan
finds the installation's own values, so a scan that reads nothing cannot pass.
"""

from __future__ import annotations

import asyncpg
import nats
import nats.js.errors

Scanned = list[tuple[str, bytes]]


async def stream_messages_all(nats_url: str) -> list[tuple[str, str, bytes, bytes]]:
    """Every message of every stream on the server at `nats_url` (a user allowed to read them
    all): (stream, subject, payload, subject + headers + payload)."""
    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    js = nc.jetstream()
    found: list[tuple[str, str, bytes, bytes]] = []
    try:
        for info in await js.streams_info():
            name = info.config.name or ""
            if not info.state.messages:
                continue
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except nats.js.errors.NotFoundError:
                    continue
                subject, data = msg.subject or "", msg.data or b""
                headers = repr(sorted((msg.headers or {}).items())).encode()
                found.append((name, subject, data, subject.encode() + headers + data))
    finally:
        await nc.close()
    return found


async def stream_contents(nats_url: str) -> Scanned:
    """Every message of every stream on the server at `nats_url`, for `leaks`:
    ("<stream>:<subject>", subject + headers + payload)."""
    return [(f"{stream}:{subject}", body) for stream, subject, _, body in await stream_messages_all(nats_url)]


async def table_contents(dsn: str) -> Scanned:
    """Every row of every table of the database at `dsn`: ("<database>.<table>", the row's values
    joined, bytea raw and the rest as text)."""
    conn = await asyncpg.connect(dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        rows: Scanned = []
        for table in (t["tablename"] for t in tables):
            for row in await conn.fetch(f'SELECT * FROM "{table}"'):
                values = [v if isinstance(v, bytes) else str(v).encode() for v in row.values()]
                rows.append((f"{database}.{table}", b"\x00".join(values)))
        return rows
    finally:
        await conn.close()


def leaks(scanned: Scanned, hidden: set[str]) -> list[tuple[str, str]]:
    """Where each hidden value appears: (where, value) pairs, sorted; empty when none does."""
    return sorted({(where, value) for where, body in scanned for value in hidden if value.encode() in body})
