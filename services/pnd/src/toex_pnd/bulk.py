"""The PND bulk formats the platform produces and reads (docs/pnd-bulk-format.md).

- A batch is JSON Lines: one header object, then one submission per line.
- An acknowledgement is JSON Lines: one header object, then one answer per submission.
- A holdings report is tab-separated lines `source_ref, pnd_version, deleted (t|f), pnd_id`,
  the form PostgreSQL's COPY reads without any parsing on the platform's side.

Pure functions, shared by the platform's transport and the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

BATCH_FORMAT = "toex-pnd-bulk"
ACK_FORMAT = "toex-pnd-bulk-ack"
FORMAT_VERSION = 1
CONTENT_TYPE = "application/x-ndjson"
HOLDINGS_CONTENT_TYPE = "text/tab-separated-values"


class BulkFormatError(ValueError):
    """The document is not in the bulk format."""


@dataclass(frozen=True)
class Batch:
    batch_id: str
    organisation: str
    lines: list[dict[str, Any]]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_batch(batch_id: str, organisation: str, lines: Sequence[dict[str, Any]]) -> bytes:
    header = {
        "format": BATCH_FORMAT,
        "version": FORMAT_VERSION,
        "batch_id": batch_id,
        "organisation": organisation,
        "count": len(lines),
    }
    return b"\n".join([_dumps(header), *(_dumps(line) for line in lines)]) + b"\n"


def _split(document: bytes, expected_format: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [row for row in document.split(b"\n") if row.strip()]
    if not rows:
        raise BulkFormatError("empty document")
    try:
        header = json.loads(rows[0])
        body = [json.loads(row) for row in rows[1:]]
    except json.JSONDecodeError as exc:
        raise BulkFormatError(f"not JSON Lines: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != expected_format:
        raise BulkFormatError(f"the first line must be a {expected_format} header")
    if header.get("version") != FORMAT_VERSION:
        raise BulkFormatError(f"unsupported {expected_format} version {header.get('version')!r}")
    if header.get("count") is not None and header["count"] != len(body):
        raise BulkFormatError(f"header says {header['count']} lines, found {len(body)}")
    if not all(isinstance(line, dict) for line in body):
        raise BulkFormatError("every line must be a JSON object")
    return header, body


def decode_batch(document: bytes) -> Batch:
    header, lines = _split(document, BATCH_FORMAT)
    return Batch(str(header.get("batch_id", "")), str(header.get("organisation", "")), lines)


def encode_ack(batch_id: str, answers: Sequence[dict[str, Any]]) -> bytes:
    header = {"format": ACK_FORMAT, "version": FORMAT_VERSION, "batch_id": batch_id, "count": len(answers)}
    return b"\n".join([_dumps(header), *(_dumps(a) for a in answers)]) + b"\n"


def decode_ack(document: bytes) -> tuple[str, list[dict[str, Any]]]:
    header, answers = _split(document, ACK_FORMAT)
    return str(header.get("batch_id", "")), answers


def encode_holdings(rows: Iterable[tuple[str, int, bool, str]]) -> Iterable[bytes]:
    for source_ref, version, deleted, pnd_id in rows:
        yield f"{source_ref}\t{version}\t{'t' if deleted else 'f'}\t{pnd_id}\n".encode()


def decode_holdings(document: bytes) -> list[tuple[str, int, bool, str]]:
    found = []
    for row in document.decode().splitlines():
        if row:
            source_ref, version, deleted, pnd_id = row.split("\t")
            found.append((source_ref, int(version), deleted == "t", pnd_id))
    return found
