"""What an installation serves, and the settings it refuses to start with."""

from __future__ import annotations

import pytest
from toex_kernel.errors import FailedPrecondition, WrongInstallation
from toex_kernel.installation import (
    EVERY_REGION,
    Installation,
    InstallationError,
    InstallationKind,
    Served,
    installation_name,
    name_in_region,
    region_of_name,
)
from toex_kernel.regions import Region

LONDON = Installation.of("region", "LONDON")
HUB = Installation.of("hub", "NATIONAL")
SINGLE = Installation.of("single", "NATIONAL")


def test_settings_name_the_installation() -> None:
    assert LONDON == Installation(InstallationKind.REGION, Region.LONDON)
    assert Installation.of(" Region ", "london") == LONDON
    assert HUB.name == "hub" and LONDON.name == "LONDON" and SINGLE.name == "single"
    # a single installation may name any region (it names only what it publishes about itself)
    assert Installation.of("single", "EMSOU").serves_every_region


@pytest.mark.parametrize(
    ("kind", "region", "says"),
    [
        ("hub", "LONDON", "hub needs TOEX_REGION=NATIONAL"),
        ("region", "NATIONAL", "installation is the hub"),
        ("region", "ATLANTIS", "unknown region 'ATLANTIS'"),
        ("single", "", "unknown region"),
        ("regional", "LONDON", "expected one of single, region, hub"),
    ],
)
def test_settings_that_describe_no_installation_refuse_to_start(kind: str, region: str, says: str) -> None:
    with pytest.raises(InstallationError, match=says):
        Installation.of(kind, region)


def test_a_region_installation_serves_its_region_only() -> None:
    assert LONDON.serves(Region.LONDON)
    assert not LONDON.serves(Region.EMSOU) and not LONDON.serves(Region.NATIONAL)
    assert LONDON.regions == frozenset({Region.LONDON})
    assert LONDON.subject_scope == "london"


def test_the_hub_serves_the_national_teams_own_work_only() -> None:
    assert HUB.serves(Region.NATIONAL)
    assert not HUB.serves(Region.EMSOU)
    assert HUB.subject_scope == "national"


def test_a_single_installation_serves_every_region() -> None:
    assert all(SINGLE.serves(region) for region in Region)
    assert SINGLE.regions is None and SINGLE.subject_scope == "*"
    SINGLE.ensure_serves(Region.YH)


def test_another_regions_resource_is_refused_naming_the_installation_to_use() -> None:
    with pytest.raises(WrongInstallation) as refused:
        LONDON.ensure_serves(Region.EMSOU)
    error = refused.value
    assert isinstance(error, FailedPrecondition)
    assert error.message == (
        "EMSOU's resources are served by the EMSOU installation; this is the LONDON installation"
    )
    assert (error.region, error.installation) == ("EMSOU", "EMSOU")
    assert error.violation.subject == "regions/EMSOU"

    with pytest.raises(WrongInstallation) as national:
        LONDON.ensure_serves(Region.NATIONAL)
    assert national.value.installation == "hub"
    assert "served by the national hub; this is the LONDON installation" in national.value.message

    with pytest.raises(WrongInstallation) as at_hub:
        HUB.ensure_serves(Region.LONDON)
    assert at_hub.value.message == (
        "LONDON's resources are served by the LONDON installation; this is the national hub"
    )


def test_names_say_their_region() -> None:
    assert region_of_name("regions/EMSOU/jobs/abc") is Region.EMSOU
    assert region_of_name("regions/emsou") is Region.EMSOU
    assert region_of_name("regions/-") == EVERY_REGION
    assert region_of_name("regions/-/syncStatus") == EVERY_REGION
    # another kind of name, or a region that is not one: the name's own parsing says so
    assert region_of_name("entities/abc") is None
    assert region_of_name("regions/ATLANTIS/jobs/1") is None
    assert region_of_name("") is None
    assert name_in_region("regions/-/syncStatus", Region.LONDON) == "regions/LONDON/syncStatus"
    assert name_in_region("regions/-", Region.NATIONAL) == "regions/NATIONAL"
    assert installation_name(Region.NATIONAL) == "hub" and installation_name(Region.SW) == "SW"


def test_a_declaration_says_where_or_why_not() -> None:
    with pytest.raises(ValueError, match="why it names none"):
        Served()
    with pytest.raises(ValueError, match="field of the request itself"):
        Served.listing_of("scope.parent")
    assert Served.by("scope.parent", "scope.datasets").fields == ("scope.parent", "scope.datasets")
