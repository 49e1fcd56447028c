"""Comms settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

import os
from pathlib import Path

from toex_common.config import ServiceSettings


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "toex" / "comms"


class Settings(ServiceSettings):
    service_name: str = "comms"
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex_comms"
    grpc_port: int = 50054
    service_client_id: str = "toex-comms"
    # Where imported datasets are kept as Parquet (one directory per dataset). Replicas share
    # it (in Kubernetes, a ReadWriteMany volume): each names its uploads and staged imports with
    # its host name, process id and a token drawn at start.
    data_dir: Path = _default_data_dir()
    # An upload, export or staged import of another process (or a dataset directory the
    # database does not list) untouched this long is taken as left by a killed process and
    # removed: at start and every hour. What this host's earlier process left goes at start.
    abandoned_files_seconds: float = 24 * 3600.0
    # Largest file accepted by an import.
    # Larger uploads are refused before they fill the disk. 1 GiB holds ten million call records
    # (the benchmark's file is 659 MB); raise it per installation if a provider sends more.
    max_upload_bytes: int = 1024**3
    # Rows per batch while importing: bounds the import's memory.
    import_batch_rows: int = 500_000
    # Consume tasking JobCreated, entity RecordLinked, EntitiesMerged and EntitySplit, and
    # tasking's job access events (grants).
    consume_events: bool = True
