"""Finding 7: a referral could write notes on any region's job.

`linked_job` was checked for shape only, and the notes went out with the safeguarding
service's national identity. Now the job must be one the referral's author may see: the
safeguarding service asks tasking with the author's own token, and a job they may not see
answers exactly as a missing one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as tpb
from toex.tasking.v1 import tasking_pb2_grpc

SO = "safeguarding_officer.emsou"


async def test_a_referral_links_only_jobs_its_author_may_see(postgres, launch) -> None:  # type: ignore[no-untyped-def]
    tasking_db = postgres.create_database(f"t_sec_tasking_{uuid.uuid4().hex[:10]}")
    tasking = await launch("toex_tasking", tasking_pb2_grpc.TaskingServiceStub, database=tasking_db)
    safeguarding = await launch(
        "toex_safeguarding",
        safeguarding_pb2_grpc.SafeguardingServiceStub,
        service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
        tasking_address=f"127.0.0.1:{tasking.app.port}",
    )
    # The tasking database goes with the session's throwaway cluster.
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    jobs = {}
    for region in ("EMSOU", "ERSOU"):
        jobs[region] = (
            await tasking.stub.CreateJob(
                tpb.CreateJobRequest(
                    parent=f"regions/{region}",
                    job=tpb.Job(
                        requesting_unit="Unit",
                        operation_name="Op HERON",
                        job_type=tpb.JOB_TYPE_SAFEGUARDING,
                        due_time=due,
                    ),
                ),
                metadata=tasking.md("national_coordinator.national"),
            )
        ).job.name

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
