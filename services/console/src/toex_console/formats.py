"""How the pages write times (UTC, to the minute) and enum values (lower-case words)."""

from __future__ import annotations

import time
from typing import Any


def minute(timestamp: Any) -> str:
    """A protobuf Timestamp as "YYYY-MM-DD HH:MM" in UTC. (time.gmtime of its seconds: protobuf's
    ToDatetime took a sixteenth of an entity page's time.)"""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp.seconds))


def when(message: Any, field: str) -> str:
    """`message`'s timestamp `field` as `minute` writes it; "" when it is not set."""
    return minute(getattr(message, field)) if message.HasField(field) else ""


# An enum's labels, one table per enum and prefix made on first use: the entity page labels about
# a hundred values (records, relations, history), and protobuf's `Name` and the string work per
# value were a sixth of the page's own time.
_LABELS: dict[tuple[Any, str], dict[int, str]] = {}


def label(enum: Any, value: int, prefix: str) -> str:
    """A protobuf enum value as people read it: `JOB_STATE_IN_PROGRESS` -> "in progress" (with
    prefix "JOB_STATE_"); a number this console's contracts do not know, as the number."""
    table = _LABELS.get((enum, prefix))
    if table is None:
        table = _LABELS[enum, prefix] = {
            number: name.removeprefix(prefix).replace("_", " ").lower() for name, number in enum.items()
        }
    found = table.get(value)
    return found if found is not None else str(value)
