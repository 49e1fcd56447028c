"""Other services' events as the read model takes them: states, times, regions and ratings, and
nothing personal; an event naming another region's job or referral is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import sync_pb2
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as ev
from toex.type.v1 import region_pb2
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import IncomingEvent, build_event, decode
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp
from toex_oversight.adapters import events
from toex_oversight.domain.model import ClockRecord, JobFacts

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB = "regions/EMSOU/jobs/j1"


def incoming(message: Message, domain: str, region: Region = Region.EMSOU) -> IncomingEvent:
    envelope = build_event(message, domain=domain, source=f"toex/{domain}", region=region, occurred_at=T0)
    return decode(envelope.subject, envelope.payload, envelope.headers)


def access(revision: int, state: int, *regions: int) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[ev.Assignee(username=f"researcher.{i}", region=r) for i, r in enumerate(regions)],  # type: ignore[arg-type]
    )


def test_job_created_gives_type_priority_due_state_and_day() -> None:
    message = ev.JobCreated(
        job=JOB,
        job_type=ev.JOB_TYPE_ANPR,
        priority=ev.PRIORITY_URGENT,
        due_time=timestamp(T0 + timedelta(days=3)),
        operation_name="Op SANDPIPER",
        requesting_unit="Derbyshire Constabulary",
        description="vehicles of suspects",
        subject_entity_ids=["entities/e1"],
        created_by="supervisor.emsou",
        access=access(1, ev.JOB_STATE_ASSIGNED, region_pb2.REGION_LONDON, region_pb2.REGION_EMSOU),
    )
    facts = events.job_facts(incoming(message, "tasking"))
    assert facts == JobFacts(
        JOB,
        Region.EMSOU,
        1,
        "ANPR",
        "ASSIGNED",
        "URGENT",
        T0 + timedelta(days=3),
        created_at=T0,
        taken_by=frozenset({Region.LONDON}),
    )
    # Nothing of the description, operation, unit, subjects or people is taken.
    kept = " ".join(str(v) for v in dataclasses.asdict(facts).values())
    for secret in ("SANDPIPER", "Derbyshire", "vehicles", "entities/e1", "supervisor.emsou", "researcher."):
        assert secret not in kept


def test_a_status_change_to_delivered_gives_the_delivery_time() -> None:
    message = ev.JobStatusChanged(
        job=JOB,
        previous_state=ev.JOB_STATE_IN_PROGRESS,
        state=ev.JOB_STATE_DELIVERED,
        changed_by="researcher.london",
        job_type=ev.JOB_TYPE_ANPR,
        access=access(4, ev.JOB_STATE_DELIVERED, region_pb2.REGION_LONDON),
    )
    facts = events.job_facts(incoming(message, "tasking"))
    assert (facts.state, facts.revision, facts.delivered_at, facts.created_at) == ("DELIVERED", 4, T0, None)


def test_job_updated_gives_the_new_priority_and_due_time_under_its_revision() -> None:
    message = ev.JobUpdated(
        job=JOB,
        changed_fields=["due_time"],
        updated_by="supervisor.emsou",
        access=access(3, ev.JOB_STATE_IN_PROGRESS),
        priority=ev.PRIORITY_ROUTINE,
        due_time=timestamp(T0 + timedelta(days=9)),
    )
    facts = events.job_facts(incoming(message, "tasking"))
    assert (facts.revision, facts.priority, facts.due_at) == (3, "ROUTINE", T0 + timedelta(days=9))


def test_feedback_gives_the_rating_only() -> None:
    message = ev.FeedbackRecorded(
        job=JOB, rating=4, comment="very useful: named the driver", recorded_by="supervisor.emsou"
    )
    facts = events.job_facts(incoming(message, "tasking"))
    assert (facts.rating, facts.rated_at, facts.revision, facts.state) == (4, T0, -1, "")
    with pytest.raises(PermanentError, match="1 to 5"):
        events.job_facts(incoming(ev.FeedbackRecorded(job=JOB, rating=9), "tasking"))


def test_an_event_naming_another_regions_job_is_refused() -> None:
    forged = ev.JobCreated(job="regions/ERSOU/jobs/j1", access=access(1, ev.JOB_STATE_RAISED))
    with pytest.raises(PermanentError, match="not of the region EMSOU"):
        events.job_facts(incoming(forged, "tasking"))
    referral = sg_events.ReferralDrafted(referral="regions/ERSOU/referrals/r1", state=sg.REFERRAL_STATE_DRAFT)
    with pytest.raises(PermanentError, match="not of the region EMSOU"):
        events.referral_facts(incoming(referral, "safeguarding"))


def test_referral_events_give_state_and_deadlines() -> None:
    r = "regions/EMSOU/referrals/r1"
    drafted = events.referral_facts(
        incoming(
            sg_events.ReferralDrafted(referral=r, state=sg.REFERRAL_STATE_DRAFT, created_by="officer.emsou"),
            "safeguarding",
        )
    )
    assert (drafted.state, drafted.drafted, drafted.occurred_at, drafted.clock) == ("DRAFT", True, T0, None)
    submitted = events.referral_facts(
        incoming(
            sg_events.ReferralSubmitted(
                referral=r,
                destination=sg.DESTINATION_NRM,
                submit_time=timestamp(T0),
                decision_due_time=timestamp(T0 + timedelta(days=7)),
                state=sg.REFERRAL_STATE_SUBMITTED,
            ),
            "safeguarding",
        )
    )
    assert submitted.clock == ClockRecord("NRM", due_at=T0 + timedelta(days=7))
    decided = events.referral_facts(
        incoming(
            sg_events.ReferralDecisionRecorded(
                referral=r,
                destination=sg.DESTINATION_NRM,
                decision=sg.Decision(
                    kind=sg.DECISION_KIND_NRM_REASONABLE_GROUNDS,
                    outcome=sg.DECISION_OUTCOME_POSITIVE,
                    detail="reasonable grounds",
                    decision_time=timestamp(T0 + timedelta(days=3)),
                ),
                state=sg.REFERRAL_STATE_DECIDED,
            ),
            "safeguarding",
        )
    )
    assert decided.clock == ClockRecord("NRM", met_at=T0 + timedelta(days=3))
    # A conclusive-grounds decision meets no deadline.
    conclusive = events.referral_facts(
        incoming(
            sg_events.ReferralDecisionRecorded(
                referral=r,
                destination=sg.DESTINATION_NRM,
                decision=sg.Decision(
                    kind=sg.DECISION_KIND_NRM_CONCLUSIVE_GROUNDS,
                    decision_time=timestamp(T0 + timedelta(days=40)),
                ),
                state=sg.REFERRAL_STATE_DECIDED,
            ),
            "safeguarding",
        )
    )
    assert conclusive.clock is None


def test_pnd_answers_reconciliations_and_deconfliction_notices() -> None:
    assert events.pnd_result(
        incoming(pnd_events.SubmissionRejected(record="regions/EMSOU/intelligence/x"), "pnd")
    ) == ("REJECTED")
    report = pnd_events.ReconciliationCompleted(
        reconciliation="reconciliations/abc",
        summary=sync_pb2.RegionReconciliation(
            region=region_pb2.REGION_EMSOU,
            local_records=10,
            in_sync=6,
            held=sync_pb2.AgedCount(count=2),
            stale=sync_pb2.AgedCount(count=1),
            rejected=sync_pb2.AgedCount(count=1),
        ),
    )
    found = events.reconciliation(incoming(report, "pnd"))
    assert (found.region, found.completed_at, found.held, found.stale, found.in_sync) == (
        Region.EMSOU,
        T0,
        2,
        1,
        6,
    )
    report.summary.region = region_pb2.REGION_LONDON
    with pytest.raises(PermanentError, match="another region"):
        events.reconciliation(incoming(report, "pnd"))
    notice = entity_events.DeconflictionNotice(
        entity="entities/e1", own_records=["regions/EMSOU/records/1"], other_region=region_pb2.REGION_LONDON
    )
    assert events.deconfliction_with(incoming(notice, "entity")) == "LONDON"
