"""The request as the servicer reads it, and where the service may run."""

from __future__ import annotations

from datetime import date

import pytest
from toex.oversight.v1 import oversight_pb2 as pb
from toex.type.v1 import region_pb2
from toex_kernel.errors import InvalidArgument
from toex_kernel.installation import InstallationKind
from toex_kernel.regions import Region
from toex_oversight.bootstrap import check_installation, message_buses
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


REPORTERS = [
    "oversight-report-tasking",
    "oversight-report-safeguarding",
    "oversight-report-pnd",
    "oversight-report-entity",
]
AGGREGATORS = ["oversight-tasking", "oversight-safeguarding", "oversight-pnd", "oversight-entity"]


@pytest.mark.parametrize(
    ("settings", "kind", "aggregators"),
    [
        (Settings(installation="hub", region="NATIONAL"), InstallationKind.HUB, AGGREGATORS),
        (Settings(), InstallationKind.SINGLE, AGGREGATORS),
        (Settings(installation="region", region="EMSOU"), InstallationKind.REGION, []),
    ],
)
def test_every_installation_reports_and_the_hub_and_a_single_one_aggregate(
    settings: Settings, kind: InstallationKind, aggregators: list[str]
) -> None:
    installation = check_installation(settings)
    assert installation.kind is kind
    reporting, aggregating = message_buses(settings, installation)
    assert reporting.names == REPORTERS
    assert aggregating.names == aggregators
    # The reporter reads its producers' streams (narrowed to the installation's region by the
    # platform); the aggregator every region's reports on OVERSIGHT.
    assert [s.name for s in reporting.streams()] == ["TASKING", "SAFEGUARDING", "PND", "ENTITY"]
    assert "toex.*.tasking.JobCreated" in reporting.subjects("oversight-report-tasking")
    if aggregators:
        assert [s.name for s in aggregating.streams()] == ["OVERSIGHT"]
        assert "toex.*.oversight.JobCreated" in aggregating.subjects("oversight-tasking")
        assert "toex.*.oversight.DeconflictionNotice" in aggregating.subjects("oversight-entity")


def test_nothing_is_consumed_when_told_not_to() -> None:
    settings = Settings(consume_events=False)
    reporting, aggregating = message_buses(settings, check_installation(settings))
    assert reporting.names == aggregating.names == []
