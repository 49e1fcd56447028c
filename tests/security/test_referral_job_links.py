"""Finding 7: a referral could write notes on any region's job.

`linked_job` was checked for shape only, and the notes went out with the safeguarding
service's national identity. Now the job must be one the referral's author may see: the
safeguarding service asks tasking with the author's own token, and a job they may not see
answers exactly as a missing one."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from toex.safeguarding.v1 import safeguarding_pb2 as pb

from .conftest import Stack

SO = "safeguarding_officer.emsou"


async def test_a_referral_links_only_jobs_its_author_may_see(stack: Stack) -> None:
    safeguarding, jobs = stack.safeguarding, stack.jobs

    def referral(job: str) -> pb.CreateReferralRequest:
        return pb.CreateReferralRequest(
            parent="regions/EMSOU",
            referral=pb.Referral(
                subject=pb.Subject(entity_id=f"ent-{uuid.uuid4().hex[:8]}", age_band=pb.AGE_BAND_CHILD),
                concerns=[pb.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                linked_job=job,
            ),
        )

    # Another region's job answers as a job that does not exist.
    answers = []
    for job in (jobs["ERSOU"], f"regions/ERSOU/jobs/{uuid.uuid4().hex[:16]}"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await safeguarding.stub.CreateReferral(referral(job), metadata=safeguarding.md(SO))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        answers.append((refused.value.details() or "").replace(job, "JOB"))
    assert answers[0] == answers[1]

    # Its own region's job is linked; relinking to the other region's is refused too.
    created = (
        await safeguarding.stub.CreateReferral(referral(jobs["EMSOU"]), metadata=safeguarding.md(SO))
    ).referral
    assert created.linked_job == jobs["EMSOU"]
    with pytest.raises(grpc.aio.AioRpcError) as relinked:
        await safeguarding.stub.UpdateReferral(
            pb.UpdateReferralRequest(
                referral=pb.Referral(name=created.name, linked_job=jobs["ERSOU"]),
                update_mask=field_mask_pb2.FieldMask(paths=["linked_job"]),
            ),
            metadata=safeguarding.md(SO),
        )
    assert relinked.value.code() == grpc.StatusCode.NOT_FOUND
