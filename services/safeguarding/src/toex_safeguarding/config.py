"""Safeguarding settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "safeguarding"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_safeguarding"
    grpc_port: int = 50055
    # Where the tasking service listens (asked, with the caller's own token, whether the caller
    # may see a job a referral links).
    tasking_address: str = "127.0.0.1:50051"
    # How often statutory clocks are checked for overdue escalation.
    overdue_scan_seconds: float = 30.0
    # Consume triggers (watchlist contacts, advert numbers, safeguarding jobs), tasking's job
    # access events (the job grants; without them no grant is kept or ended) and entity
    # resolution's identity changes (merges, splits, numbers linked to people).
    consume_triggers: bool = True
