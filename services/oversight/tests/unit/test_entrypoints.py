"""The request as the servicer reads it, and where the service may run."""

from __future__ import annotations

from datetime import date

import pytest
from toex.oversight.v1 import oversight_pb2 as pb
from toex.type.v1 import region_pb2
from toex_kernel.errors import InvalidArgument
from toex_kernel.installation import InstallationError, InstallationKind
from toex_kernel.regions import Region
from toex_oversight.bootstrap import check_installation
from toex_oversight.config import Settings
from toex_oversight.entrypoints.grpc_api import parse_request


def test_a_request_is_read_into_regions_days_and_force() -> None:
    regions, first, last, force = parse_request(
        pb.GetOverviewRequest(
            period=pb.Period(first_day="2026-01-01", last_day="2026-03-31"),
            regions=[region_pb2.REGION_LONDON, region_pb2.REGION_NATIONAL],
            force=" leics ",
        )
    )
    assert regions == {Region.LONDON, Region.NATIONAL}
    assert (first, last, force) == (date(2026, 1, 1), date(2026, 3, 31), "LEICS")
    assert parse_request(pb.GetOverviewRequest()) == (frozenset(), None, None, "")


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_request(
            pb.GetOverviewRequest(
                period=pb.Period(first_day="01/02/2026", last_day="2026-02-30"),
                regions=[region_pb2.REGION_EMSOU, region_pb2.REGION_UNSPECIFIED, region_pb2.REGION_EMSOU],
                force="x",
            )
        )
    assert [v.field for v in refused.value.violations] == [
        "period.first_day",
        "period.last_day",
        "regions[1]",
        "regions[2]",
        "force",
    ]


def test_it_runs_at_the_hub_or_in_a_single_installation_only() -> None:
    assert check_installation(Settings(installation="hub", region="NATIONAL")).kind is InstallationKind.HUB
    assert check_installation(Settings()).kind is InstallationKind.SINGLE
    with pytest.raises(InstallationError, match="runs at the hub"):
        check_installation(Settings(installation="region", region="EMSOU"))
