"""Identifiers for rows that are written in bulk: UUIDv7 (RFC 9562), from uuid-utils.

Time-ordered ids sort in the order they were made, so a table's primary-key and unique indexes
(the outbox's event ids, the inbox's, a service's own records) grow at their right edge instead
of taking random inserts all over the B-tree: once an index outgrows memory, random inserts
cost a page read each and full-page images in the WAL.
"""

from __future__ import annotations

import uuid_utils


def new_id() -> str:
    """A UUIDv7 as 32 hex digits."""
    return uuid_utils.uuid7().hex


def new_uuid() -> str:
    """A UUIDv7 in canonical form (8-4-4-4-12)."""
    return str(uuid_utils.uuid7())
