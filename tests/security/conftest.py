"""The security tier: each finding of the security review proven closed against real servers.

Every test here demonstrates an attack (it failed on the code before its fix) and must now be
refused. The servers come from the devstack pytest plugin (`postgres`, `nats_server`,
`keycloak`, `database`), as in the integration tier.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.security)
            item.add_marker(pytest.mark.integration)
