"""Bounds on request numbers, checked before any work: one request must not be able to make a
service spend minutes (or its memory) on an analysis nobody could read."""

from __future__ import annotations

from toex_kernel.errors import InvalidArgument


def bounded(value: int, field: str, *, default: int, maximum: int, minimum: int = 0) -> int:
    """`value`, or `default` when unset (0); INVALID_ARGUMENT naming `field` outside
    [minimum, maximum]."""
    if value == 0:
        return default
    if not minimum <= value <= maximum:
        raise InvalidArgument.field(field, f"must be between {max(minimum, 1)} and {maximum}")
    return value
