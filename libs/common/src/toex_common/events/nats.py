"""Connecting to NATS the same way everywhere: reconnect forever, named client."""

from __future__ import annotations

import logging
import ssl

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)


async def connect(
    url: str, name: str, *, connect_timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> Client:
    async def on_disconnect() -> None:
        log.warning("disconnected from NATS; buffering and reconnecting")

    async def on_reconnect() -> None:
        log.info("reconnected to NATS")

    async def on_error(exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    return await nats.connect(
        url,
        name=name,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        tls=tls,
    )
