"""Comms and entity resolution close the loop by themselves (issue 14): a call data import's
numbers become entity source records of the dataset's region and job (DatasetIdentifiersObserved),
entity resolution links them (RecordLinked), and comms attributes each number to its entity.
The whole platform runs as users run it (`platform_stack`); the import goes through the CLI."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from .conftest import Cli, PlatformStack

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 60


def wait_for(check: Callable[[], bool], stack: PlatformStack, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT_SECONDS} s\n{stack.describe()}")
        time.sleep(0.5)


def test_an_imported_cdrs_numbers_are_resolved_and_attributed(
    platform_stack: PlatformStack, platform_cli_for: Callable[[str], Cli], tmp_path: Path
) -> None:
    base = uuid.uuid4().int % 99_000
    numbers = [f"+4477009{base + i:05d}" for i in range(3)]
    rows = [
        {
            "start_time": f"2024-03-04T09:0{i}:00Z",
            "duration": "60",
            "calling_number": numbers[0],
            "called_number": numbers[1 + i % 2],
            "event_type": "voice",
            "imei": "35693803564380",
        }
        for i in range(4)
    ]
    path = tmp_path / "calls.csv"
    pl.DataFrame(rows).write_csv(path)
    job = f"regions/EMSOU/jobs/e2e-{uuid.uuid4().hex[:8]}"
    analyst = platform_cli_for("analyst.emsou")

    imported = analyst.run(
        "comms", "import-cdr", str(path), "--region", "EMSOU", "--job", job, "--format", "json"
    )
    dataset = json.loads(imported.stdout)["dataset"]["name"]

    def records() -> list[list[str]]:
        out = platform_stack.sql(
            "entity",
            "SELECT region, record_type, source_record_id, job FROM source_records "
            f"WHERE source_system = 'comms' AND source_record_id LIKE '{dataset}/%' ORDER BY source_record_id",
        )
        return [line.split("|") for line in out.splitlines() if line]

    wait_for(lambda: len(records()) == len(numbers), platform_stack, "entity keeps the dataset's numbers")
    assert records() == [["EMSOU", "PHONE", f"{dataset}/{n}", job] for n in sorted(numbers)]

    def attributed() -> dict[str, str]:
        out = platform_stack.sql(
            "comms",
            "SELECT identifier, entity_id FROM attributions "
            f"WHERE region = 'EMSOU' AND source = 'entity-resolution' AND record LIKE 'regions/EMSOU/records/%' "
            f"AND identifier IN ({', '.join(repr(n) for n in numbers)})",
        )
        return dict(line.split("|") for line in out.splitlines() if line)

    wait_for(lambda: len(attributed()) == len(numbers), platform_stack, "comms attributes every number")
    entity_ids = platform_stack.sql(
        "entity",
        f"SELECT source_record_id, entity_id FROM source_records WHERE source_record_id LIKE '{dataset}/%'",
    )
    by_number = {
        rid.rsplit("/", 1)[1]: e for rid, e in (line.split("|") for line in entity_ids.splitlines() if line)
    }
    assert attributed() == by_number
    shown = analyst.run(
        "--purpose", "Op E2E-LOOP", "comms", "index", numbers[0], "--region", "EMSOU", "--format", "json"
    )
    assert by_number[numbers[0]] in {a["entity_id"] for a in json.loads(shown.stdout)["attributions"]}
