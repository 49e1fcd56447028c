"""Finding 12: AssignJob told the caller which region a user belongs to (and whether a name is
a user at all, and whether a user is a researcher): a directory lookup for anyone with a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb


async def test_assign_job_tells_nothing_about_other_regions_users(tasking) -> None:
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    job = (
        await tasking.stub.CreateJob(
            pb.CreateJobRequest(
                parent="regions/EMSOU",
                job=pb.Job(
                    requesting_unit="Leicestershire Police",
                    operation_name="Op WREN",
                    job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
                    due_time=due,
                ),
            ),
            metadata=tasking.md("supervisor.emsou"),
        )
    ).job
    answers = []
    for probe in ("researcher.ersou", "analyst.ersou", "nobody.at.all"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasking.stub.AssignJob(
                pb.AssignJobRequest(name=job.name, assignees=[probe]), metadata=tasking.md("supervisor.emsou")
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = refused.value.details() or ""
        assert "ERSOU" not in details
        answers.append(details.replace(probe, "NAME"))
    # The same answer for a researcher of another region, a non-researcher and no one.
    assert len(set(answers)) == 1, answers
    # Its own region's researcher is assigned.
    assigned = await tasking.stub.AssignJob(
        pb.AssignJobRequest(name=job.name, assignees=["researcher.emsou"]),
        metadata=tasking.md("supervisor.emsou"),
    )
    assert "researcher.emsou" in str(assigned)
