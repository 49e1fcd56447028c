"""`toex national pack` against a fake oversight service: what is asked, and what the workbook
and the PDF hold."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import date
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import click
import grpc
import pypdfium2
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2, threat_pb2
from toex_cli.pack import MARKING, gather, parse_pack_period, tables, write_pdf, write_xlsx
from toex_kernel.forces import Force
from toex_kernel.regions import Region

TOKEN = make_jwt(preferred_username="national_coordinator.national", region="NATIONAL")
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


def figures(region: int, raised: int, on_time: int, late: int) -> pb.RegionFigures:
    return pb.RegionFigures(
        region=region,  # type: ignore[arg-type]
        jobs=pb.JobFigures(
            raised=raised,
            open=raised - on_time - late,
            overdue=1,
            delivered_on_time=on_time,
            delivered_late=late,
            states=pb.JobStates(raised=2, delivered=on_time + late),
            types=pb.JobTypes(anpr=raised),
            priorities=pb.Priorities(urgent=raised),
            taken_by=[pb.RegionCount(region=region_pb2.REGION_LONDON, count=3)] if region else [],
            taken_by_other_regions=3 if region else 0,
            feedback=pb.Feedback(rated=4, mean_rating=4.25, by_rating=[0, 0, 1, 1, 2], commented=2),
            threats=[
                pb.ThreatCount(threat_category=threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES, count=7),
                pb.ThreatCount(threat_category=threat_pb2.THREAT_CATEGORY_CSE, count=2),
            ],
        ),
        referrals=pb.ReferralFigures(drafted=2, clocks=pb.StatutoryClocks(met_on_time=1, overdue=1)),
        pnd=pb.PndFigures(accepted=30, rejected=2, reconciliation=pb.PndReconciliation(held=3, stale=1)),
        deconfliction=pb.DeconflictionFigures(
            notices=1, with_regions=[pb.RegionCount(region=region_pb2.REGION_NW, count=1)] if region else []
        ),
    )


def answer_for(request: pb.GetOverviewRequest) -> pb.GetOverviewResponse:
    """The whole answer for no force; a force's own figures (raised = the length of its code)."""
    raised = len(request.force) if request.force else 40
    return pb.GetOverviewResponse(
        period=request.period,
        regions=[figures(region_pb2.REGION_EMSOU, raised, 7, 3)],
        total=figures(0, raised, 7, 3),
        force=request.force,
        notes=["a note from the service"],
    )


