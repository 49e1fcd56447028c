"""The tasking fields of issue 16 as the hub receives them: the requesting force and threat
category (code lists) and whether feedback has a comment pass; the comment, who recorded it and
the officer's one-time token never do."""

from __future__ import annotations

import pytest
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import force_pb2, threat_pb2
from toex_kernel.forces import ThreatCategory
from toex_oversight.adapters import scrub

FORCE = force_pb2.FORCE_NOTTINGHAMSHIRE
THREAT = threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES


def test_job_created_and_updated_keep_force_and_threat() -> None:
    created = tasking_events.JobCreated(
        job="regions/EMSOU/jobs/j1",
        requesting_force=FORCE,
        threat_category=THREAT,
        requesting_unit="Notts PPU",
    )
    kept = scrub.scrub(created)
    assert (kept.requesting_force, kept.threat_category) == (FORCE, THREAT)  # type: ignore[attr-defined]
    assert kept.requesting_unit == ""  # type: ignore[attr-defined]
    updated = tasking_events.JobUpdated(
        job="regions/EMSOU/jobs/j1", requesting_force=FORCE, threat_category=THREAT
    )
    kept = scrub.scrub(updated)
    assert (kept.requesting_force, kept.threat_category) == (FORCE, THREAT)  # type: ignore[attr-defined]


def test_feedback_recorded_keeps_the_rating_and_has_comment_not_the_comment() -> None:
    recorded = tasking_events.FeedbackRecorded(
        job="regions/EMSOU/jobs/j1",
        rating=4,
        comment="DS Hall: led to arrests",
        has_comment=True,
        recorded_by="x",
    )
    kept = scrub.scrub(recorded)
    assert (kept.rating, kept.has_comment) == (4, True)  # type: ignore[attr-defined]
    assert kept.comment == "" and kept.recorded_by == ""  # type: ignore[attr-defined]


def test_feedback_requested_with_its_token_is_never_reported() -> None:
    requested = tasking_events.FeedbackRequested(
        job="regions/EMSOU/jobs/j1", token="secret", requesting_officer="DS"
    )
    with pytest.raises(scrub.NotReported):
        scrub.scrub(requested)


def test_the_requesting_force_is_counted_by_its_code() -> None:
    from datetime import UTC, datetime

    from toex_common.events.envelope import build_event, decode
    from toex_kernel.forces import Force
    from toex_kernel.regions import Region
    from toex_oversight.adapters import events
    from toex_oversight.domain.model import Figure, JobRecord

    message = tasking_events.JobCreated(
        job="regions/EMSOU/jobs/j1",
        requesting_force=FORCE,
        threat_category=THREAT,
        job_type=tasking_events.JOB_TYPE_ANPR,
        access=tasking_events.JobAccess(revision=1, state=tasking_events.JOB_STATE_RAISED),
    )
    when = datetime(2026, 8, 3, 9, 0, tzinfo=UTC)
    envelope = build_event(
        scrub.scrub(message), domain="tasking", source="toex/tasking", region=Region.EMSOU, occurred_at=when
    )
    facts = events.job_facts(decode(envelope.subject, envelope.payload, envelope.headers))
    assert facts.force == Force.NOTTINGHAMSHIRE.code
    record = JobRecord("regions/EMSOU/jobs/j1", Region.EMSOU).merge(facts)
    assert {key.force for key in record.contributions()} == {Force.NOTTINGHAMSHIRE.code}
    assert {(key.figure, key.value) for key in record.contributions()} == {
        (Figure.JOB_STATE.value, "RAISED"),
        (Figure.JOB_TYPE.value, "ANPR"),
        (Figure.JOB_THREAT.value, ThreatCategory.from_proto(THREAT).code),
    }
    # An unset or unknown force number counts under no force.
    assert events.force_code(0) == "" and events.force_code(9999) == ""


def test_force_and_threat_count_as_the_latest_revision_names_them_and_comments_are_counted() -> None:
    from collections import Counter
    from datetime import UTC, datetime

    from toex_kernel.regions import Region
    from toex_oversight.adapters.mapping import jobs_to_proto
    from toex_oversight.domain.model import Figure, JobFacts, JobRecord
    from toex_oversight.domain.overview import JobSummary

    job, when = "regions/EMSOU/jobs/j2", datetime(2026, 8, 3, 9, 0, tzinfo=UTC)
    created = JobFacts(
        job, Region.EMSOU, revision=1, state="RAISED", created_at=when, force="NOTTS", threat="cse"
    )
    changed = JobFacts(job, Region.EMSOU, revision=3, state="RAISED", force="DERBYS", threat="cce")
    rated = JobFacts(job, Region.EMSOU, rating=4, rated_at=when, commented=True)
    for order in ([created, changed, rated], [rated, changed, created], [changed, rated, created]):
        record = JobRecord(job, Region.EMSOU)
        for facts in order:
            record = record.merge(facts)
        assert (record.force, record.threat, record.commented) == ("DERBYS", "cce", True)
        figures = Counter((key.figure, key.value, key.force) for key in record.contributions())
        assert figures[(Figure.JOB_THREAT.value, "cce", "DERBYS")] == 1
        assert figures[(Figure.JOB_COMMENTED.value, "", "DERBYS")] == 1
        assert not any(value == "cse" or force == "NOTTS" for _, value, force in figures)

    # What GetOverview answers: the comment count and the jobs per threat category, in the
    # code list's order; a code this build does not know is left out.
    summary = JobSummary(commented=2, threats=Counter({"cce": 3, "cse": 1, "nonsense": 5}))
    answer = jobs_to_proto(summary)
    assert answer.feedback.commented == 2
    assert [(t.threat_category, t.count) for t in answer.threats] == [
        (ThreatCategory.CSE.to_proto(), 1),
        (ThreatCategory.CCE_COUNTY_LINES.to_proto(), 3),
    ]
