"""datetime <-> google.protobuf.Timestamp, without the protobuf runtime's pure-Python helpers.

`Timestamp.FromDatetime` and `ToDatetime` are written in Python and cost several microseconds
each; a job message carries at least three and is built on every call that answers with one.
These do the same arithmetic with one timedelta.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def timestamp(value: datetime) -> Timestamp:
    """`value` as a Timestamp; a naive datetime is taken to be UTC (as FromDatetime does)."""
    delta = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    # timedelta keeps seconds and microseconds non-negative, as Timestamp's nanos must be.
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def optional_timestamp(value: datetime | None) -> Timestamp | None:
    """`timestamp(value)`, or None (an unset field) for None."""
    return None if value is None else timestamp(value)


def to_datetime(stamp: Timestamp) -> datetime:
    """The Timestamp as an aware UTC datetime, to the microsecond (as ToDatetime(tzinfo=UTC))."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
