"""`toex referrals` against a fake safeguarding service: what reaches the server."""

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc

TOKEN = make_jwt(
    preferred_username="safeguarding_officer.emsou", realm_access={"roles": ["safeguarding_officer"]}
)


class Recorder(safeguarding_pb2_grpc.SafeguardingServiceServicer):
    def __init__(self) -> None:
        self.requests: list[object] = []

    def CreateReferral(self, request: pb.CreateReferralRequest, context: grpc.ServicerContext) -> object:
        self.requests.append(request)
        return pb.CreateReferralResponse(referral=pb.Referral(name="regions/EMSOU/referrals/r1"))

    def UpdateReferral(self, request: pb.UpdateReferralRequest, context: grpc.ServicerContext) -> object:
        self.requests.append(request)
        return pb.UpdateReferralResponse(referral=request.referral)


@pytest.fixture
def safeguarding() -> Iterator[tuple[Recorder, str]]:
    fake = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    safeguarding_pb2_grpc.add_SafeguardingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def toex(run: Callable[..., Result], address: str, *args: str) -> Result:
    return run(*args, env={"TOEX_TOKEN": TOKEN, "TOEX_SAFEGUARDING_ADDR": address})


@pytest.mark.parametrize("job", ["EMSOU/4b21aa", "emsou/jobs/4b21aa", "regions/EMSOU/jobs/4b21aa"])
def test_job_is_taken_in_the_short_form_as_everywhere_else(
    run: Callable[..., Result], safeguarding: tuple[Recorder, str], job: str
) -> None:
    fake, address = safeguarding
    create = toex(
        run, address,
        "referrals", "create", "--region", "EMSOU", "--subject", "ent-1",
        "--concern", "child_sexual_exploitation", "--job", job,
    )  # fmt: skip
    update = toex(run, address, "referrals", "update", "EMSOU/r1", "--job", job)
    assert create.exit_code == 0, create.output
    assert update.exit_code == 0, update.output
    created, updated = fake.requests
    assert isinstance(created, pb.CreateReferralRequest) and isinstance(updated, pb.UpdateReferralRequest)
    assert created.referral.linked_job == "regions/EMSOU/jobs/4b21aa"
    assert updated.referral.linked_job == "regions/EMSOU/jobs/4b21aa"
    assert list(updated.update_mask.paths) == ["linked_job"]


def test_a_wrong_job_name_is_a_usage_error(
    run: Callable[..., Result], safeguarding: tuple[Recorder, str]
) -> None:
    fake, address = safeguarding
    result = toex(run, address, "referrals", "update", "EMSOU/r1", "--job", "not a job")
    assert result.exit_code == 2 and "is not a job name" in result.output
    assert fake.requests == []
