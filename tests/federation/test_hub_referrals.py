"""A watchlist contact found in EMSOU's call data drafts EMSOU's referral and no other: the
finding never reaches the hub (only EMSOU's value-free oversight reports do), and the hub's own
safeguarding service, whose consumers read the national team's subjects only, drafts nothing."""

from __future__ import annotations

import csv
import secrets
import uuid
from pathlib import Path
from typing import Any

import nats
from toex_devstack.federation import Federation
from toex_devstack.keycloak import DemoTokens

from .conftest import COORDINATOR, Toex, eventually, fetch, overview, run, subject_counts
from .work import OFFICER, ok

ANALYST = "analyst.emsou"
TRIGGER = "trigger:WatchlistContactDetected"


def _calls(path: Path, offender: str, victim: str) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["start_time", "duration", "calling_number", "called_number", "event_type"]
        writer.writerow([*header, "calling_cell", "called_cell", "imei", "imsi"])
        for day in (1, 2, 3):
            writer.writerow([f"2026-03-0{day}T21:00:00Z", "300", offender, victim, "voice", "", "", "", ""])
    return path


def _emsou_referrals(toex: Toex) -> list[dict[str, Any]]:
    listed = ok(
        toex(OFFICER, "referrals", "list", "--region", "EMSOU", "--format", "json"), "EMSOU's referrals"
    )
    return list(listed.get("referrals", []))


async def _hub_consumer_filters(federation: Federation) -> dict[str, list[str]]:
    """The subjects each of the hub safeguarding service's durable consumers reads."""
    nc = await nats.connect(federation.nats_url("hub", "admin"), max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        found = {}
        for stream in ("COMMS", "TASKING", "ENTITY"):
            for info in await js.consumers_info(stream):
                if (info.name or "").startswith("safeguarding-"):
                    config = info.config
                    found[f"{stream}/{info.name}"] = list(
                        config.filter_subjects or [config.filter_subject or ""]
                    )
        return found
    finally:
        await nc.close()


def test_the_hub_drafts_no_referral_for_a_regional_watchlist_contact(
    federation: Federation, tokens: DemoTokens, toex: Toex, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    offender, victim = (
        f"+447700900{n:03d}" for n in (900 + secrets.randbelow(50), 950 + secrets.randbelow(50))
    )
    known = {r["name"] for r in _emsou_referrals(toex)}
    findings = "toex.emsou.comms.WatchlistContactDetected"
    at_hub_before = sum(run(subject_counts(federation, "hub", "COMMS", findings)).values())
    drafted_before = overview(federation, tokens, "EMSOU").referrals.drafted

    # EMSOU's analyst imports the call data and keeps the region's watchlists.
    calls = _calls(tmp_path / "calls.csv", offender, victim)
    imported = ok(
        toex(ANALYST, "comms", "import-cdr", str(calls), "--region", "EMSOU", "--format", "json"),
        "call data imported into EMSOU",
    )
    assert imported["dataset"]["name"].startswith("regions/EMSOU/datasets/")

    def analyst(*args: str) -> dict[str, Any]:
        return ok(
            toex(ANALYST, "comms", "watchlist", *args, "--region", "EMSOU", "--format", "json"), args[0]
        )

    analyst("create", f"rso-{tag}", "--kind", "registered_sex_offender")
    analyst("create", f"victims-{tag}", "--kind", "victim")
    analyst("add", f"rso-{tag}", offender)
    added = analyst("add", f"victims-{tag}", victim)
    assert added.get("contacts"), f"the offender-victim contact is detected: {added}"

    # EMSOU's safeguarding drafts the referral ...
    def drafted() -> list[dict[str, Any]]:
        return [
            r for r in _emsou_referrals(toex) if r["name"] not in known and r.get("created_by") == TRIGGER
        ]

    (referral,) = eventually(drafted, "EMSOU's referral for the watchlist contact")
    assert referral["name"].startswith("regions/EMSOU/referrals/")
    # ... the hub's oversight counts it from EMSOU's report, and the finding itself (the two
    # numbers) never reached the hub's COMMS stream.
    eventually(
        lambda: overview(federation, tokens, "EMSOU").referrals.drafted > drafted_before,
        "EMSOU's referral in the hub's overview",
    )
    assert sum(run(subject_counts(federation, "hub", "COMMS", findings)).values()) == at_hub_before

    # The hub's safeguarding drafted nothing: its database holds no referral, and the national
    # coordinator's list of the national team's referrals is empty.
    held = run(fetch(federation, "toex_hub_safeguarding", "SELECT region, created_by FROM referrals"))
    assert held == []
    national = ok(
        toex(COORDINATOR, "referrals", "list", "--region", "NATIONAL", "--format", "json"),
        "NATIONAL's referrals",
    )
    assert national.get("referrals", []) == []
    # And were a region's finding ever at the hub, its consumers read the national team's
    # subjects only.
    filters = run(_hub_consumer_filters(federation))
    assert "COMMS/safeguarding-comms-triggers" in filters, filters
    assert all(s.startswith("toex.national.") for subjects in filters.values() for s in subjects), filters
