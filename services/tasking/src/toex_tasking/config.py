"""Tasking settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "tasking"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_tasking"
    grpc_port: int = 50051
    service_client_id: str = "toex-tasking"
    # How often open jobs are checked against their due time.
    overdue_scan_seconds: float = 30.0
    # "keycloak" reads researchers from Keycloak's admin API; "static" uses the demo users.
    directory: str = "keycloak"
    # WatchInbox: how often a watch looks for new items, and how long one stream lasts before
    # the server ends it (the client continues with its last resume token).
    inbox_poll_seconds: float = 1.0
    inbox_watch_seconds: float = 600.0
    # How many days the requesting officer's one-time feedback link works after delivery.
    feedback_token_days: float = 30.0
