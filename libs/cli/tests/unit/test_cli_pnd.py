"""`toex pnd` against a fake PND sync service: what the user is told when the PND is down, and
the job a record or search was made for."""

import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc, pole_pb2, sync_pb2

TOKEN = make_jwt(preferred_username="supervisor.emsou", realm_access={"roles": ["supervisor"]})


class PndDown(pnd_pb2_grpc.PndSyncServiceServicer):
    """The service is up; the PND behind it is not (what the real service answers then)."""

    def RunReconciliation(self, request: pb.RunReconciliationRequest, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "the PND's holdings cannot be read now: HTTP 503")

    def SearchPnd(self, request: pb.SearchPndRequest, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "the PND cannot be searched now: connection refused")


JOB = "regions/EMSOU/jobs/j42"
FOR_JOB = pb.IntelligenceRecord(
    name="regions/EMSOU/intelligence/r1",
    kind=pole_pb2.POLE_KIND_PHONE,
    entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164="+447700900123")),
    version=1,
    sync_state=sync_pb2.SYNC_STATE_SYNCED,
    created_by="researcher.london",
    job=JOB,
)
NO_JOB = pb.IntelligenceRecord(
    name="regions/EMSOU/intelligence/r2",
    kind=pole_pb2.POLE_KIND_PHONE,
    entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164="+447700900124")),
    version=1,
    sync_state=sync_pb2.SYNC_STATE_PENDING,
)


class PndWithJobs(pnd_pb2_grpc.PndSyncServiceServicer):
    """Records and searches as the service answers them: one made for a job, one for none."""

    def GetIntelligence(self, request: pb.GetIntelligenceRequest, context: grpc.ServicerContext) -> Any:
        return pb.GetIntelligenceResponse(record=FOR_JOB if request.name == FOR_JOB.name else NO_JOB)

    def ListSubmissions(self, request: pb.ListSubmissionsRequest, context: grpc.ServicerContext) -> Any:
        return pb.ListSubmissionsResponse()

    def ListIntelligence(self, request: pb.ListIntelligenceRequest, context: grpc.ServicerContext) -> Any:
        return pb.ListIntelligenceResponse(records=[FOR_JOB, NO_JOB])

    def SearchPnd(self, request: pb.SearchPndRequest, context: grpc.ServicerContext) -> Any:
        # Made for the job the purpose names (the service's decision; the CLI only shows it).
        job = JOB if "j42" in dict(context.invocation_metadata()).get("x-toex-purpose", "") else ""
        return pb.SearchPndResponse(
            search=sync_pb2.PndSearch(name="regions/EMSOU/pndSearches/s1", job=job),
            results=[pole_pb2.PndSourceRecord(source_record_id="pnd/PND-1@1", kind=pole_pb2.POLE_KIND_PHONE)],
        )


def serve(servicer: pnd_pb2_grpc.PndSyncServiceServicer) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pnd_pb2_grpc.add_PndSyncServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def pnd_down() -> Iterator[str]:
    yield from serve(PndDown())


@pytest.fixture
def pnd_with_jobs() -> Iterator[str]:
    yield from serve(PndWithJobs())


def toex(run: Callable[..., Result], address: str, *args: str, purpose: str = "Op Kestrel") -> Result:
    return run(*args, env={"TOEX_TOKEN": TOKEN, "TOEX_PND_ADDR": address, "TOEX_PURPOSE": purpose})


@pytest.mark.parametrize(
    "args",
    [("pnd", "reconcile", "run"), ("pnd", "search", "--region", "EMSOU", "--family", "Carter")],
)
def test_pnd_down_is_not_reported_as_the_service_down(
    run: Callable[..., Result], pnd_down: str, args: tuple[str, ...]
) -> None:
    result = toex(run, pnd_down, *args)
    assert result.exit_code == 1
    assert "UNAVAILABLE: the PND" in result.output
    assert "is the pnd service running" not in result.output
    assert "Hint: the pnd service at" in result.output and "try again shortly" in result.output


