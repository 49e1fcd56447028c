"""The overview <-> protobuf (toex.oversight.v1)."""

from __future__ import annotations

from collections import Counter

from toex.oversight.v1 import oversight_pb2 as pb
from toex_kernel.forces import ThreatCategory
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp

from toex_oversight.domain.overview import (
    JobSummary,
    Overview,
    PndSummary,
    ReferralSummary,
    RegionSummary,
)

JOB_STATES = ("RAISED", "ASSIGNED", "IN_PROGRESS", "DELIVERED", "CLOSED", "DECLINED", "CANCELLED")
JOB_TYPES = (
    "COMMS_ANALYSIS",
    "ANPR",
    "INTELLIGENCE_DEVELOPMENT",
    "OPEN_SOURCE",
    "SYSTEMS_CHECKS",
    "SAFEGUARDING",
)
PRIORITIES = ("ROUTINE", "PRIORITY", "URGENT")
REFERRAL_STATES = (
    "DRAFT",
    "AWAITING_APPROVAL",
    "APPROVED",
    "SUBMITTED",
    "ACKNOWLEDGED",
    "DECIDED",
    "CLOSED",
)


def _fields(counts: Counter[str], names: tuple[str, ...]) -> dict[str, int]:
    """`{"in_progress": 3, ...}`: the message's fields are the names in lower case."""
    return {name.lower(): counts[name] for name in names}


def _region_counts(counts: Counter[Region]) -> list[pb.RegionCount]:
    return [
        pb.RegionCount(region=region.to_proto(), count=counts[region])  # type: ignore[arg-type]
        for region in Region
        if counts[region]
    ]


def jobs_to_proto(jobs: JobSummary) -> pb.JobFigures:
    return pb.JobFigures(
        raised=jobs.raised,
        states=pb.JobStates(**_fields(jobs.states, JOB_STATES)),
        types=pb.JobTypes(**_fields(jobs.types, JOB_TYPES)),
        priorities=pb.Priorities(**_fields(jobs.priorities, PRIORITIES)),
        open=jobs.open,
        overdue=jobs.overdue,
        delivered_on_time=jobs.delivered_on_time,
        delivered_late=jobs.delivered_late,
        taken_by_other_regions=jobs.taken_by_other_regions,
        taken_by=_region_counts(jobs.taken_by),
        taken_for_other_regions=jobs.taken_for_other_regions,
        feedback=pb.Feedback(
            rated=jobs.rated,
            mean_rating=round(jobs.mean_rating, 2),
            by_rating=[jobs.ratings[r] for r in range(1, 6)],
            commented=jobs.commented,
        ),
        threats=_threat_counts(jobs.threats),
    )


def _threat_counts(counts: Counter[str]) -> list[pb.ThreatCount]:
    """In the code list's order; a code this build does not know is left out."""
    return [
        pb.ThreatCount(threat_category=threat.to_proto(), count=counts[threat.code])  # type: ignore[arg-type]
        for threat in ThreatCategory
        if counts[threat.code]
    ]


def referrals_to_proto(referrals: ReferralSummary) -> pb.ReferralFigures:
    return pb.ReferralFigures(
        drafted=referrals.drafted,
        states=pb.ReferralStates(**_fields(referrals.states, REFERRAL_STATES)),
        clocks=pb.StatutoryClocks(
            met_on_time=referrals.met_on_time,
            met_late=referrals.met_late,
            due=referrals.due,
            overdue=referrals.overdue,
        ),
    )


def pnd_to_proto(pnd: PndSummary) -> pb.PndFigures:
    figures = pb.PndFigures(accepted=pnd.accepted, rejected=pnd.rejected, conflicts=pnd.conflicts)
    found = pnd.reconciliation
    if found is not None:
        figures.reconciliation.CopyFrom(
            pb.PndReconciliation(
                complete_time=timestamp(found.completed_at),
                local_records=found.local_records,
                in_sync=found.in_sync,
                held=found.held,
                stale=found.stale,
                missing=found.missing,
                rejected=found.rejected,
                conflict=found.conflict,
            )
        )
    return figures


def region_to_proto(summary: RegionSummary) -> pb.RegionFigures:
    figures = pb.RegionFigures(
        jobs=jobs_to_proto(summary.jobs),
        referrals=referrals_to_proto(summary.referrals),
        pnd=pnd_to_proto(summary.pnd),
        deconfliction=pb.DeconflictionFigures(
            notices=summary.deconfliction.notices,
            with_regions=_region_counts(summary.deconfliction.with_regions),
        ),
        events_counted=summary.events_counted,
    )
    if summary.region is not None:
        figures.region = summary.region.to_proto()  # type: ignore[assignment]
    if summary.latest_event_at is not None:
        figures.latest_event_time.CopyFrom(timestamp(summary.latest_event_at))
    return figures


def overview_to_proto(overview: Overview) -> pb.GetOverviewResponse:
    return pb.GetOverviewResponse(
        period=pb.Period(
            first_day=overview.period.first.isoformat(), last_day=overview.period.last.isoformat()
        ),
        read_time=timestamp(overview.read_at),
        regions=[region_to_proto(summary) for summary in overview.regions],
        total=region_to_proto(overview.total),
        force=overview.force,
        notes=overview.notes,
    )
