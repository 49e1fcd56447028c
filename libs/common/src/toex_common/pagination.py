"""Opaque page tokens (AIP-158) carrying a keyset cursor and the query's fingerprint."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from google.protobuf.message import DecodeError
from toex.type.v1 import paging_pb2
from toex_kernel.errors import InvalidArgument

MAX_PAGE_SIZE = 500
_NOT_OURS = "not a token this service issued"
DEFAULT_PAGE_SIZE = 50


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(sort_key: str, last_id: str, query_fingerprint: str) -> str:
    cursor = paging_pb2.PageCursor(
        last_sort_key=sort_key, last_id=last_id, query_fingerprint=query_fingerprint
    )
    return base64.urlsafe_b64encode(cursor.SerializeToString()).decode().rstrip("=")


def decode(token: str, query_fingerprint: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = paging_pb2.PageCursor.FromString(raw)
    except (ValueError, DecodeError):
        raise InvalidArgument.field("page_token", _NOT_OURS) from None
    if cursor.query_fingerprint != query_fingerprint:
        raise InvalidArgument.field("page_token", "issued for a different query; start again without it")
    return cursor.last_sort_key, cursor.last_id


# The largest offset an offset token may carry: far beyond any result set, far below what
# would overflow a SQL OFFSET.
MAX_OFFSET = 10**9


def decode_after(token: str, query_fingerprint: str) -> tuple[datetime, str] | None:
    """A keyset cursor of (time, id): the last item of the previous page, or None.

    Tokens are not signed, so a forged one is parsed as carefully as any other input: a sort
    key that is not an ISO time answers INVALID_ARGUMENT, never INTERNAL."""
    cursor = decode(token, query_fingerprint)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(cursor[0]), cursor[1]
    except ValueError:
        raise InvalidArgument.field("page_token", _NOT_OURS) from None


def decode_offset(token: str, query_fingerprint: str) -> int:
    """An offset cursor: how many items earlier pages held (0 without a token)."""
    cursor = decode(token, query_fingerprint)
    if cursor is None:
        return 0
    if not cursor[0].isdigit() or int(cursor[0]) > MAX_OFFSET:
        raise InvalidArgument.field("page_token", _NOT_OURS)
    return int(cursor[0])