def test_service_unreachable_still_says_so(run: Callable[..., Result]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = toex(run, f"127.0.0.1:{port}", "--timeout", "5", "pnd", "reconcile", "run")
    assert result.exit_code == 1
    assert "is the pnd service running" in result.output


def test_a_record_shows_the_job_it_was_made_for_and_one_made_for_none_shows_no_job(
    run: Callable[..., Result], pnd_with_jobs: str
) -> None:
    shown = toex(run, pnd_with_jobs, "pnd", "show", "EMSOU/r1")
    assert shown.exit_code == 0, shown.output
    [job_line] = [line for line in shown.output.splitlines() if line.startswith("job:")]
    assert job_line.split() == ["job:", JOB]
    none = toex(run, pnd_with_jobs, "pnd", "show", "EMSOU/r2")
    assert none.exit_code == 0, none.output
    assert "job:" not in none.output and "regions/EMSOU/jobs/" not in none.output


def test_the_listing_has_a_job_column(run: Callable[..., Result], pnd_with_jobs: str) -> None:
    listed = toex(run, pnd_with_jobs, "pnd", "list", "--region", "EMSOU")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    column = header.index("JOB")
    assert [row[column:].startswith(JOB) for row in rows] == [True, False]


def test_a_search_says_which_job_it_was_made_for(run: Callable[..., Result], pnd_with_jobs: str) -> None:
    for_job = toex(
        run, pnd_with_jobs, "pnd", "search", "--region", "EMSOU", "--vrm", "AB12CDE", purpose="EMSOU/j42"
    )
    assert for_job.exit_code == 0, for_job.output
    assert f"Search regions/EMSOU/pndSearches/s1 made for {JOB}." in for_job.output
    plain = toex(run, pnd_with_jobs, "pnd", "search", "--region", "EMSOU", "--vrm", "AB12CDE")
    assert plain.exit_code == 0, plain.output
    assert "made for" not in plain.output and "pnd/PND-1@1" in plain.output


class PndByAccount(pnd_pb2_grpc.PndSyncServiceServicer):
    """Answers an account search with the account found; refuses one that names no account."""

    def SearchPnd(self, request: pb.SearchPndRequest, context: grpc.ServicerContext) -> Any:
        search = request.search
        if search.kind != sync_pb2.PND_SEARCH_KIND_ONLINE_ACCOUNT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an account search")
        if ":" not in search.online_account and "/" not in search.online_account:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search.online_account: expected a profile URL")
        found = pole_pb2.OnlineAccount(platform="instagram", handle="some.name")
        return pb.SearchPndResponse(
            search=sync_pb2.PndSearch(
                name="regions/EMSOU/pndSearches/s2", online_account="instagram:some.name"
            ),
            results=[
                pole_pb2.PndSourceRecord(
                    source_record_id="pnd/PND-9@1",
                    kind=pole_pb2.POLE_KIND_ONLINE_ACCOUNT,
                    entity=pole_pb2.PoleEntity(online_account=found),
                )
            ],
        )


@pytest.fixture
def pnd_by_account() -> Iterator[str]:
    yield from serve(PndByAccount())


def test_a_search_by_account_sends_the_url_and_shows_the_account(
    run: Callable[..., Result], pnd_by_account: str
) -> None:
    url = "https://www.instagram.com/some.name/"
    found = toex(run, pnd_by_account, "pnd", "search", "--region", "EMSOU", "--account", url)
    assert found.exit_code == 0, found.output
    assert "pnd/PND-9@1" in found.output and "instagram:some.name" in found.output
    refused = toex(run, pnd_by_account, "pnd", "search", "--region", "EMSOU", "--account", "nothing")
    assert refused.exit_code == 1 and "expected a profile URL" in refused.output
    both = toex(
        run, pnd_by_account, "pnd", "search", "--region", "EMSOU", "--account", url, "--vrm", "AB12CDE"
    )
    assert both.exit_code != 0 and "give one of --phone, --vrm, --account or --family" in both.output
