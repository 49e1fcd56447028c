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
    # Deconfliction across installations, in a region installation (TOEX_INSTALLATION=region):
    # the keys the region's identifier fingerprints are made with, one per line,
    # `<key id> <key in base64, at least 32 bytes>`; every key listed is published under (two
    # while a key is rotated; docs/operations.md). Every region holds the same keys; the hub
    # holds none. Unset in a region installation: no fingerprints, so no deconfliction with
    # other regions (logged at start). Not read by a single installation or the hub.
    deconfliction_key_file: str = ""
    # How often a region installation publishes the fingerprints of identifiers not yet
    # published under every key (at start: records from before, a new key; then now and again:
    # updated records). Each run reads every identifier key, so not too often.
    fingerprint_backfill_seconds: float = 3600.0
    # The learning worker (service_layer/learning.py): re-estimate the model from the stored
    # person records when at least `learning_min_new_records` are new and they are at least
    # `learning_growth` of what the last estimate saw; the person sample goes to Splink, in a
    # separate process limited to one DuckDB thread and `learning_memory_limit`. Checked every
    # `learning_interval_seconds`. `learning_sample_cap`: how many person records the sample
    # kept as records are written holds (domain/sample.py; the migration that creates it
    # backfills it to this cap), so at most that many go to Splink.
    learning: bool = True
    learning_interval_seconds: float = 10.0
    learning_min_new_records: int = 500
    learning_growth: float = 0.1
    learning_sample_cap: int = 200_000
    learning_memory_limit: str = "1GB"
    # Re-estimate also on a schedule: when the last estimate is this many seconds old (0: only
    # by the record threshold) and at least one person record is new since it.
    learning_schedule_seconds: float = 86_400.0
