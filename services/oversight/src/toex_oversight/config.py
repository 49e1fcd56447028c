"""Oversight settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from typing import Literal

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "oversight"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_oversight"
    grpc_port: int = 50056
    # Count every region's events (tasking, safeguarding, PND, entity resolution). Off, the
    # service answers from what it has counted so far.
    consume_events: bool = True
    # Events fetched and counted in one transaction by each consumer: a region catching up after
    # a partition is counted in batches this large.
    consumer_batch: int = 256
    # How long an idle consumer waits for a batch to fill before taking what has arrived: the
    # most an event waits to be counted when nothing is queued (the overview's lag).
    consumer_fetch_wait_seconds: float = 0.1
    # How the reporter publishes its value-free copies (entrypoints/reporter.py): "direct",
    # straight to OVERSIGHT and the original acknowledged once the stream has the copy (the hub's
    # inbox drops a copy published twice), or "outbox", through the transactional outbox.
    reporter: Literal["direct", "outbox"] = "direct"
    # At the hub: how often the sources of the hub's streams are checked, and a source silent for
    # `source_stalled_seconds` restarted (a region's link back after a partition is then pulled
    # from within seconds, not on nats-server's own retry schedule: toex_common.events.sources).
    # 0: never.
    source_check_seconds: float = 2.0
    source_stalled_seconds: float = 10.0
