"""Entity service settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "entity"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_entity"
    grpc_port: int = 50052
    service_client_id: str = "toex-entity"
    # Consume tasking JobCreated and PND PndResultReceived events, and keep the job grants from
    # tasking's events.
    consume: bool = True
