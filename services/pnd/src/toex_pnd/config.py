"""PND sync settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "pnd"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_pnd"
    grpc_port: int = 50053
    service_client_id: str = "toex-pnd"
    # The PND's bulk interface (the simulator in development: python -m toex_pnd.simulator).
    pnd_url: str = "http://127.0.0.1:50063"
    # How the platform names itself to the PND as the submitting organisation.
    pnd_organisation: str = "TOEX"
    pnd_timeout_seconds: float = 10.0
    # Outbound queue: submissions per bulk batch, parallel senders (records are spread over
    # them by a hash, so each record's versions still go in order), idle polling.
    dispatch_batch_size: int = 500
    dispatch_workers: int = 2
    dispatch_poll_seconds: float = 0.5
    # Retries: exponential backoff from base to cap, with jitter.
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 300.0
    # Scheduled reconciliation; 0 turns it off.
    reconcile_interval_seconds: float = 3600.0
    # Consume tasking's job access events (the job grants; without them no grant is kept or ended).
    consume: bool = True
