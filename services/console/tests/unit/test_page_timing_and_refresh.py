"""The page server time the benchmark reads (Server-Timing: off unless switched on; when on, the
page's time and its gRPC share, through a real gRPC channel), and one token renewal per session
however many pages are in flight."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent import futures
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_console.app import Console, create_app
from toex_console.config import Settings
from toex_console.oidc import Authorisation

SLOW_CALL_S = 0.05


class FakeOidc:
    def __init__(self, refresh_seconds: float = 0.0) -> None:
        self.refreshed = 0
        self.refresh_seconds = refresh_seconds

    async def authorise(self) -> Authorisation:
        return Authorisation(url="http://idp.test/auth?state=S1", state="S1", verifier="V1", nonce="N1")

    async def exchange(self, code: str, verifier: str, nonce: str) -> tuple[dict[str, Any], dict[str, Any]]:
        tokens = {"access_token": "AT1", "refresh_token": "RT1", "expires_at": time.time() + 300}
        return tokens, {"preferred_username": "researcher.emsou"}

    async def refresh(self, tokens: dict[str, Any]) -> dict[str, Any]:
        self.refreshed += 1
        await asyncio.sleep(self.refresh_seconds)
        return {"access_token": f"AT{self.refreshed + 1}", "expires_at": time.time() + 300}


class SlowTasking(tasking_pb2_grpc.TaskingServiceServicer):
    """A gRPC server (real transport) answering ListJobs after SLOW_CALL_S."""

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        time.sleep(SLOW_CALL_S)
        return pb.ListJobsResponse(jobs=[pb.Job(name="regions/EMSOU/jobs/J1", operation_name="Op K")])


@pytest.fixture
def tasking_address() -> Any:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tasking_pb2_grpc.add_TaskingServiceServicer_to_server(SlowTasking(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def signed_in_with_purpose(client: TestClient) -> None:
    client.get("/auth/login", follow_redirects=False)
    assert client.get("/auth/callback?state=S1&code=good", follow_redirects=False).status_code == 303
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert csrf
    client.post("/purpose", data={"purpose": "Op K", "csrf_token": csrf.group(1)}, follow_redirects=False)


def timings(header: str) -> dict[str, str]:
    return {name: value for name, value in re.findall(r'(\w+);(?:dur|desc)="?([0-9.]+)"?', header)}


def test_server_timing_is_not_sent_unless_switched_on(tasking_address: str) -> None:
    app = create_app(Settings(tasking_addr=tasking_address), oidc=FakeOidc())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1:8090") as client:
        signed_in_with_purpose(client)
        page = client.get("/jobs")
    assert page.status_code == 200 and "regions/EMSOU/jobs/J1" in page.text
    assert "server-timing" not in page.headers


def test_server_timing_gives_the_page_time_and_its_grpc_share(tasking_address: str) -> None:
    settings = Settings(tasking_addr=tasking_address, server_timing=True)
    app = create_app(settings, oidc=FakeOidc())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1:8090") as client:
        signed_in_with_purpose(client)
        page = client.get("/jobs")
        welcome = client.get("/healthz")
    assert page.status_code == 200 and "regions/EMSOU/jobs/J1" in page.text
    measured = timings(page.headers["server-timing"])
    # The call took at least SLOW_CALL_S on the server; the page contains the call.
    assert measured["calls"] == "1"
    assert float(measured["grpc"]) >= SLOW_CALL_S * 1000
    assert float(measured["app"]) >= float(measured["grpc"])
    # A page that makes no call has no gRPC share.
    quiet = timings(welcome.headers["server-timing"])
    assert quiet["calls"] == "0" and float(quiet["grpc"]) == 0.0


def test_pages_in_flight_share_one_token_renewal() -> None:
    oidc = FakeOidc(refresh_seconds=0.05)
    console = Console(Settings(), oidc)  # type: ignore[arg-type]
    session = console.sessions.new()
    session.tokens = {"access_token": "AT1", "refresh_token": "RT1", "expires_at": time.time() + 5}

    async def pages() -> list[str]:
        return await asyncio.gather(*(console.fresh_token(session) for _ in range(20)))

    tokens = asyncio.run(pages())
    assert oidc.refreshed == 1
    assert tokens == ["AT2"] * 20


class FailingTasking:
    """ListJobs refused with `code`."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def ListJobs(self, request: Any, metadata: Any, timeout: float) -> Any:
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), "secret detail")


class RefusingOidc(FakeOidc):
    async def refresh(self, tokens: dict[str, Any]) -> dict[str, Any]:
        from toex_console.oidc import SignInFailed

        raise SignInFailed("the session could not be renewed")


@pytest.mark.parametrize("path", ["/", "/jobs", "/referrals"])
def test_a_list_page_whose_call_fails_says_what_to_do_and_shows_no_rows(path: str) -> None:
    failing = FailingTasking(grpc.StatusCode.UNAVAILABLE)
    app = create_app(Settings(), oidc=FakeOidc(), tasking=failing, safeguarding=None)  # type: ignore[arg-type]
    app.state.console._safeguarding = type("S", (), {"ListReferrals": failing.ListJobs})()
    with TestClient(app, base_url="http://127.0.0.1:8090") as client:
        signed_in_with_purpose(client)
        page = client.get(path)
    assert page.status_code == 200
    assert "The service did not answer. Try again in a minute" in page.text
    assert "secret detail" not in page.text


@pytest.mark.parametrize("path", ["/", "/jobs", "/referrals"])
def test_a_list_page_whose_session_cannot_be_renewed_signs_in_again(path: str) -> None:
    oidc = RefusingOidc()
    app = create_app(Settings(), oidc=oidc, tasking=FailingTasking(grpc.StatusCode.OK))  # type: ignore[arg-type]
    console = app.state.console
    with TestClient(app, base_url="http://127.0.0.1:8090") as client:
        signed_in_with_purpose(client)
        for session in list(console.sessions._sessions.values()):
            session.tokens["expires_at"] = time.time()  # inside the refresh margin
        page = client.get(path, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == f"/auth/login?next={path}"
