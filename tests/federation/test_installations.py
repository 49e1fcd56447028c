"""Each installation serves its own region: another region's writes are refused with the error
that names where to go; the CLI, with the federation's directory of installations, sends each call
to the installation serving its region and gathers every region's; and the London researcher
works an EMSOU job at EMSOU's installation with their own token, LONDON's holding none of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc, pole_pb2
from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex_common.grpc.status import wrong_installation
from toex_devstack.federation import Federation
from toex_devstack.keycloak import DemoTokens

from .conftest import COORDINATOR, Toex, channel, eventually, fetch, md, overview, run
from .work import OFFICER, create_job, ok

LONDON_RESEARCHER = "researcher.london"


def refused(call: Callable[[], Any], region: str) -> str:
    """The call is refused as another installation's, naming the one serving `region`; its message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status details"
    installation = "hub" if region == "NATIONAL" else region
    assert wrong_installation(status) == {"region": region, "installation": installation}
    message = str(error.details())
    served_by = "the national hub" if region == "NATIONAL" else f"the {region} installation"
    assert message.startswith(f"{region}'s resources are served by {served_by}; this is "), message
    return message


def job(region: str) -> tasking_pb2.CreateJobRequest:
    return tasking_pb2.CreateJobRequest(
        parent=f"regions/{region}",
        job=tasking_pb2.Job(
            job_type=tasking_pb2.JOB_TYPE_COMMS_ANALYSIS,
            requesting_unit="Leicestershire Police",
            requesting_officer="DS Test",
            operation_name="Op Wrongdoor",
            due_time=Timestamp(seconds=1_893_456_000),  # 2030-01-01
        ),
    )