class FakeOversight(oversight_pb2_grpc.OversightServiceServicer):
    def __init__(self) -> None:
        self.requests: list[pb.GetOverviewRequest] = []

    def GetOverview(self, request: pb.GetOverviewRequest, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        return answer_for(request)


@pytest.fixture
def oversight() -> Iterator[tuple[FakeOversight, str]]:
    fake = FakeOversight()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    oversight_pb2_grpc.add_OversightServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def toex(run: Callable[..., Result], address: str, *args: str) -> Result:
    return run(
        "national",
        "pack",
        *args,
        env={"TOEX_TOKEN": TOKEN, "TOEX_OVERSIGHT_ADDR": address, "TOEX_PURPOSE": "quarterly return"},
    )


def read_xlsx(path: Path) -> dict[str, list[list[str]]]:
    """Each sheet's cells as text, row by row (shared strings resolved), from the file's XML."""
    with zipfile.ZipFile(path) as book:
        strings = [
            "".join(t.text or "" for t in si.iter(f"{{{NS['m']}}}t"))
            for si in ElementTree.fromstring(book.read("xl/sharedStrings.xml")).findall("m:si", NS)
        ]
        workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
        names = [sheet.get("name", "") for sheet in workbook.iter(f"{{{NS['m']}}}sheet")]
        out: dict[str, list[list[str]]] = {}
        for number, name in enumerate(names, start=1):
            root = ElementTree.fromstring(book.read(f"xl/worksheets/sheet{number}.xml"))
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
            out[name] = rows
            out[f"{name}#xml"] = [[book.read(f"xl/worksheets/sheet{number}.xml").decode()]]
        out["#charts"] = [[n for n in book.namelist() if n.startswith("xl/charts/chart")]]
        return out


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("2026-Q3", "2026-07-01", "2026-09-30"),
        ("2026-q1", "2026-01-01", "2026-03-31"),
        ("2026-09", "2026-09-01", "2026-09-30"),
        ("2028-02", "2028-02-01", "2028-02-29"),
        ("2026", "2026-01-01", "2026-12-31"),
        ("2026-07-01..2026-09-30", "2026-07-01", "2026-09-30"),
    ],
)
def test_pack_periods(text: str, first: str, last: str) -> None:
    period = parse_pack_period(text, date(2026, 10, 2))
    assert (period.first_day, period.last_day) == (first, last)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-Q5", "is not a period"),
        ("2026-13", "is not a period"),
        ("Q3 2026", "is not a period"),
        ("2026-09-31..2026-10-01", "is not a period"),
        ("2026-09-30..2026-07-01", "ends before it starts"),
        ("all", "closed period"),
        ("30d", "closed period"),
        ("2026-07-01..", "closed period"),
    ],
)
def test_bad_pack_periods_are_clear_errors(text: str, says: str) -> None:
    with pytest.raises(click.BadParameter, match=says):
        parse_pack_period(text, date(2026, 10, 2))


def test_gather_asks_for_the_region_then_each_of_its_forces() -> None:
    asked: list[pb.GetOverviewRequest] = []

    def ask(request: pb.GetOverviewRequest) -> pb.GetOverviewResponse:
        asked.append(request)
        return answer_for(request)

    period = parse_pack_period("2026-Q3", date(2026, 10, 2))
    pack = gather(ask, period, Region.EMSOU, None)
    assert [r.force for r in asked] == ["", "DERBYS", "LEICS", "LINCS", "NORTHANTS", "NOTTS"]
    assert all(list(r.regions) == [region_pb2.REGION_EMSOU] for r in asked)
    assert [(code, f.jobs.raised) for code, _, f in pack.forces][-1] == ("NOTTS", 5)

    asked.clear()
    pack = gather(ask, period, None, Force.parse("notts"))
    assert [(r.force, list(r.regions)) for r in asked] == [("NOTTS", [])]
    assert [code for code, _, _ in pack.forces] == ["NOTTS"]

    asked.clear()
    gather(ask, period, None, None)
    assert len(asked) == 1 + len(Force)


