"""Opaque page tokens (AIP-158) carrying a keyset cursor and the query's fingerprint."""

from __future__ import annotations

import base64
import hashlib

from google.protobuf.message import DecodeError
from toex.type.v1 import paging_pb2

from toex_common.errors import InvalidArgument

MAX_PAGE_SIZE = 500
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
        raise InvalidArgument.field("page_token", "not a token this service issued") from None
    if cursor.query_fingerprint != query_fingerprint:
        raise InvalidArgument.field("page_token", "issued for a different query; start again without it")
    return cursor.last_sort_key, cursor.last_id
