"""The data directory over a real database: on start, comms removes the dataset directories an
import killed between publishing and committing left, and keeps every dataset the database lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex_comms import demo

from .conftest import Tokens, running
from .test_comms_service import ANALYST, csv_bytes, import_cdr

pytestmark = pytest.mark.integration


async def test_a_start_removes_old_dataset_directories_the_database_never_listed(
    database: str,
    nats_server,
    keycloak,
    comms_tokens: Tokens,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    args = (database, nats_server.url, keycloak.issuer, comms_tokens, data)
    async with running(*args, consume_events=False) as comms:
        imported = await import_cdr(comms, csv_bytes(demo.demo_cdr_rows()))
    kept = data / "datasets" / imported.dataset.name.rsplit("/", 1)[-1]
    # Published by an import killed before its commit: no dataset row names it.
    orphan = data / "datasets" / ("0" * 32)
    orphan.mkdir()
    (orphan / "rows-00000.parquet").write_bytes((next(kept.glob("rows-*.parquet"))).read_bytes())

    async with running(*args, consume_events=False):
        assert orphan.exists(), "a young directory may be an import about to commit"

    monkeypatch.setenv("TOEX_ABANDONED_FILES_SECONDS", "0")  # every directory old enough
    async with running(*args, consume_events=False) as comms:
        assert not orphan.exists()
        assert kept.is_dir()
        listed = await comms.stub.ListDatasets(
            pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
        )
        assert [(d.name, d.rows_accepted) for d in listed.datasets] == [
            (imported.dataset.name, len(demo.demo_cdr_rows()))
        ]
