"""Referral outcomes reach the linked job as events: every referral event names the job the
referral is linked to and the state the change left it in, so the tasking service shows the
referral on the job from the events alone (no JobNoteRequested is published any more); none
carries the subject's details."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from google.protobuf.message import Message
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex_common.testing.fakes import principal
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.calendar import LONDON
from toex_safeguarding.domain.model import Evidence, Subject
from toex_safeguarding.domain.values import (
    Concern,
    DecisionKind,
    Destination,
    EvidenceKind,
    Outcome,
    RiskLevel,
)
from toex_safeguarding.service_layer import handlers

from .fakes import FakeJobs, FakeSafeguardingUnitOfWork

NOW = datetime(2025, 4, 14, 9, 0, tzinfo=LONDON)
SO = principal("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)
JOB = "regions/EMSOU/jobs/job1"
# What identifies the subject, none of which may reach an event.
ENTITY = "ent-subject-4711"
DOB = date(2012, 3, 4)
AUTHORITY = "Derby City"


def referral_events(uow: FakeSafeguardingUnitOfWork) -> list[tuple[str, Message]]:
    return [(kind, m) for kind, _, m in uow.published()]


async def test_every_referral_event_names_the_job_and_the_state_never_the_subject() -> None:
    uow = FakeSafeguardingUnitOfWork()
    now = [NOW]
    deps = handlers.Deps(uow=lambda: uow, clock=lambda: now[0], jobs=FakeJobs(JOB))  # type: ignore[arg-type,return-value]
    r = await handlers.create_referral(
        commands.CreateReferral(
            SO,
            Region.EMSOU,
            Subject(ENTITY, date_of_birth=DOB, local_authority=AUTHORITY),
            [Concern.CHILD_SEXUAL_EXPLOITATION],
            RiskLevel.HIGH,
            linked_job=JOB,
            destinations=[Destination.CHILDRENS_SOCIAL_CARE],
        ),
        deps,
    )
    await handlers.update_referral(
        commands.UpdateReferral(
            SO,
            Region.EMSOU,
            r.id,
            commands.Revision(evidence=[Evidence(EvidenceKind.DATASET, "regions/EMSOU/datasets/d1", "cdr")]),
        ),
        deps,
    )
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, r.id), deps)
    await handlers.return_referral(commands.Transition(SUP, Region.EMSOU, r.id, "add the strategy"), deps)
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, r.id), deps)
    await handlers.approve_referral(commands.Transition(SUP, Region.EMSOU, r.id), deps)
    await handlers.record_submission(
        commands.RecordSubmission(SO, Region.EMSOU, r.id, Destination.CHILDRENS_SOCIAL_CARE), deps
    )
    now[0] = NOW + timedelta(days=2)  # the local authority's day has passed
    assert await handlers.escalate_overdue(commands.EscalateOverdue(now[0]), deps) == 1
    await handlers.record_acknowledgement(
        commands.RecordAcknowledgement(SO, Region.EMSOU, r.id, Destination.CHILDRENS_SOCIAL_CARE), deps
    )
    await handlers.record_decision(
        commands.RecordDecision(
            SO,
            Region.EMSOU,
            r.id,
            Destination.CHILDRENS_SOCIAL_CARE,
            DecisionKind.LOCAL_AUTHORITY,
            Outcome.POSITIVE,
            "strategy discussion convened",
        ),
        deps,
    )
    await handlers.close_referral(commands.Transition(SO, Region.EMSOU, r.id, "child safeguarded"), deps)

    published = referral_events(uow)
    assert [(kind, m.state) for kind, m in published] == [  # type: ignore[attr-defined]
        ("ReferralDrafted", pb.REFERRAL_STATE_DRAFT),
        ("ReferralEvidenceAdded", pb.REFERRAL_STATE_DRAFT),
        ("ReferralReturned", pb.REFERRAL_STATE_DRAFT),
        ("ReferralApproved", pb.REFERRAL_STATE_APPROVED),
        ("ReferralSubmitted", pb.REFERRAL_STATE_SUBMITTED),
        ("ReferralOverdue", pb.REFERRAL_STATE_SUBMITTED),
        ("ReferralDecisionRecorded", pb.REFERRAL_STATE_DECIDED),
        ("ReferralClosed", pb.REFERRAL_STATE_CLOSED),
    ]
    for kind, m in published:
        assert (m.referral, m.linked_job) == (r.name, JOB), kind  # type: ignore[attr-defined]
        assert m.label.region == Region.EMSOU.to_proto(), kind  # type: ignore[attr-defined]
    closed = published[-1][1]
    assert closed.previous_state == pb.REFERRAL_STATE_DECIDED  # type: ignore[attr-defined]

    # Nothing of the subject in any event: not its entity, date of birth or local authority.
    for envelope in uow.committed_events:
        for detail in (ENTITY, DOB.isoformat(), DOB.strftime("%d/%m/%Y"), AUTHORITY):
            assert detail.encode() not in envelope.payload, (envelope.event_type, detail)
        assert ENTITY not in str(dict(envelope.headers))
    # The events are all the job is told: no note is asked of tasking.
    assert len(published) == len(uow.committed_events)
    assert not any(e.event_type.endswith("JobNoteRequested") for e in uow.committed_events)


async def test_a_referral_linked_to_no_job_says_so() -> None:
    uow = FakeSafeguardingUnitOfWork()
    deps = handlers.Deps(uow=lambda: uow, clock=lambda: NOW, jobs=FakeJobs(JOB))  # type: ignore[arg-type,return-value]
    r = await handlers.create_referral(
        commands.CreateReferral(SO, Region.EMSOU, Subject("ent-2"), [Concern.OTHER], RiskLevel.LOW), deps
    )
    await handlers.close_referral(commands.Transition(SO, Region.EMSOU, r.id, "raised in error"), deps)
    published = referral_events(uow)
    assert [kind for kind, _ in published] == ["ReferralDrafted", "ReferralClosed"]
    assert all(m.linked_job == "" for _, m in published)  # type: ignore[attr-defined]
    assert published[1][1].state == pb.REFERRAL_STATE_CLOSED  # type: ignore[attr-defined]
