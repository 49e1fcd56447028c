"""Resource names (AIP-122): `regions/EMSOU/jobs/abc`, parsed with field-level errors."""

from __future__ import annotations

import re

from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse(name: str, pattern: str, field: str) -> dict[str, str]:
    """`parse("regions/EMSOU/jobs/1", "regions/{region}/jobs/{job}", "name")`."""
    want = pattern.split("/")
    have = name.strip().split("/") if name else []
    if len(have) != len(want):
        raise InvalidArgument.field(field, f"expected a name like {pattern}, got {name!r}")
    values: dict[str, str] = {}
    for expected, actual in zip(want, have, strict=True):
        if expected.startswith("{"):
            if not _SEGMENT.match(actual):
                raise InvalidArgument.field(field, f"bad segment {actual!r} in {name!r}")
            values[expected.strip("{}")] = actual
        elif expected != actual:
            raise InvalidArgument.field(field, f"expected a name like {pattern}, got {name!r}")
    return values


def parse_region(code: str, field: str, *, allow_all: bool = False) -> Region | None:
    if allow_all and code == "-":
        return None
    try:
        return Region.parse(code)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc)) from None
