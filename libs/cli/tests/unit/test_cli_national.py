"""`toex national overview` against a fake oversight service: what is asked, what is printed."""

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import date
from pathlib import Path
from typing import Any

import click
import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2
from toex_cli.national import parse_period

TOKEN = make_jwt(preferred_username="national_coordinator.national", region="NATIONAL")
ANSWER = pb.GetOverviewResponse(
    period=pb.Period(first_day="2026-01-01", last_day="2026-03-31"),
    regions=[
        pb.RegionFigures(
            region=region_pb2.REGION_EMSOU,
            jobs=pb.JobFigures(
                raised=12,
                open=4,
                overdue=1,
                delivered_on_time=7,
                delivered_late=1,
                taken_by_other_regions=3,
                feedback=pb.Feedback(rated=4, mean_rating=4.25, by_rating=[0, 0, 1, 1, 2]),
            ),
            referrals=pb.ReferralFigures(drafted=2, clocks=pb.StatutoryClocks(met_on_time=1, overdue=1)),
            pnd=pb.PndFigures(accepted=30, rejected=2, reconciliation=pb.PndReconciliation(held=3, stale=1)),
            deconfliction=pb.DeconflictionFigures(notices=1),
        ),
        pb.RegionFigures(region=region_pb2.REGION_LONDON, jobs=pb.JobFigures(taken_for_other_regions=3)),
    ],
    total=pb.RegionFigures(
        jobs=pb.JobFigures(raised=12, taken_by_other_regions=3, taken_for_other_regions=3)
    ),
    notes=["a note for the reader"],
)


class FakeOversight(oversight_pb2_grpc.OversightServiceServicer):
    def __init__(self) -> None:
        self.requests: list[tuple[pb.GetOverviewRequest, dict[str, str]]] = []

    def GetOverview(self, request: pb.GetOverviewRequest, context: grpc.ServicerContext) -> Any:
        self.requests.append((request, {k: str(v) for k, v in context.invocation_metadata()}))
        if request.force == "REFUSE":
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "a supervisor of EMSOU sees the overview of EMSOU only"
            )
        return ANSWER


@pytest.fixture
def oversight() -> Iterator[tuple[FakeOversight, str]]:
    fake = FakeOversight()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    oversight_pb2_grpc.add_OversightServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def toex(run: Callable[..., Result], address: str, *args: str) -> Result:
    return run(
        *args,
        env={"TOEX_TOKEN": TOKEN, "TOEX_OVERSIGHT_ADDR": address, "TOEX_PURPOSE": "quarterly return"},
    )


def test_the_overview_asks_for_the_period_regions_and_force_and_prints_a_table(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str]
) -> None:
    fake, address = oversight
    result = toex(
        run,
        address,
        "national",
        "overview",
        "--period",
        "2026-Q1",
        "--region",
        "london",
        "--region",
        "EMSOU",
        "--force",
        "leics",
    )
    assert result.exit_code == 0, result.output
    [(request, metadata)] = fake.requests
    assert (request.period.first_day, request.period.last_day) == ("2026-01-01", "2026-03-31")
    assert list(request.regions) == [region_pb2.REGION_LONDON, region_pb2.REGION_EMSOU]
    assert request.force == "leics"
    assert metadata["x-toex-purpose"] == "quarterly return"
    lines = result.output.splitlines()
    assert lines[0].startswith("Jobs raised and referrals drafted 2026-01-01 to 2026-03-31")
    header = next(line for line in lines if line.startswith("REGION  RAISED"))
    emsou = next(line for line in lines if line.startswith("EMSOU") and "4.2 (4)" in line)
    assert emsou.split()[:7] == ["EMSOU", "12", "4", "1", "7", "1", "3"]
    assert "TAKEN FOR OTHERS" in header
    assert any(line.startswith("TOTAL") for line in lines)
    assert "Note: a note for the reader" in result.output


def test_the_json_form_is_the_whole_answer(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str]
) -> None:
    _, address = oversight
    result = toex(run, address, "national", "overview", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["regions"][0]["region"] == "REGION_EMSOU"
    assert data["regions"][0]["jobs"]["feedback"]["by_rating"] == ["0", "0", "1", "1", "2"]
    assert data["total"]["jobs"]["taken_for_other_regions"] == "3"


def test_a_refusal_is_shown_with_exit_code_one(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str]
) -> None:
    _, address = oversight
    result = toex(run, address, "national", "overview", "--force", "REFUSE")
    assert result.exit_code == 1
    assert "PERMISSION_DENIED" in result.output and "EMSOU only" in result.output


def test_a_bad_period_is_a_usage_error(
    run: Callable[..., Result], oversight: tuple[FakeOversight, str]
) -> None:
    fake, address = oversight
    result = toex(run, address, "national", "overview", "--period", "last quarter")
    assert result.exit_code == 2 and "is not a period" in result.output
    assert fake.requests == []


def serve_fake() -> tuple[FakeOversight, grpc.Server, str]:
    fake = FakeOversight()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    oversight_pb2_grpc.add_OversightServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return fake, server, f"127.0.0.1:{port}"


def test_with_a_directory_the_figures_are_asked_of_the_hub(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    hub, hub_server, hub_address = serve_fake()
    emsou, emsou_server, emsou_address = serve_fake()
    try:
        directory = tmp_path / "installations.toml"
        directory.write_text(
            f'[installations.hub]\naddress = "{hub_address}"\n\n[installations.EMSOU]\naddress = "{emsou_address}"\n'
        )
        supervisor = make_jwt(preferred_username="supervisor.emsou", region="EMSOU")
        result = run(
            "national",
            "overview",
            env={
                "TOEX_TOKEN": supervisor,
                "TOEX_PURPOSE": "weekly review",
                "TOEX_INSTALLATIONS": str(directory),
            },
        )
        assert result.exit_code == 0, result.output
        # A supervisor of EMSOU, whose calls naming no region go to EMSOU's installation: the
        # figures are the hub's.
        assert len(hub.requests) == 1 and emsou.requests == []
    finally:
        hub_server.stop(grace=None)
        emsou_server.stop(grace=None)


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("all", "", ""),
        ("today", "2026-03-02", "2026-03-02"),
        ("7d", "2026-02-24", "2026-03-02"),
        ("2026-02", "2026-02-01", "2026-02-28"),
        ("2024-02", "2024-02-01", "2024-02-29"),
        ("2026-Q4", "2026-10-01", "2026-12-31"),
        ("2025", "2025-01-01", "2025-12-31"),
        ("2026-01-05..2026-01-09", "2026-01-05", "2026-01-09"),
        ("..2026-01-09", "", "2026-01-09"),
        ("2026-01-05", "2026-01-05", "2026-01-05"),
    ],
)
def test_periods(text: str, first: str, last: str) -> None:
    period = parse_period(text, date(2026, 3, 2))
    assert (period.first_day, period.last_day) == (first, last)


@pytest.mark.parametrize("text", ["0d", "2026-13", "2026-Q5", "2026-02-30", "yesterday", "2026-01-01..soon"])
def test_bad_periods(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_period(text, date(2026, 3, 2))
