"""EMSOU cut off from the hub (its leaf link dropped and refused, both servers running) keeps
serving its people; the hub's overview of EMSOU stands still meanwhile; and once the link is back
the overview holds every event of EMSOU's exactly once: the hub's OVERSIGHT stream holds EMSOU's
report of each counted event once (nothing else of EMSOU's crosses), the oversight service
counted each once, and its figures equal what EMSOU's own installation holds."""

from __future__ import annotations

import time
from typing import Any

from toex_devstack.federation import Federation
from toex_devstack.keycloak import DemoTokens
from toex_oversight.adapters import events as counted

from .conftest import Toex, eventually, fetch, overview, run, subject_counts
from .work import RESEARCHER, create_job, draft_referral, ok, submit_rejected_plate

DOMAINS = ("tasking", "safeguarding", "pnd")
STREAMS = {"tasking": "TASKING", "safeguarding": "SAFEGUARDING", "pnd": "PND"}
# The event types the oversight service counts, per producing domain (its own lists).
COUNTED = {
    "tasking": {t.DESCRIPTOR.name for t in counted.JOB_EVENTS},
    "safeguarding": {t.DESCRIPTOR.name for t in counted.REFERRAL_EVENTS},
    "pnd": {t.DESCRIPTOR.name for t in counted.PND_RESULTS}
    | {counted.RECONCILIATION_COMPLETED.DESCRIPTOR.name},
}


def _streams(federation: Federation, member: str) -> dict[str, dict[str, int]]:
    """Per domain, how many of EMSOU's events of each subject `member`'s stream holds."""
    return {
        domain: run(subject_counts(federation, member, STREAMS[domain], f"toex.emsou.{domain}.>"))
        for domain in DOMAINS
    }


def _reported(federation: Federation, member: str) -> dict[str, int]:
    """How many of EMSOU's reports of each counted event type `member`'s OVERSIGHT stream holds."""
    names = set().union(*COUNTED.values())
    counts = run(subject_counts(federation, member, "OVERSIGHT", "toex.emsou.oversight.>"))
    return {
        subject.rsplit(".", 1)[1]: n for subject, n in counts.items() if subject.rsplit(".", 1)[1] in names
    }


def _published(streams: dict[str, dict[str, int]]) -> dict[str, int]:
    """Of EMSOU's own streams, how many events of each counted type it published."""
    return {
        subject.rsplit(".", 1)[1]: n
        for domain in DOMAINS
        for subject, n in streams[domain].items()
        if subject.rsplit(".", 1)[1] in COUNTED[domain]
    }


def _truth(federation: Federation) -> dict[str, Any]:
    """What EMSOU's own installation holds, and the events it published, per kind."""
    jobs = run(
        fetch(federation, "toex_emsou_tasking", "SELECT state, count(*) AS n FROM jobs GROUP BY state")
    )
    referrals = run(
        fetch(
            federation, "toex_emsou_safeguarding", "SELECT state, count(*) AS n FROM referrals GROUP BY state"
        )
    )
    return {
        "streams": _streams(federation, "EMSOU"),
        "jobs": {r["state"]: r["n"] for r in jobs},
        "referrals": {r["state"]: r["n"] for r in referrals},
    }


def _mismatches(federation: Federation, tokens: DemoTokens) -> list[str]:
    """How the hub differs from EMSOU's truth (empty: every event there, once)."""
    truth = _truth(federation)
    wrong = []
    at_hub = _reported(federation, "hub")
    if at_hub != _published(truth["streams"]):
        wrong.append(f"hub's reports {at_hub} != EMSOU's events {_published(truth['streams'])}")
    activity = run(
        fetch(federation, "toex_hub_oversight", "SELECT domain, events FROM activity WHERE region = 'EMSOU'")
    )
    seen = {r["domain"]: r["events"] for r in activity}
    for domain in DOMAINS:
        published = sum(
            n
            for subject, n in truth["streams"][domain].items()
            if subject.rsplit(".", 1)[1] in COUNTED[domain]
        )
        if seen.get(domain, 0) != published:
            wrong.append(
                f"{domain}: oversight counted {seen.get(domain, 0)} events, EMSOU published {published}"
            )
    figures = overview(federation, tokens, "EMSOU")
    jobs = truth["jobs"]
    if figures.jobs.raised != sum(jobs.values()):
        wrong.append(f"jobs raised {figures.jobs.raised} != EMSOU's {sum(jobs.values())}")
    states = figures.jobs.states
    for state in ("RAISED", "ASSIGNED", "IN_PROGRESS", "DELIVERED", "CLOSED"):
        if getattr(states, state.lower()) != jobs.get(state, 0):
            wrong.append(f"jobs {state}: {getattr(states, state.lower())} != EMSOU's {jobs.get(state, 0)}")
    referrals = truth["referrals"]
    if figures.referrals.drafted != sum(referrals.values()):
        wrong.append(f"referrals drafted {figures.referrals.drafted} != EMSOU's {sum(referrals.values())}")
    if figures.referrals.states.draft != referrals.get("DRAFT", 0):
        wrong.append(
            f"referrals DRAFT {figures.referrals.states.draft} != EMSOU's {referrals.get('DRAFT', 0)}"
        )
    pnd = truth["streams"]["pnd"]
    for field, event in (("accepted", "SubmissionAccepted"), ("rejected", "SubmissionRejected")):
        if getattr(figures.pnd, field) != pnd.get(f"toex.emsou.pnd.{event}", 0):
            wrong.append(f"pnd {field} {getattr(figures.pnd, field)} != EMSOU's {event} events")
    return wrong


