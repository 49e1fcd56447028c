"""Connecting to NATS the same way everywhere: reconnect forever, named client.

The client is nats-py's, with two of its per-message steps made cheaper; each consumer of every
service pays them for every event it takes (bench/results/oversight-federation.md, 2026-12-05
14:29 to 16:05):

- a message already received is handed to `fetch` as it is. nats-py's `next_msg` starts a task,
  a `wait_for` timer and a uuid for each message, which only waiting needs: about a third of a
  consumer's CPU per event before its handler runs;
- headers are parsed in one pass over the decoded block, with the same rules as nats-py's
  `_parse_header_lines` (a line without a colon, or a name that is not ASCII or holds
  whitespace, is skipped; names and values stripped; values decoded as UTF-8 with replacement).
  A test holds the two to the same answers.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)


class _QueuedFirst(Subscription):
    """A subscription without a callback whose `next_msg` returns a message already waiting at
    once, as nats-py's would after its task and timer."""

    async def next_msg(self, timeout: float | None = 1.0) -> Msg:  # noqa: ASYNC109 (nats-py's signature)
        queue = self._pending_queue
        if not queue.empty() and not self._conn.is_closed:
            msg: Msg = queue.get_nowait()
            self._pending_size -= len(msg.data)
            queue.task_done()
            return msg
        return await super().next_msg(timeout)


# What `bytes.strip()` strips (ASCII whitespace), for the same strip of a decoded name or value.
_ASCII_SPACE = " \t\n\r\x0b\x0c"


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """A NATS header block (`Name: Value\\r\\n` per line) as nats-py's `_parse_header_lines`
    reads it, decoded once rather than line by line (UTF-8 resynchronises at every ASCII byte, so
    the separators and each value decode the same either way)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name.isascii():
            continue
        key = name.strip(_ASCII_SPACE)
        # An ASCII name holds whitespace only if it holds a space or is not printable: the
        # character-by-character test runs only then.
        if (" " in key or not key.isprintable()) and any(c.isspace() for c in key):
            continue
        out[key] = value.strip(_ASCII_SPACE)
    return out


class FastClient(Client):
    """nats-py's client with the two cheaper steps above."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return parse_header_lines(raw)

    async def subscribe(self, *args: Any, **kwargs: Any) -> Subscription:
        sub = await super().subscribe(*args, **kwargs)
        if sub._cb is None:
            sub.__class__ = _QueuedFirst
        return sub


async def connect(
    url: str, name: str, *, connect_timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> Client:
    async def on_disconnect() -> None:
        log.warning("disconnected from NATS; buffering and reconnecting")

    async def on_reconnect() -> None:
        log.info("reconnected to NATS")

    async def on_error(exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    # As nats.connect passes them (its client's annotations say int where seconds are meant).
    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": connect_timeout,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "error_cb": on_error,
        "tls": tls,
    }
    client = FastClient()
    await client.connect(url, **options)
    return client
