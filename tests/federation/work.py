"""Work done in a region through the CLI, as its people do it, for the federation tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from click.testing import Result

from .conftest import COORDINATOR, Toex

OFFICER = "safeguarding_officer.emsou"
RESEARCHER = "researcher.emsou"
# A foreign plate: the PND's own rules reject it (services/pnd, the simulator's rules).
REJECTED_PLATE = "W0LGM5EF"


def ok(result: Result, what: str) -> dict[str, Any]:
    assert result.exit_code == 0, f"{what}: exit {result.exit_code}\n{result.output}"
    answer: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return answer


def create_job(toex: Toex, region: str, user: str = COORDINATOR) -> str:
    """A job raised for `region` (the CLI sends it to that region's installation); its name."""
    result = toex(
        user,
        "jobs", "create", "--region", region, "--type", "comms_analysis", "--unit", "Leicestershire Police",
        "--officer", "DS Test", "--operation", f"Op {uuid.uuid4().hex[:6]}", "--due", "2030-01-01",
        "--format", "json",
    )  # fmt: skip
    name = str(ok(result, f"a job for {region}")["name"])
    assert name.startswith(f"regions/{region}/jobs/"), name
    return name


def draft_referral(toex: Toex, region: str = "EMSOU", user: str = OFFICER) -> str:
    result = toex(
        user,
        "referrals", "create", "--region", region, "--subject", f"ent-{uuid.uuid4().hex[:12]}",
        "--concern", "child_sexual_exploitation", "--age", "child", "--risk", "high",
        "--local-authority", "Derby City", "--format", "json",
    )  # fmt: skip
    return str(ok(result, f"a referral in {region}")["name"])


def submit_rejected_plate(toex: Toex, region: str = "EMSOU", user: str = RESEARCHER) -> str:
    """Intelligence the PND rejects (after the platform has accepted it); its record name."""
    result = toex(
        user,
        "pnd", "submit", "--region", region, "--vrm", REJECTED_PLATE, "--grading", "1B",
        "--handling", "P", "--format", "json",
    )  # fmt: skip
    return str(ok(result, f"PND intelligence in {region}")["name"])