def test_the_xlsx_has_a_sheet_per_section_values_definitions_marking_and_charts(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str], tmp_path: Path
) -> None:
    fake, address = oversight
    target = tmp_path / "pack.xlsx"
    result = toex(run, address, "--period", "2026-Q3", "--region", "EMSOU", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert (fake.requests[0].period.first_day, fake.requests[0].period.last_day) == (
        "2026-07-01",
        "2026-09-30",
    )
    book = read_xlsx(target)
    for sheet in ("Summary", "Jobs by region", "Jobs by force", "States", "Types", "Priorities"):
        assert sheet in book
    for sheet in ("Taken across regions", "Feedback", "Referrals", "PND sync", "Deconfliction"):
        assert sheet in book
    assert {"Threat categories", "Definitions", "Notes"} <= set(book)
    jobs = book["Jobs by region"]
    assert jobs[0] == [MARKING]
    header = jobs[3]
    emsou = next(row for row in jobs if row[:1] == ["EMSOU"])
    total = next(row for row in jobs if row[:1] == ["TOTAL"])
    assert emsou[header.index("raised")] == "40" and emsou[header.index("delivered late")] == "3"
    assert total[header.index("on time %")] == "70"
    forces = book["Jobs by force"]
    notts = next(row for row in forces if row[:1] == ["NOTTS"])
    assert notts[1] == "Nottinghamshire Police" and notts[forces[3].index("raised")] == "5"
    assert next(row for row in book["Taken across regions"] if row[:1] == ["EMSOU"]) == [
        "EMSOU",
        "LONDON",
        "3",
    ]
    threats = book["Threat categories"]
    emsou_threats = next(row for row in threats if row[:1] == ["EMSOU"])
    assert emsou_threats[threats[3].index("cce")] == "7" and emsou_threats[threats[3].index("cse")] == "2"
    assert emsou_threats[threats[3].index("ms-labour")] == "0"
    assert next(row for row in book["Feedback"] if row[:1] == ["EMSOU"])[-1] == "2"
    definitions = {row[0]: row[1] for row in book["Definitions"][4:] if len(row) > 1}
    assert "due time" in definitions["overdue"] and "threat category" in definitions["Threat categories"]
    assert ["a note from the service"] in book["Notes"]
    for name in [n for n in book if n.endswith("#xml")]:
        sheet = ElementTree.fromstring(book[name][0][0])
        assert sheet.findtext("m:headerFooter/m:oddHeader", "", NS) == f'&C&"-,Bold"{MARKING}', name
        assert sheet.findtext("m:headerFooter/m:oddFooter", "", NS).startswith(f"&L{MARKING}&C"), name
    assert len(book["#charts"][0]) == 3


def test_the_pdf_has_a_cover_the_tables_and_charts_marked_on_every_page(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str], tmp_path: Path
) -> None:
    _, address = oversight
    target = tmp_path / "pack.pdf"
    result = toex(run, address, "--period", "2026-09", "-o", str(target))
    assert result.exit_code == 0, result.output
    document = pypdfium2.PdfDocument(target)
    texts = [document[i].get_textpage().get_text_range() for i in range(len(document))]
    # a cover; 14 sections, the 45 forces over 3 pages and the definitions over 2; 3 charts
    assert len(texts) == 1 + 12 + 3 + 2 + 3
    assert f"Wrote {target}: {len(texts)} pages" in result.output
    assert all(text.count(MARKING) >= 2 for text in texts)
    assert "National performance pack" in texts[0] and "2026-09-01 to 2026-09-30" in texts[0]
    assert any("Jobs by requesting force (3 of 3)" in t and "NCA" in t for t in texts)
    assert any("Delivery against due dates by region" in t for t in texts)
    assert any("Jobs by threat category" in t and "cce" in t for t in texts)


def test_write_functions_work_on_a_fake_answer_without_a_server(tmp_path: Path) -> None:
    period = parse_pack_period("2026", date(2026, 10, 2))
    pack = gather(answer_for, period, None, Force.parse("LEICS"))
    write_xlsx(pack, tmp_path / "p.xlsx")
    assert write_pdf(pack, tmp_path / "p.pdf") == len(pypdfium2.PdfDocument(tmp_path / "p.pdf"))
    assert next(t.name for t in tables(pack)) == "Summary"
    assert read_xlsx(tmp_path / "p.xlsx")["Summary"][5][:2] == [
        "Scope",
        "jobs requested by Leicestershire Police (LEICS)",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--period", "2026-Q3", "-o", "pack.csv"], "write a .xlsx or a .pdf"),
        (["--period", "last quarter", "-o", "pack.pdf"], "is not a period"),
        (["--period", "2026-Q3", "--force", "NOWHERE", "-o", "pack.pdf"], "--force"),
        (["--period", "2026-Q3", "--force", "NOTTS", "--region", "EMSOU", "-o", "pack.pdf"], "not both"),
    ],
)
def test_bad_command_lines_ask_nothing(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str], args: list[str], says: str
) -> None:
    fake, address = oversight
    result = toex(run, address, *args)
    assert result.exit_code == 2 and says in result.output
    assert fake.requests == []
