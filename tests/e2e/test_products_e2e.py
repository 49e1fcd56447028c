"""End to end: `toex jobs brief` against the whole platform (`platform_stack`: tasking, entity,
comms, safeguarding and pnd, PostgreSQL, JetStream, Keycloak tokens), read back with pypdfium2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pypdfium2
import pytest

from .conftest import Cli, PlatformStack
from .test_tasking_e2e import create_job

pytestmark = pytest.mark.e2e


def test_brief_writes_a_marked_pdf_and_refuses_a_caller_without_access(
    platform_stack: PlatformStack, platform_cli_for: Callable[[str], Cli], tmp_path: Path
) -> None:
    cli_for = platform_cli_for
    coordinator = cli_for("national_coordinator.national")
    name = create_job(coordinator, "EMSOU", "Op E2E-BRIEF")["name"]
    coordinator.run("--purpose", "Op E2E-BRIEF", "jobs", "note", name, "Two phones seen at the station")
    calls = tmp_path / "calls.csv"
    pl.DataFrame(
        [
            {
                "start_time": "2024-03-04T09:00:00Z",
                "duration": "60",
                "calling_number": "+447700900101",
                "called_number": "+447700900102",
                "event_type": "voice",
                "imei": "35693803564380",
            }
        ]
    ).write_csv(calls)
    platform_cli_for("analyst.emsou").run(
        "comms", "import-cdr", str(calls), "--region", "EMSOU", "--job", name, "--name", "Brief CDR"
    )
    # Two vehicles read by the same cameras a minute apart on three days: a convoy in the job's
    # ANPR data (the job has no vehicle subjects, so every convoy of its data is shown).
    reads = tmp_path / "reads.csv"
    pl.DataFrame(
        [
            {
                "vrm": vrm,
                "camera_id": f"M1-J2{day}",
                "camera_location": f"M1 junction 2{day}",
                "read_time": f"2024-03-0{day}T08:0{offset}:00Z",
            }
            for day in (4, 5, 6)
            for vrm, offset in (("AB12CDE", 0), ("XY99ZZZ", 1))
        ]
    ).write_csv(reads)
    platform_cli_for("analyst.emsou").run(
        "comms",
        "import-anpr",
        str(reads),
        "--region",
        "EMSOU",
        "--job",
        name,
        "--name",
        "Brief ANPR",
        "--handling",
        "p",
    )
    # A record submitted to the PND for this job (the job as purpose), and one for no job.
    researcher = cli_for("researcher.emsou")
    for_job = json.loads(
        researcher.run(
            "--purpose",
            name,
            "pnd",
            "submit",
            "--region",
            "EMSOU",
            "--phone",
            "07700 900555",
            "--grading",
            "2B",
            "--handling",
            "p",
            "--format",
            "json",
        ).stdout
    )
    elsewhere = json.loads(
        researcher.run(
            "--purpose",
            "Op ELSEWHERE",
            "pnd",
            "submit",
            "--region",
            "EMSOU",
            "--phone",
            "07700 900556",
            "--grading",
            "1A",
            "--handling",
            "p",
            "--format",
            "json",
        ).stdout
    )

    out = tmp_path / "brief.pdf"
    result = cli_for("researcher.emsou").run("jobs", "brief", name, "-o", str(out))
    assert f"reading job {name}" in result.stderr and "wrote" in result.stderr
    document = pypdfium2.PdfDocument(out.read_bytes())
    pages = [document[i].get_textpage().get_text_range() for i in range(len(document))]
    assert "SIO briefing pack" in pages[0] and "Op E2E-BRIEF" in pages[0]
    for page in pages:
        assert page.count("OFFICIAL-SENSITIVE | Handling code:") == 2
    text = "".join(pages)
    assert "Derbyshire Constabulary" in text and "DS Example" in text
    assert "Two phones seen at the station" in text
    assert "No subject entities on this job." in text
    # a researcher's role may not list referrals: the section says so rather than failing the pack
    assert "Not shown: the safeguarding service refused this caller" in text, text
    assert "Brief CDR" in text and "CDR 1 rows" in text, text
    # No phone or vehicle subjects: the co-location and travel sections say so; the convoy is found.
    assert "No co-location" in text and "No travel patterns" in text
    assert "AB12CDE with XY99ZZZ" in text and "3 joint sightings on 3 days at 3 cameras" in text, text
    # PND: the job's record (listed with the service's job filter), not the other.
    record = for_job["record"] if "record" in for_job else for_job
    other = elsewhere["record"] if "record" in elsewhere else elsewhere
    assert record["name"] in text and other["name"] not in text
    # The annex: the job's datasets and the PND record, each with its grading.
    annex = text[text.index("Annex: records used, with grading") :]
    assert "Dataset Brief ANPR" in annex and "grading: ?/?/P" in annex, annex
    assert f"PND record {record['name']}" in annex and "grading: 2/B/P" in annex, annex

    refused_out = tmp_path / "refused.pdf"
    refused = cli_for("researcher.ersou").run("jobs", "brief", name, "-o", str(refused_out), check=False)
    assert refused.returncode == 1
    assert "NOT_FOUND" in refused.stdout + refused.stderr
    assert not refused_out.exists()

    docx_out = tmp_path / "brief.docx"
    cli_for("researcher.emsou").run("jobs", "brief", name, "-o", str(docx_out), "--format", "docx")
    assert docx_out.read_bytes()[:2] == b"PK"

    # the pack's reads are audited under the caller, with the job as purpose
    audit = subprocess.run(
        [sys.executable, "-m", "toex_common.audit_cli", "tail", "--limit", "50"],
        env=platform_stack["tasking"].env,
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    reads = [e for e in entries if e["actor_username"] == "researcher.emsou" and name in e["resources"]]
    assert reads and all(e["purpose"] == name for e in reads)