def test_emsou_cut_off_keeps_serving_and_the_overview_has_every_event_once_after(
    federation: Federation, tokens: DemoTokens, toex: Toex
) -> None:
    hub_monitor = federation.federation_ports().members["hub"].nats_monitor
    # Whatever earlier tests did has arrived.
    eventually(lambda: not _mismatches(federation, tokens), "the hub to agree with EMSOU before the cut")
    before = overview(federation, tokens, "EMSOU")
    before_streams = _truth(federation)["streams"]
    before_reported = _reported(federation, "hub")
    link = federation.links["EMSOU"]

    link.cut()
    try:
        eventually(lambda: federation.leaf_links(hub_monitor) == 1, "the hub to lose EMSOU's leaf link")
        # EMSOU serves its people all the while: jobs raised, assigned and worked, a referral,
        # intelligence the PND accepts and intelligence it rejects.
        jobs = [create_job(toex, "EMSOU") for _ in range(3)]
        ok(toex("supervisor.emsou", "jobs", "assign", jobs[0], RESEARCHER, "--format", "json"), "assign")
        ok(toex(RESEARCHER, "jobs", "status", jobs[0], "in_progress", "--format", "json"), "start")
        draft_referral(toex)
        rejected = submit_rejected_plate(toex)
        submitted = toex(
            RESEARCHER, "pnd", "submit", "--region", "EMSOU", "--vrm", "AB12CDE", "--grading", "1B",
            "--handling", "P", "--format", "json",
        )  # fmt: skip
        accepted = ok(submitted, "accepted intelligence")["name"]

        def answered(name: str, state: str) -> bool:
            shown = ok(toex(RESEARCHER, "pnd", "show", name, "--format", "json"), f"show {name}")
            return bool(shown["record"].get("sync_state") == state)

        eventually(lambda: answered(rejected, "SYNC_STATE_REJECTED"), "the PND's rejection, in EMSOU")
        eventually(lambda: answered(accepted, "SYNC_STATE_SYNCED"), "the PND's acceptance, in EMSOU")
        during = _truth(federation)["streams"]
        assert during != before_streams  # EMSOU published all of it ...

        time.sleep(2.0)
        # ... and none of it reached the hub.
        assert _reported(federation, "hub") == before_reported
        cut_off = overview(federation, tokens, "EMSOU")
        assert (cut_off.jobs.raised, cut_off.events_counted) == (before.jobs.raised, before.events_counted)
    finally:
        link.restore()

    eventually(lambda: federation.leaf_links(hub_monitor) == 2, "EMSOU's leaf link back")
    eventually(lambda: not _mismatches(federation, tokens), "every EMSOU event at the hub once")
    time.sleep(2.0)  # a duplicate arriving late would show now
    assert _mismatches(federation, tokens) == []
    after = overview(federation, tokens, "EMSOU")
    assert after.jobs.raised == before.jobs.raised + 3
    assert after.jobs.states.in_progress == before.jobs.states.in_progress + 1
    assert after.referrals.drafted == before.referrals.drafted + 1
    assert (after.pnd.rejected, after.pnd.accepted) == (before.pnd.rejected + 1, before.pnd.accepted + 1)
    # Each job of the partition is one row of the hub's read model, in the state EMSOU holds.
    for name, state in zip(jobs, ("IN_PROGRESS", "RAISED", "RAISED"), strict=True):
        rows = run(fetch(federation, "toex_hub_oversight", "SELECT state FROM jobs WHERE job = $1", name))
        assert [r["state"] for r in rows] == [state]
