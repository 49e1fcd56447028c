"""`toex pnd` against a fake PND sync service: what the user is told when the PND is down."""

import socket
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc

TOKEN = make_jwt(preferred_username="supervisor.emsou", realm_access={"roles": ["supervisor"]})


class PndDown(pnd_pb2_grpc.PndSyncServiceServicer):
    """The service is up; the PND behind it is not (what the real service answers then)."""

    def RunReconciliation(self, request: pb.RunReconciliationRequest, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "the PND's holdings cannot be read now: HTTP 503")

    def SearchPnd(self, request: pb.SearchPndRequest, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "the PND cannot be searched now: connection refused")


@pytest.fixture
def pnd_down() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pnd_pb2_grpc.add_PndSyncServiceServicer_to_server(PndDown(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def toex(run: Callable[..., Result], address: str, *args: str) -> Result:
    return run(*args, env={"TOEX_TOKEN": TOKEN, "TOEX_PND_ADDR": address, "TOEX_PURPOSE": "Op Kestrel"})


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
