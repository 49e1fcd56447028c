"""Work under a job grant against the real service: tasking's v2 events (published here as
tasking publishes them) give job J of EMSOU its holders; a holder with a safeguarding role reads
J's referrals and adds evidence to them with J as the purpose, and nothing else of EMSOU; a
researcher holding J is refused as every researcher is (a grant gives no role); once J names
ERSOU as a collaborating region (JobUpdated), ERSOU's supervisor reads and lists J's referrals
and changes nothing, while ERSOU's officer taken off J and a supervisor of a region J does not
name reach nothing; once J closes, the same calls answer NOT_FOUND. The audit log records the
reads with J as their purpose.

Tasking assigns jobs to researchers only, so an officer of ERSOU among J's holders is this
test's doing: the one way to see the grant admit someone, with a real token of a real role."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import nats
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.db import audit_table
from toex_common.events import build_event
from toex_kernel.grants import JobGrant
from toex_kernel.regions import Region
from toex_safeguarding.domain.commands import Trigger
from toex_safeguarding.domain.model import Evidence
from toex_safeguarding.domain.values import Concern, EvidenceKind
from toex_safeguarding.service_layer import handlers

from .conftest import Running
from .test_safeguarding_service import eventually, md

pytestmark = pytest.mark.integration

HOLDER = "safeguarding_officer.ersou"  # holds the job, with a safeguarding role of their own
RESEARCHER = "researcher.london"  # holds the job, as tasking's assignees do
NOT_HOLDING = "supervisor.ersou"  # holds nothing; reads once ERSOU collaborates on the job
NOT_COLLABORATING = "supervisor.rocuwm"


async def publish_access(nats_url: str, message: object) -> None:
    envelope = build_event(message, domain="tasking", source="test", region=Region.EMSOU)  # type: ignore[arg-type]
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(envelope.subject, envelope.payload, headers=dict(envelope.headers))
    finally:
        await nc.close()


def access(revision: int, state: int, *holders: str, collaborating: tuple[Region, ...] = ()) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[ev.Assignee(username=h) for h in holders],
        collaborating_regions=[r.to_proto() for r in collaborating],  # type: ignore[misc]
    )


async def grant_of(sg: Running, job: str) -> JobGrant | None:
    async with sg.app.deps.uow() as uow:
        return await uow.grants.of_job(job)


async def draft(sg: Running, job: str) -> str:
    """A referral drafted by a finding under `job` (as comms' findings under a job draft them)."""
    subject = f"ent-{uuid.uuid4().hex[:8]}"
    trigger = Trigger(
        source_event_id=f"ev-{uuid.uuid4().hex}",
        source_type="test.Finding",
        region=Region.EMSOU,
        subject_entity_id=subject,
        concern=Concern.CHILD_SEXUAL_EXPLOITATION,
        evidence=[Evidence(EvidenceKind.EVENT, f"ev-{subject}", "finding")],
        linked_job=job,
    )
    async with sg.app.deps.uow() as uow:
        referral = await handlers.draft_from_trigger(trigger, uow, datetime.now(UTC))
        await uow.commit()
    return referral.name


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value.code()


async def test_a_job_grant_reaches_the_jobs_referrals_only_while_the_job_is_open(
    safeguarding: Running, nats_server
) -> None:
    sg = safeguarding
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"
    mine = await draft(sg, job)
    other = await draft(sg, f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}")
    unlinked = await draft(sg, "")

    await publish_access(nats_server.url, ev.JobCreated(job=job, access=access(1, ev.JOB_STATE_RAISED)))
    await publish_access(
        nats_server.url,
        ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, RESEARCHER, HOLDER)),
    )

    async def granted() -> bool:
        found = await grant_of(sg, job)
        return found is not None and found.open and HOLDER in found.holders

    await eventually(granted, what="the job's grant in the service's read model")

    under_job = md(sg.token(HOLDER), job)
    get = pb.GetReferralRequest(name=mine)
    # The holder reads the job's referral, lists the region as the job's referrals alone, and
    # adds evidence to it.
    assert (await sg.stub.GetReferral(get, metadata=under_job)).referral.name == mine
    listed = await sg.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", page_size=500), metadata=under_job
    )
    assert [r.name for r in listed.referrals] == [mine]
    updated = (
        await sg.stub.UpdateReferral(
            pb.UpdateReferralRequest(
                referral=pb.Referral(
                    name=mine,
                    evidence=[pb.Evidence(kind=pb.EVIDENCE_KIND_DATASET, ref="regions/EMSOU/datasets/cdr7")],
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["evidence"]),
            ),
            metadata=under_job,
        )
    ).referral
    assert [e.added_by for e in updated.evidence if e.ref == "regions/EMSOU/datasets/cdr7"] == [HOLDER]

    # Nothing else of the region, nothing without the job as the purpose, no officer's work.
    for name in (other, unlinked):
        assert (
            await code_of(sg.stub.GetReferral(pb.GetReferralRequest(name=name), metadata=under_job))
            is grpc.StatusCode.NOT_FOUND
        )
    assert (
        await code_of(sg.stub.GetReferral(get, metadata=md(sg.token(HOLDER), "Op SANDPIPER")))
        is grpc.StatusCode.NOT_FOUND
    )
    assert (
        await code_of(sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=mine), metadata=under_job))
        is grpc.StatusCode.NOT_FOUND
    )
    assert (
        await code_of(sg.stub.ListOverdue(pb.ListOverdueRequest(parent="regions/EMSOU"), metadata=under_job))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # Not among the holders: as any other region's referral.
    assert (
        await code_of(sg.stub.GetReferral(get, metadata=md(sg.token(NOT_HOLDING), job)))
        is grpc.StatusCode.NOT_FOUND
    )
    # A researcher holding the job gets no role from it: refused as the region's own researchers.
    for researcher in (RESEARCHER, "researcher.emsou"):
        assert (
            await code_of(sg.stub.GetReferral(get, metadata=md(sg.token(researcher), job)))
            is grpc.StatusCode.PERMISSION_DENIED
        )

    # The job names ERSOU as a collaborating region, and the ERSOU officer is taken off it.
    await publish_access(
        nats_server.url,
        ev.JobUpdated(
            job=job,
            changed_fields=["collaborating_regions"],
            access=access(3, ev.JOB_STATE_ASSIGNED, RESEARCHER, collaborating=(Region.ERSOU,)),
        ),
    )

    async def collaborating() -> bool:
        found = await grant_of(sg, job)
        return found is not None and Region.ERSOU in found.collaborators

    await eventually(collaborating, what="ERSOU collaborating on the job in the read model")
    as_collaborator = md(sg.token(NOT_HOLDING), job)
    # ERSOU's supervisor reads and lists the job's referrals, nothing else, and changes nothing.
    assert (await sg.stub.GetReferral(get, metadata=as_collaborator)).referral.name == mine
    listed = await sg.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", page_size=500), metadata=as_collaborator
    )
    assert [r.name for r in listed.referrals] == [mine]
    assert (
        await code_of(sg.stub.GetReferral(pb.GetReferralRequest(name=other), metadata=as_collaborator))
        is grpc.StatusCode.NOT_FOUND
    )
    evidence_only = pb.UpdateReferralRequest(
        referral=pb.Referral(
            name=mine,
            evidence=[pb.Evidence(kind=pb.EVIDENCE_KIND_DATASET, ref="regions/EMSOU/datasets/cdr8")],
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["evidence"]),
    )
    assert (
        await code_of(sg.stub.UpdateReferral(evidence_only, metadata=as_collaborator))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await code_of(
            sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=mine), metadata=as_collaborator)
        )
        is grpc.StatusCode.NOT_FOUND
    )
    after = (await sg.stub.GetReferral(get, metadata=as_collaborator)).referral
    assert not any(e.ref == "regions/EMSOU/datasets/cdr8" for e in after.evidence)
    assert after.state == pb.REFERRAL_STATE_DRAFT
    # ERSOU's officer, no supervisor and no longer holding the job, and a supervisor of a region
    # the job does not name: as any other region's referral.
    for token in (sg.token(HOLDER), sg.token(NOT_COLLABORATING)):
        assert await code_of(sg.stub.GetReferral(get, metadata=md(token, job))) is grpc.StatusCode.NOT_FOUND
        assert (
            await code_of(
                sg.stub.ListReferrals(
                    pb.ListReferralsRequest(parent="regions/EMSOU"), metadata=md(token, job)
                )
            )
            is grpc.StatusCode.PERMISSION_DENIED
        )

    # The job closes (a later revision): the same calls answer as for any other region's.
    await publish_access(
        nats_server.url,
        ev.JobStatusChanged(
            job=job,
            access=access(4, ev.JOB_STATE_CLOSED, RESEARCHER, HOLDER, collaborating=(Region.ERSOU,)),
        ),
    )

    async def closed() -> bool:
        found = await grant_of(sg, job)
        return found is not None and not found.open

    await eventually(closed, what="the job's grant ended")
    assert await code_of(sg.stub.GetReferral(get, metadata=as_collaborator)) is grpc.StatusCode.NOT_FOUND
    assert await code_of(sg.stub.GetReferral(get, metadata=under_job)) is grpc.StatusCode.NOT_FOUND
    assert (
        await code_of(
            sg.stub.ListReferrals(pb.ListReferralsRequest(parent="regions/EMSOU"), metadata=under_job)
        )
        is grpc.StatusCode.PERMISSION_DENIED
    )

    async with sg.app.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(audit_table)
                    .where(audit_table.c.actor_username == HOLDER)
                    .order_by(audit_table.c.seq)
                )
            )
            .mappings()
            .all()
        )
    reads = [
        (r["action"].rsplit("/", 1)[-1], r["outcome"], r["purpose"], list(r["resources"] or []))
        for r in rows
        if r["action"].endswith("/GetReferral")
    ]
    assert ("GetReferral", "OK", job, [mine]) in reads
    assert ("GetReferral", "DENIED_OUT_OF_SCOPE", job, [other]) in reads
    assert ("GetReferral", "DENIED_OUT_OF_SCOPE", "Op SANDPIPER", [mine]) in reads
    assert reads[-1] == ("GetReferral", "DENIED_OUT_OF_SCOPE", job, [mine])  # after the job closed

    async with sg.app.engine.connect() as conn:
        collaborator_reads = (
            await conn.execute(
                select(audit_table.c.outcome, audit_table.c.purpose, audit_table.c.resources)
                .where(audit_table.c.actor_username == NOT_HOLDING)
                .where(audit_table.c.action.endswith("/GetReferral"))
                .order_by(audit_table.c.seq)
            )
        ).all()
    assert ("OK", job, [mine]) in [(o, p, list(r or [])) for o, p, r in collaborator_reads]
