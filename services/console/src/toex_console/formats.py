"""How the pages write times: UTC, to the minute."""

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
