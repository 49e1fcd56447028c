"""End to end: `toex jobs brief` against the real tasking service (PostgreSQL, JetStream, Keycloak
tokens), read back with pypdfium2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pypdfium2
import pytest

from .test_tasking_e2e import create_job

pytestmark = pytest.mark.e2e


def test_brief_writes_a_marked_pdf_and_refuses_a_caller_without_access(
    cli_for, tasking_process, tmp_path: Path
) -> None:
    coordinator = cli_for("national_coordinator.national")
    name = create_job(coordinator, "EMSOU", "Op E2E-BRIEF")["name"]
    coordinator.run("--purpose", "Op E2E-BRIEF", "jobs", "note", name, "Two phones seen at the station")

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
    assert "No safeguarding referrals linked to this job." in text

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
        env=tasking_process.env,
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    reads = [e for e in entries if e["actor_username"] == "researcher.emsou" and name in e["resources"]]
    assert reads and all(e["purpose"] == name for e in reads)
