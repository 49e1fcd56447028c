from __future__ import annotations

import pytest
from toex_comms.domain import policy
from toex_kernel.errors import OutOfScope
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region


def who(region: Region, *roles: Role) -> Principal:
    return Principal("s", "u", region, frozenset(roles))


def test_region_staff_see_their_own_region_only() -> None:
    analyst = who(Region.EMSOU, Role.ANALYST)
    assert policy.can_see(analyst, Region.EMSOU) and policy.can_change(analyst, Region.EMSOU)
    assert not policy.can_see(analyst, Region.ERSOU)
    with pytest.raises(OutOfScope):
        policy.ensure_visible(analyst, Region.ERSOU, "x")
    assert policy.visible_regions(analyst, None) == [Region.EMSOU]


def test_coordinator_everywhere_service_reads_only_others_nothing() -> None:
    assert policy.can_change(who(Region.NATIONAL, Role.NATIONAL_COORDINATOR), Region.SW)
    service = who(Region.NATIONAL, Role.SERVICE)
    assert policy.can_see(service, Region.SW) and not policy.can_change(service, Region.SW)
    assert not policy.can_see(who(Region.EMSOU, Role.SAFEGUARDING_OFFICER), Region.EMSOU)
    assert policy.visible_regions(service, None) is None
