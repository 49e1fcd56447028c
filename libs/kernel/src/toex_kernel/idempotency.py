"""A client-supplied request id (AIP-155) and a fingerprint of the request it came with: what a
command carries so a retried request answers as the first one did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Idempotency:
    request_id: str
    fingerprint: str
