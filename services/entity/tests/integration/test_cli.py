"""`toex entity ...` against a running service: bulk CSV resolution, show, search, explain."""

from __future__ import annotations

import asyncio
import csv
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from toex_cli.main import main

pytestmark = pytest.mark.integration


async def run_cli(entity_service, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    token = entity_service.token("analyst.emsou")
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        main,
        ["--entity-addr", f"127.0.0.1:{entity_service.app.port}", "--purpose", "Op TEST", *args],
        env={"TOEX_TOKEN": token},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


async def test_resolve_csv_writes_ids_and_entities(entity_service, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    source = tmp_path / "people.csv"
    rows = [
        ["NOM_REF", "Forename", "Surname", "DOB", "Address", "Town", "Post Code", "Mobile"],
        [f"a-{tag}", "Kayleigh", f"Morr{tag}", "02/11/2007", "3 Station Road", "Chesterfield", "s40 1aa", ""],
        [f"b-{tag}", "Kayley", f"Morr{tag}", "2007-11-02", "3 Station Rd", "Chesterfield", "S40 1AA", ""],
        [f"c-{tag}", "Tom", f"Other{tag}", "1980-01-01", "9 High St", "Leicester", "LE1 1AA", "07700 900999"],
    ]
    with source.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    out = tmp_path / "out.csv"
    code, stdout, stderr = await run_cli(
        entity_service,
        "entity",
        "resolve-csv",
        "--region",
        "EMSOU",
        "--input",
        str(source),
        "--id-column",
        "NOM_REF",
        "--output",
        str(out),
        "--map",
        "Mobile=phone",
    )
    assert code == 0, stderr
    assert "Forename -> given_name" in stderr and "Post Code -> postcode" in stderr
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert [r["id"] for r in written] == [f"a-{tag}", f"b-{tag}", f"c-{tag}"]
    entities = [r["entity_id"] for r in written]
    assert entities[0] == entities[1] != entities[2]
    assert all(len(e) == 32 for e in entities)

    code, stdout, stderr = await run_cli(entity_service, "entity", "show", entities[0])
    assert code == 0, stderr
    assert f"csv/a-{tag}" in stdout and f"csv/b-{tag}" in stdout
    assert "RECORD_LINKED" in stdout and "system:probabilistic" in stdout

    code, stdout, _ = await run_cli(entity_service, "entity", "search", "--phone", "+447700900999")
    assert entities[2] in stdout

    code, stdout, stderr = await run_cli(entity_service, "entity", "show", entities[0], "--format", "json")
    import json

    records = json.loads(stdout)["records"]
    code, stdout, stderr = await run_cli(
        entity_service, "entity", "explain", records[0]["name"], records[1]["name"]
    )
    assert code == 0, stderr
    assert "probability" in stdout and "surname" in stdout
