"""Events as the regions' services publish them, for the integration tests (and nothing else)."""

from __future__ import annotations

from datetime import datetime, timedelta

from toex.entity.events.v1 import events_pb2 as entity_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import sync_pb2
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as ev
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp

# What identifying text the events carry; none of it may reach the read model.
SECRETS = (
    "Op NIGHTJAR",
    "Leicestershire Police",
    "Kayleigh Brennan",
    "+447700900123",
    "AB12CDE",
    "entities/e-secret-1",
    "researcher-secret.london",
    "supervisor-secret.emsou",
    "named the driver",
)


def access(revision: int, state: int, *assignees: Region) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[
            ev.Assignee(username=f"researcher-secret.{r.token}", region=r.to_proto())  # type: ignore[arg-type]
            for r in assignees
        ],
    )


def job_lifecycle(
    job: str,
    due: datetime,
    *,
    taker: Region | None = None,
    delivered: datetime | None = None,
    rating: int = 0,
) -> list[tuple[ev.JobCreated | ev.JobAssigned | ev.JobStatusChanged | ev.FeedbackRecorded, int]]:
    """(event, revision) of a job raised, assigned (to `taker`'s researcher, or the region's own),
    started, delivered at `delivered` (if given), closed and rated (if `rating`)."""
    region = Region.parse(job.split("/")[1])
    who = taker or region
    events: list = [
        (
            ev.JobCreated(
                job=job,
                job_type=ev.JOB_TYPE_COMMS_ANALYSIS,
                priority=ev.PRIORITY_PRIORITY,
                due_time=timestamp(due),
                operation_name="Op NIGHTJAR",
                requesting_unit="Leicestershire Police",
                description="phones of Kayleigh Brennan, +447700900123, car AB12CDE",
                subject_entity_ids=["entities/e-secret-1"],
                created_by="supervisor-secret.emsou",
                access=access(1, ev.JOB_STATE_RAISED),
            ),
            1,
        ),
        (
            ev.JobAssigned(
                job=job,
                added=[ev.Assignee(username=f"researcher-secret.{who.token}", region=who.to_proto())],  # type: ignore[arg-type]
                assigned_by="supervisor-secret.emsou",
                job_type=ev.JOB_TYPE_COMMS_ANALYSIS,
                access=access(2, ev.JOB_STATE_ASSIGNED, who),
            ),
            2,
        ),
        (
            ev.JobStatusChanged(
                job=job,
                previous_state=ev.JOB_STATE_ASSIGNED,
                state=ev.JOB_STATE_IN_PROGRESS,
                changed_by=f"researcher-secret.{who.token}",
                job_type=ev.JOB_TYPE_COMMS_ANALYSIS,
                access=access(3, ev.JOB_STATE_IN_PROGRESS, who),
            ),
            3,
        ),
    ]
    if delivered is not None:
        events += [
            (
                ev.JobStatusChanged(
                    job=job,
                    previous_state=ev.JOB_STATE_IN_PROGRESS,
                    state=ev.JOB_STATE_DELIVERED,
                    reason="named the driver",
                    changed_by=f"researcher-secret.{who.token}",
                    job_type=ev.JOB_TYPE_COMMS_ANALYSIS,
                    access=access(4, ev.JOB_STATE_DELIVERED, who),
                ),
                4,
            ),
            (
                ev.JobStatusChanged(
                    job=job,
                    previous_state=ev.JOB_STATE_DELIVERED,
                    state=ev.JOB_STATE_CLOSED,
                    changed_by="supervisor-secret.emsou",
                    job_type=ev.JOB_TYPE_COMMS_ANALYSIS,
                    access=access(5, ev.JOB_STATE_CLOSED, who),
                ),
                5,
            ),
        ]
        if rating:
            events.append(
                (
                    ev.FeedbackRecorded(
                        job=job,
                        rating=rating,
                        comment="named the driver: Kayleigh Brennan",
                        recorded_by="supervisor-secret.emsou",
                        record_time=timestamp(delivered + timedelta(hours=1)),
                    ),
                    0,
                )
            )
    return events


def referral_drafted(referral: str) -> sg_events.ReferralDrafted:
    return sg_events.ReferralDrafted(
        referral=referral,
        concerns=[sg.CONCERN_CHILD_SEXUAL_EXPLOITATION],
        risk_level=sg.RISK_LEVEL_HIGH,
        created_by="supervisor-secret.emsou",
        state=sg.REFERRAL_STATE_DRAFT,
    )


def referral_submitted(
    referral: str, destination: int, sent: datetime, due: datetime
) -> sg_events.ReferralSubmitted:
    return sg_events.ReferralSubmitted(
        referral=referral,
        destination=destination,  # type: ignore[arg-type]
        submit_time=timestamp(sent),
        decision_due_time=timestamp(due),
        state=sg.REFERRAL_STATE_SUBMITTED,
    )


def referral_decided(referral: str, decided: datetime) -> sg_events.ReferralDecisionRecorded:
    return sg_events.ReferralDecisionRecorded(
        referral=referral,
        destination=sg.DESTINATION_CHILDRENS_SOCIAL_CARE,
        decision=sg.Decision(
            kind=sg.DECISION_KIND_LOCAL_AUTHORITY,
            outcome=sg.DECISION_OUTCOME_POSITIVE,
            detail="strategy discussion about Kayleigh Brennan",
            decision_time=timestamp(decided),
            recorded_by="supervisor-secret.emsou",
        ),
        state=sg.REFERRAL_STATE_DECIDED,
    )


def pnd_accepted(record: str) -> pnd_events.SubmissionAccepted:
    return pnd_events.SubmissionAccepted(
        record=record, pnd_id="PND-AB12CDE", submitted_by="researcher-secret.london"
    )


def pnd_rejected(record: str) -> pnd_events.SubmissionRejected:
    return pnd_events.SubmissionRejected(record=record, submitted_by="researcher-secret.london")


def reconciled(region: Region, held: int, stale: int) -> pnd_events.ReconciliationCompleted:
    return pnd_events.ReconciliationCompleted(
        reconciliation=f"reconciliations/{region.token}-1",
        scheduled=True,
        summary=sync_pb2.RegionReconciliation(
            region=region.to_proto(),  # type: ignore[arg-type]
            local_records=held + stale + 10,
            in_sync=10,
            held=sync_pb2.AgedCount(count=held),
            stale=sync_pb2.AgedCount(count=stale),
        ),
    )


def deconfliction(other: Region) -> entity_events.DeconflictionNotice:
    return entity_events.DeconflictionNotice(
        entity="entities/e-secret-1",
        own_records=["regions/EMSOU/records/AB12CDE"],
        other_region=other.to_proto(),  # type: ignore[arg-type]
        contact_role="supervisor",
    )
