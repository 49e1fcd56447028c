"""`toex national pack` against a real oversight service (real PostgreSQL, nats-server and
Keycloak tokens): the workbook's figures are the read model's, per region and per requesting
force, and a supervisor's pack of another region is refused."""

from __future__ import annotations

import asyncio
import re
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner, Result
from toex.tasking.events.v2 import events_pb2 as ev
from toex_cli.main import main
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.regions import Region

from .conftest import Oversight, Regions
from .events import job_lifecycle

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
EARLIER = NOW - timedelta(days=3)
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


async def publish_job(regions: Regions, region: Region, force: Force, **options: Any) -> None:
    job = f"regions/{region.value}/jobs/{uuid.uuid4().hex[:12]}"
    for position, (message, _) in enumerate(job_lifecycle(job, **options)):
        if isinstance(message, ev.JobCreated):
            message.requesting_force = force.to_proto()  # type: ignore[assignment]
            # Every region's jobs are county lines, but LEICS's: child sexual exploitation.
            threat = ThreatCategory.CSE if force is Force.parse("LEICS") else ThreatCategory.CCE_COUNTY_LINES
            message.threat_category = threat.to_proto()  # type: ignore[assignment]
        await regions.publish(message, region, "tasking", occurred_at=EARLIER + timedelta(minutes=position))


def sheet_rows(path: Path, wanted: str) -> list[list[str]]:
    with zipfile.ZipFile(path) as book:
        strings = [
            "".join(t.text or "" for t in si.iter(f"{{{NS['m']}}}t"))
            for si in ElementTree.fromstring(book.read("xl/sharedStrings.xml")).findall("m:si", NS)
        ]
        names = [
            s.get("name")
            for s in ElementTree.fromstring(book.read("xl/workbook.xml")).iter(f"{{{NS['m']}}}sheet")
        ]
        root = ElementTree.fromstring(book.read(f"xl/worksheets/sheet{names.index(wanted) + 1}.xml"))
    rows: list[list[str]] = []
    for row in root.iter(f"{{{NS['m']}}}row"):
        rows += [[] for _ in range(int(row.get("r", "1")) - 1 - len(rows))]
        cells: list[str] = []
        for cell in row.findall("m:c", NS):
            column = ord(re.match(r"[A-Z]", cell.get("r", "A")).group(0)) - ord("A")  # type: ignore[union-attr]
            cells += [""] * (column - len(cells))
            value = cell.findtext("m:v", "", NS)
            cells.append(strings[int(value)] if cell.get("t") == "s" else value)
        rows.append(cells)
    return rows


async def pack(oversight: Oversight, username: str, *args: str) -> Result:
    assert oversight.app is not None
    env = {
        "TOEX_TOKEN": oversight.tokens[username],
        "TOEX_OVERSIGHT_ADDR": f"127.0.0.1:{oversight.app.port}",
        "TOEX_PURPOSE": "quarterly return",
        "TOEX_INSTALLATIONS": None,
        "TOEX_CONFIG_DIR": str(Path.cwd() / ".no-config"),
    }
    return await asyncio.to_thread(
        CliRunner().invoke, main, ["national", "pack", *args], env=env, catch_exceptions=False
    )


async def test_the_pack_holds_the_read_models_figures_per_region_and_force(
    oversight: Oversight, regions: Regions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    notts, leics, met = Force.NOTTINGHAMSHIRE, Force.LEICESTERSHIRE, Force.METROPOLITAN
    for _ in range(2):
        await publish_job(
            regions, Region.EMSOU, notts, due=NOW, delivered=EARLIER + timedelta(hours=1), rating=4
        )
    await publish_job(regions, Region.EMSOU, leics, due=EARLIER + timedelta(days=1))  # open, overdue
    await publish_job(regions, Region.LONDON, met, due=EARLIER, delivered=EARLIER + timedelta(days=1))
    published = len(regions.published)
    await oversight.until(lambda answer: answer.total.events_counted >= published)
    period = f"{(EARLIER - timedelta(days=1)).date()}..{NOW.date()}"

    target = tmp_path / "pack.xlsx"
    result = await pack(oversight, "national_coordinator.national", "--period", period, "-o", str(target))
    assert result.exit_code == 0, result.output
    jobs = sheet_rows(target, "Jobs by region")
    header = jobs[3]
    by_region = {row[0]: row for row in jobs[4:] if row}
    assert by_region["EMSOU"][header.index("raised")] == "3"
    assert by_region["EMSOU"][header.index("overdue")] == "1"
    assert by_region["LONDON"][header.index("delivered late")] == "1"
    assert by_region["TOTAL"][header.index("raised")] == "4"
    forces = sheet_rows(target, "Jobs by force")
    header = forces[3]
    by_force = {row[0]: row for row in forces[4:] if row}
    assert len(by_force) == len(Force)
    assert by_force["NOTTS"][header.index("raised")] == "2"
    assert by_force["NOTTS"][header.index("delivered on time")] == "2"
    assert by_force["LEICS"][header.index("overdue")] == "1"
    assert by_force["MET"][header.index("delivered late")] == "1"
    assert by_force["WYP"][header.index("raised")] == "0"
    threats = sheet_rows(target, "Threat categories")
    header = threats[3]
    by_threat = {row[0]: row for row in threats[4:] if row}
    assert by_threat["TOTAL"][header.index("cce")] == "3" and by_threat["TOTAL"][header.index("cse")] == "1"

    # One region: the supervisor of EMSOU may have EMSOU's pack, as a PDF, and not LONDON's.
    own = tmp_path / "emsou.pdf"
    result = await pack(
        oversight, "supervisor.emsou", "--period", period, "--region", "EMSOU", "-o", str(own)
    )
    assert result.exit_code == 0, result.output
    assert own.read_bytes().startswith(b"%PDF")
    other = tmp_path / "london.pdf"
    result = await pack(
        oversight, "supervisor.emsou", "--period", period, "--region", "LONDON", "-o", str(other)
    )
    assert result.exit_code == 1 and "PERMISSION_DENIED" in result.output
    assert not other.exists()
