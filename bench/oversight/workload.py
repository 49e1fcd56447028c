"""Regions' events as their services publish them, interleaved as work goes on, and what the
overview must then show (for the count checks)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from toex.entity.events.v1 import events_pb2 as entity_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.events.envelope import EventEnvelope, build_event
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp

TWO_REGIONS = (Region.EMSOU, Region.LONDON)


def _access(revision: int, state: int, assignee: Region | None) -> ev.JobAccess:
    people = [] if assignee is None else [ev.Assignee(username="researcher", region=assignee.to_proto())]  # type: ignore[arg-type]
    return ev.JobAccess(revision=revision, state=state, assignees=people)  # type: ignore[arg-type]


def job_events(job: str, region: Region, taker: Region, now: datetime) -> list[Any]:
    due = timestamp(now + timedelta(days=3))
    kind = ev.JOB_TYPE_COMMS_ANALYSIS
    return [
        ev.JobCreated(
            job=job, job_type=kind, priority=ev.PRIORITY_ROUTINE, due_time=due, access=_access(1, 1, None)
        ),
        ev.JobAssigned(job=job, job_type=kind, access=_access(2, ev.JOB_STATE_ASSIGNED, taker)),
        ev.JobStatusChanged(job=job, state=ev.JOB_STATE_ASSIGNED, job_type=kind, access=_access(2, 2, taker)),
        ev.JobStatusChanged(
            job=job,
            state=ev.JOB_STATE_IN_PROGRESS,
            job_type=kind,
            access=_access(3, ev.JOB_STATE_IN_PROGRESS, taker),
        ),
        ev.JobStatusChanged(
            job=job,
            state=ev.JOB_STATE_DELIVERED,
            job_type=kind,
            access=_access(4, ev.JOB_STATE_DELIVERED, taker),
        ),
        ev.JobStatusChanged(
            job=job, state=ev.JOB_STATE_CLOSED, job_type=kind, access=_access(5, ev.JOB_STATE_CLOSED, taker)
        ),
        ev.FeedbackRecorded(job=job, rating=4, record_time=timestamp(now)),
    ]


def referral_events(referral: str, now: datetime) -> list[Any]:
    return [
        sg_events.ReferralDrafted(referral=referral, state=sg.REFERRAL_STATE_DRAFT),
        sg_events.ReferralApproved(referral=referral, state=sg.REFERRAL_STATE_APPROVED),
        sg_events.ReferralSubmitted(
            referral=referral,
            destination=sg.DESTINATION_CHILDRENS_SOCIAL_CARE,
            submit_time=timestamp(now),
            decision_due_time=timestamp(now + timedelta(days=1)),
            state=sg.REFERRAL_STATE_SUBMITTED,
        ),
    ]


DOMAINS = {ev.DESCRIPTOR.package: "tasking", sg_events.DESCRIPTOR.package: "safeguarding"}


@dataclass
class Expected:
    """What the overview must show once every event is counted."""

    events: int = 0
    jobs: Counter[Region] = field(default_factory=Counter)
    closed: Counter[Region] = field(default_factory=Counter)
    referrals: Counter[Region] = field(default_factory=Counter)
    pnd: Counter[Region] = field(default_factory=Counter)
    notices: Counter[Region] = field(default_factory=Counter)


@dataclass
class Planned:
    envelope: EventEnvelope
    region: Region
    # The lag probes: the job's index among its region's JobCreated events, or the referral's
    # among its region's ReferralDrafted events; -1 for other events.
    created: int = -1
    drafted: int = -1


def workload(
    count: int, seed: int = 15, regions: tuple[Region, ...] = TWO_REGIONS
) -> tuple[list[Planned], Expected]:
    """`count` events of jobs, referrals, PND answers and deconfliction notices of `regions`,
    interleaved as work in flight is (about 50 jobs and referrals at a time): tasking about three
    quarters of them. Every job and referral that is started is finished within `count`."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    expected = Expected()
    planned: list[Planned] = []
    active: list[tuple[Region, list[Any], str]] = []
    created = Counter[Region]()
    drafted = Counter[Region]()
    while len(planned) < count:
        left = count - len(planned) - sum(len(seq) for _, seq, _ in active)
        if len(active) < 50 and left >= 7:
            region = rng.choice(regions)
            roll = rng.random()
            if roll < 0.7:
                taker = rng.choice([r for r in regions if r is not region]) if rng.random() < 0.3 else region
                job = f"regions/{region.value}/jobs/{rng.getrandbits(64):016x}"
                active.append((region, job_events(job, region, taker, now), "tasking"))
                expected.jobs[region] += 1
                expected.closed[region] += 1
            elif roll < 0.85:
                referral = f"regions/{region.value}/referrals/{rng.getrandbits(64):016x}"
                active.append((region, referral_events(referral, now), "safeguarding"))
                expected.referrals[region] += 1
            elif roll < 0.97:
                message = (
                    pnd_events.SubmissionAccepted if rng.random() < 0.9 else pnd_events.SubmissionRejected
                )(record=f"regions/{region.value}/intelligence/{rng.getrandbits(32):08x}")
                active.append((region, [message], "pnd"))
                expected.pnd[region] += 1
            else:
                other = rng.choice([r for r in regions if r is not region])
                active.append(
                    (
                        region,
                        [
                            entity_events.DeconflictionNotice(
                                entity="entities/x", other_region=other.to_proto()
                            )
                        ],
                        "entity",
                    )  # type: ignore[arg-type]
                )
                expected.notices[region] += 1
            continue
        if not active:
            break
        position = rng.randrange(len(active))
        region, sequence, domain = active[position]
        message = sequence.pop(0)
        if not sequence:
            active.pop(position)
        envelope = build_event(message, domain=domain, source=f"toex/{domain}", region=region)
        index, drafted_index = -1, -1
        if isinstance(message, ev.JobCreated):
            index = created[region]
            created[region] += 1
        if isinstance(message, sg_events.ReferralDrafted):
            drafted_index = drafted[region]
            drafted[region] += 1
        planned.append(Planned(envelope, region, index, drafted_index))
    expected.events = len(planned)
    return planned, expected


def in_batches(items: list[Planned], size: int) -> Iterator[list[Planned]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