def test_a_region_installation_refuses_another_regions_writes_naming_where_to_go(
    federation: Federation, tokens: DemoTokens, toex: Toex
) -> None:
    with channel(federation, "LONDON", "tasking") as chan:
        stub = tasking_pb2_grpc.TaskingServiceStub(chan)
        message = refused(lambda: stub.CreateJob(job("EMSOU"), metadata=md(tokens[COORDINATOR])), "EMSOU")
        assert message.endswith("this is the LONDON installation")
        # Its own region's write it takes (the rule both ways).
        made = stub.CreateJob(job("LONDON"), metadata=md(tokens[COORDINATOR]))
        assert made.job.name.startswith("regions/LONDON/jobs/")
    with channel(federation, "LONDON", "pnd") as chan:
        plate = pnd_pb2.SubmitIntelligenceRequest(
            parent="regions/EMSOU",
            record=pnd_pb2.IntelligenceRecord(
                entity=pole_pb2.PoleEntity(vehicle=pole_pb2.Vehicle(vrm="AB12CDE"))
            ),
        )
        pnd = pnd_pb2_grpc.PndSyncServiceStub(chan)
        refused(lambda: pnd.SubmitIntelligence(plate, metadata=md(tokens["researcher.emsou"])), "EMSOU")
    with channel(federation, "LONDON", "safeguarding") as chan:
        draft = safeguarding_pb2.CreateReferralRequest(
            parent="regions/EMSOU",
            referral=safeguarding_pb2.Referral(
                subject=safeguarding_pb2.Subject(entity_id="ent-wrongdoor"),
                concerns=[safeguarding_pb2.CONCERN_CHILD_SEXUAL_EXPLOITATION],
            ),
        )
        referrals = safeguarding_pb2_grpc.SafeguardingServiceStub(chan)
        refused(lambda: referrals.CreateReferral(draft, metadata=md(tokens[OFFICER])), "EMSOU")
    # The hub holds the national team's work only; a region does not hold the national team's.
    with channel(federation, "hub", "tasking") as chan:
        stub = tasking_pb2_grpc.TaskingServiceStub(chan)
        assert refused(
            lambda: stub.CreateJob(job("EMSOU"), metadata=md(tokens[COORDINATOR])), "EMSOU"
        ).endswith("this is the national hub")
    with channel(federation, "EMSOU", "tasking") as chan:
        stub = tasking_pb2_grpc.TaskingServiceStub(chan)
        refused(lambda: stub.CreateJob(job("NATIONAL"), metadata=md(tokens[COORDINATOR])), "NATIONAL")

    # The CLI without the directory, sent to LONDON's tasking, says where to go.
    result = toex(
        COORDINATOR, "jobs", "create", "--region", "EMSOU", "--type", "anpr", "--unit", "Derbyshire Police",
        "--officer", "DS Test", "--operation", "Op Wrongdoor", "--due", "2030-01-01", directory=False,
        env={"TOEX_TASKING_ADDR": federation.service_address("LONDON", "tasking")},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "FAILED_PRECONDITION" in result.stderr and "reason WRONG_INSTALLATION (toex)" in result.stderr
    assert "EMSOU is served by installation EMSOU" in result.stderr


def _audited_reads(federation: Federation, database: str, job_name: str) -> int:
    rows = run(
        fetch(federation, database, "SELECT count(*) AS n FROM audit_log WHERE $1 = ANY(resources)", job_name)
    )
    return int(rows[0]["n"])


def test_the_cli_sends_each_call_to_the_installation_serving_its_region(
    federation: Federation, toex: Toex
) -> None:
    emsou_job, london_job, national_job = (create_job(toex, r) for r in ("EMSOU", "LONDON", "NATIONAL"))
    short = "EMSOU/" + emsou_job.rsplit("/", 1)[1]
    audited_before = _audited_reads(federation, "toex_emsou_tasking", emsou_job)

    shown = toex(COORDINATOR, "jobs", "show", short, "--format", "json")

    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["name"] == emsou_job
    assert "does not serve" not in shown.stderr  # asked at EMSOU's first, not redirected there
    # EMSOU's installation answered (its audit log has the read); LONDON's and the hub's hold nothing of it.
    assert _audited_reads(federation, "toex_emsou_tasking", emsou_job) == audited_before + 1
    for database in ("toex_london_tasking", "toex_hub_tasking"):
        rows = run(
            fetch(federation, database, "SELECT id FROM jobs WHERE id = $1", emsou_job.rsplit("/", 1)[1])
        )
        assert rows == [] and _audited_reads(federation, database, emsou_job) == 0

    # Every region: each installation asked, the answers merged; every one answered.
    listed = toex(COORDINATOR, "jobs", "list", "--region", "-", "--all", "--format", "json")
    assert listed.exit_code == 0, listed.output
    names = {j["name"] for j in json.loads(listed.stdout)["jobs"]}
    assert {emsou_job, london_job, national_job} <= names
    assert "not answered" not in listed.stderr
    assert {name.split("/")[1] for name in names} == {"EMSOU", "LONDON", "NATIONAL"}

    # One installation asked alone holds its own region's jobs only.
    at_london = toex(
        COORDINATOR, "jobs", "list", "--region", "LONDON", "--all", "--format", "json", directory=False,
        env={"TOEX_TASKING_ADDR": federation.service_address("LONDON", "tasking")},
    )  # fmt: skip
    assert at_london.exit_code == 0, at_london.output
    london_names = {j["name"] for j in json.loads(at_london.stdout)["jobs"]}
    assert london_job in london_names and emsou_job not in london_names


def test_the_london_researcher_works_an_emsou_job_at_emsous_installation(
    federation: Federation, tokens: DemoTokens, toex: Toex
) -> None:
    emsou_job = create_job(toex, "EMSOU")
    job_id = emsou_job.rsplit("/", 1)[1]
    taken_before = overview(federation, tokens, "EMSOU").jobs.taken_by_other_regions

    # Not assigned: the job is out of their reach (as missing).
    unassigned = toex(LONDON_RESEARCHER, "jobs", "show", emsou_job)
    assert unassigned.exit_code == 1 and "NOT_FOUND" in unassigned.stderr, unassigned.output

    ok(toex(COORDINATOR, "jobs", "assign", emsou_job, LONDON_RESEARCHER, "--format", "json"), "assign")
    shown = ok(toex(LONDON_RESEARCHER, "jobs", "show", emsou_job, "--format", "json"), "show as London")
    assert LONDON_RESEARCHER in [a["username"] for a in shown["assignees"]]
    moved = toex(LONDON_RESEARCHER, "jobs", "status", emsou_job, "in_progress")
    assert moved.exit_code == 0, moved.output

    # Their own list of every region finds it at EMSOU's installation.
    mine = ok(toex(LONDON_RESEARCHER, "jobs", "list", "--all", "--format", "json"), "London's list")
    assert emsou_job in [j["name"] for j in mine["jobs"]]
    # Worked at EMSOU's installation by London's researcher, audited there; LONDON holds none of it.
    rows = run(
        fetch(
            federation,
            "toex_emsou_tasking",
            "SELECT count(*) AS n FROM audit_log WHERE $1 = ANY(resources) AND actor_username = $2 "
            "AND actor_region = 'LONDON'",
            emsou_job,
            LONDON_RESEARCHER,
        )
    )
    assert rows[0]["n"] >= 3
    held = run(fetch(federation, "toex_london_tasking", "SELECT id FROM jobs WHERE id = $1", job_id))
    assert held == []
    # Tasking resilience reaches the national figures: EMSOU's job taken by LONDON.
    eventually(
        lambda: overview(federation, tokens, "EMSOU").jobs.taken_by_other_regions > taken_before,
        "the job taken by LONDON in the hub's overview",
    )
