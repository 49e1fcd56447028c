"""The simulated PND's own storage: one SQLite file (WAL), separate from everything the
platform stores.

- records: what the PND holds, one row per record (the newest version), with tombstones.
- submissions: every submission id ever received and the answer given, so a repeated
  submission (a retry after a lost acknowledgement) gets the same answer and changes nothing.
- applied: the order in which changes took effect, for tests and the bench to check that
  every change arrived exactly once and in order per record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toex_kernel.accounts import AccountError, OnlineAccount, parse_account

from toex_pnd.simulator.rules import validate

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    ref TEXT PRIMARY KEY,
    pnd_id TEXT NOT NULL UNIQUE,
    organisation TEXT NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_org ON records (organisation);
CREATE TABLE IF NOT EXISTS search_keys (kind TEXT NOT NULL, key TEXT NOT NULL, ref TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS search_keys_kind_key ON search_keys (kind, key);
CREATE INDEX IF NOT EXISTS search_keys_ref ON search_keys (ref);
CREATE TABLE IF NOT EXISTS links (from_ref TEXT NOT NULL, to_ref TEXT NOT NULL, type TEXT NOT NULL, description TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS links_from ON links (from_ref);
CREATE INDEX IF NOT EXISTS links_to ON links (to_ref);
CREATE TABLE IF NOT EXISTS submissions (
    submission_id TEXT PRIMARY KEY,
    ref TEXT NOT NULL,
    version INTEGER NOT NULL,
    answer TEXT NOT NULL,
    received_at TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    version INTEGER NOT NULL,
    operation TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
"""


@dataclass
class Counters:
    batches: int = 0
    lines: int = 0
    duplicates: int = 0
    accepted: int = 0
    rejected: int = 0
    conflicts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class PndStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.counters = Counters()

    def close(self) -> None:
        self._db.close()

    # -- submissions ---------------------------------------------------------------------

    def apply_batch(self, organisation: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answer every line in order, in one transaction."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                answers = [self._apply(db, organisation, line) for line in lines]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.counters.batches += 1
            self.counters.lines += len(lines)
            return answers

    def _apply(self, db: sqlite3.Connection, organisation: str, line: dict[str, Any]) -> dict[str, Any]:
        submission_id = line.get("submission_id")
        if isinstance(submission_id, str) and submission_id:
            seen = db.execute(
                "SELECT answer FROM submissions WHERE submission_id = ?", (submission_id,)
            ).fetchone()
            if seen is not None:
                db.execute(
                    "UPDATE submissions SET deliveries = deliveries + 1 WHERE submission_id = ?",
                    (submission_id,),
                )
                self.counters.duplicates += 1
                return dict(json.loads(seen[0]))
        reasons = validate(line)
        if reasons:
            answer: dict[str, Any] = {
                "submission_id": submission_id or "",
                "outcome": "REJECTED",
                "reasons": reasons,
            }
            self.counters.rejected += 1
        else:
            answer = self._change(db, organisation, line)
        if isinstance(submission_id, str) and submission_id:
            db.execute(
                "INSERT INTO submissions (submission_id, ref, version, answer, received_at) VALUES (?, ?, ?, ?, ?)",
                (
                    submission_id,
                    str(line.get("source_ref", "")),
                    int(line.get("record_version") or 0),
                    json.dumps(answer),
                    _now(),
                ),
            )
        return answer

    def _change(self, db: sqlite3.Connection, organisation: str, line: dict[str, Any]) -> dict[str, Any]:
        ref, version, operation = line["source_ref"], int(line["record_version"]), line["operation"]
        held = db.execute("SELECT pnd_id, version FROM records WHERE ref = ?", (ref,)).fetchone()
        if held is not None and held[1] >= version:
            self.counters.conflicts += 1
            return {"submission_id": line["submission_id"], "outcome": "CONFLICT", "pnd_version": held[1]}
        pnd_id = held[0] if held else f"PND-{uuid.uuid4().hex[:12].upper()}"
        now = _now()
        if operation == "DELETE":
            if held is not None:
                db.execute(
                    "UPDATE records SET version = ?, deleted = 1, updated_at = ? WHERE ref = ?",
                    (version, now, ref),
                )
                db.execute("DELETE FROM search_keys WHERE ref = ?", (ref,))
                db.execute("DELETE FROM links WHERE from_ref = ?", (ref,))
            else:  # never held: record the tombstone so a late create cannot resurrect it
                db.execute(
                    "INSERT INTO records (ref, pnd_id, organisation, version, deleted, kind, body, updated_at)"
                    " VALUES (?, ?, ?, ?, 1, ?, '{}', ?)",
                    (ref, pnd_id, organisation, version, line["kind"], now),
                )
        else:
            body = json.dumps({"grading": line["grading"], "entity": line["entity"]})
            db.execute(
                "INSERT INTO records (ref, pnd_id, organisation, version, deleted, kind, body, updated_at)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET version = excluded.version,"
                " deleted = 0, kind = excluded.kind, body = excluded.body, updated_at = excluded.updated_at",
                (ref, pnd_id, organisation, version, line["kind"], body, now),
            )
            self._index(db, ref, line["kind"], line["entity"], line.get("links") or [])
        db.execute(
            "INSERT INTO applied (submission_id, ref, version, operation, applied_at) VALUES (?, ?, ?, ?, ?)",
            (line["submission_id"], ref, version, operation, now),
        )
        self.counters.accepted += 1
        return {
            "submission_id": line["submission_id"],
            "outcome": "ACCEPTED",
            "pnd_id": pnd_id,
            "pnd_version": version,
        }

    def _index(
        self, db: sqlite3.Connection, ref: str, kind: str, entity: dict[str, Any], links: list[dict[str, Any]]
    ) -> None:
        db.execute("DELETE FROM search_keys WHERE ref = ?", (ref,))
        db.execute("DELETE FROM links WHERE from_ref = ?", (ref,))
        body = entity.get(kind.lower()) or {}
        keys: list[tuple[str, str]] = []
        if kind == "PERSON":
            keys = [("PERSON", str(n.get("family_name", "")).strip().lower()) for n in body.get("names", [])]
        elif kind == "PHONE":
            keys = [("PHONE", str(body.get("e164", "")))]
        elif kind == "VEHICLE":
            keys = [("VEHICLE", str(body.get("vrm", "")))]
        elif kind == "ONLINE_ACCOUNT":
            keys = [("ONLINE_ACCOUNT", key) for key in _account_keys(body) if key]
        db.executemany(
            "INSERT INTO search_keys (kind, key, ref) VALUES (?, ?, ?)",
            [(k, v, ref) for k, v in set(keys) if v],
        )
        db.executemany(
            "INSERT INTO links (from_ref, to_ref, type, description) VALUES (?, ?, ?, ?)",
            [
                (ref, str(link["target"]), str(link["type"]), str(link.get("description", "")))
                for link in links
            ],
        )

    # -- another organisation's change, for conflicts ------------------------------------

    def bump(self, ref: str, version: int) -> bool:
        """As if another organisation changed the record on the PND to `version`."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE records SET version = ?, updated_at = ? WHERE ref = ? AND version < ?",
                (version, _now(), ref, version),
            )
            return cursor.rowcount == 1

    # -- reading ---------------------------------------------------------------------------

    def holdings(self, organisation: str, chunk: int = 20_000) -> Iterator[list[tuple[str, int, bool, str]]]:
        """Every record the organisation submitted, in chunks (tombstones included)."""
        cursor = self._db.execute(
            "SELECT ref, version, deleted, pnd_id FROM records WHERE organisation = ?", (organisation,)
        )
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            yield [(r[0], int(r[1]), bool(r[2]), r[3]) for r in rows]

    def applied(self, ref: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT seq, submission_id, ref, version, operation FROM applied"
        args: tuple[Any, ...] = ()
        if ref:
            query += " WHERE ref = ?"
            args = (ref,)
        rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [
            {
                "seq": r[0],
                "submission_id": r[1],
                "source_ref": r[2],
                "record_version": r[3],
                "operation": r[4],
            }
            for r in rows
        ]

    def stats(self) -> dict[str, Any]:
        held = self._db.execute("SELECT count(*), coalesce(sum(deleted), 0) FROM records").fetchone()
        redelivered = self._db.execute("SELECT count(*) FROM submissions WHERE deliveries > 1").fetchone()[0]
        return {
            "records": held[0],
            "deleted": held[1],
            "submissions_redelivered": redelivered,
            "batches": self.counters.batches,
            "lines": self.counters.lines,
            "duplicates": self.counters.duplicates,
            "accepted": self.counters.accepted,
            "rejected": self.counters.rejected,
            "conflicts": self.counters.conflicts,
        }

    def search(
        self, kind: str, criteria: dict[str, Any], max_results: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Matching records, then the records linked to them (either direction), as source records."""
        if kind == "PERSON":
            key = str(criteria.get("family_name", "")).strip().lower()
        elif kind == "PHONE":
            key = str(criteria.get("phone_e164", ""))
        elif kind == "ONLINE_ACCOUNT":
            key = _account_key(str(criteria.get("online_account", ""))) or ""
        else:
            key = "".join(str(criteria.get("vrm", "")).upper().split())
        refs = [
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT s.ref FROM search_keys s JOIN records r ON r.ref = s.ref"
                " WHERE s.kind = ? AND s.key = ? AND r.deleted = 0 ORDER BY s.ref",
                (kind, key),
            )
        ]
        rows = {ref: row for ref in refs if (row := self._record(ref)) is not None}
        matches = [ref for ref in refs if ref in rows and _person_matches(kind, rows[ref], criteria)]
        truncated = len(matches) > max_results
        matches = matches[:max_results]
        result_refs = list(matches)
        for ref in matches:
            for (other,) in self._db.execute(
                "SELECT to_ref FROM links WHERE from_ref = ? UNION SELECT from_ref FROM links WHERE to_ref = ?",
                (ref, ref),
            ):
                if other not in result_refs:
                    result_refs.append(other)
        records = {ref: rows.get(ref) or self._record(ref) for ref in result_refs}
        present = {ref: rec for ref, rec in records.items() if rec is not None}
        ids = {ref: f"pnd/{rec['pnd_id']}@{rec['version']}" for ref, rec in present.items()}
        results = []
        for ref, rec in present.items():
            links = [
                {"target": ids[to], "type": t, "description": d}
                for to, t, d in self._db.execute(
                    "SELECT to_ref, type, description FROM links WHERE from_ref = ?", (ref,)
                )
                if to in ids
            ]
            body = rec["body"]
            results.append(
                {
                    "source_record_id": ids[ref],
                    "pnd_id": rec["pnd_id"],
                    "pnd_version": rec["version"],
                    "kind": rec["kind"],
                    "entity": body.get("entity", {}),
                    "grading": body.get("grading", {}),
                    "originating_organisation": rec["organisation"],
                    "links": links,
                    "pnd_update_time": rec["updated_at"],
                }
            )
        return results, truncated

    def _record(self, ref: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT pnd_id, organisation, version, kind, body, updated_at FROM records WHERE ref = ? AND deleted = 0",
            (ref,),
        ).fetchone()
        if row is None:
            return None
        return {
            "pnd_id": row[0],
            "organisation": row[1],
            "version": row[2],
            "kind": row[3],
            "body": json.loads(row[4]),
            "updated_at": row[5],
        }

    # -- loading (demo data, benchmarks) ---------------------------------------------------

    def load(self, organisation: str, lines: Iterable[dict[str, Any]]) -> None:
        """Load records directly, as if accepted long ago (no submissions, no applied log)."""
        with self._lock:
            self._db.execute("BEGIN")
            now = _now()
            for line in lines:
                self._db.execute(
                    "INSERT OR REPLACE INTO records (ref, pnd_id, organisation, version, deleted, kind, body, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        line["source_ref"],
                        line.get("pnd_id")
                        or "PND-" + hashlib.sha1(line["source_ref"].encode()).hexdigest()[:12].upper(),
                        line.get("organisation", organisation),
                        int(line["record_version"]),
                        1 if line.get("operation") == "DELETE" else 0,
                        line["kind"],
                        json.dumps({"grading": line.get("grading", {}), "entity": line.get("entity", {})}),
                        now,
                    ),
                )
                if line.get("entity"):
                    self._index(
                        self._db, line["source_ref"], line["kind"], line["entity"], line.get("links") or []
                    )
            self._db.execute("COMMIT")

    def load_holdings(self, organisation: str, rows: Iterable[tuple[str, int, bool]]) -> None:
        """Bulk-load bare holdings (no content), for reconciliation benchmarks."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO records (ref, pnd_id, organisation, version, deleted, kind, body, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'PERSON', '{}', ?)",
                (
                    (ref, f"PND-B{i:010d}", organisation, version, int(deleted), _now())
                    for i, (ref, version, deleted) in enumerate(rows)
                ),
            )
            self._db.execute("COMMIT")


def _person_matches(kind: str, record: dict[str, Any], criteria: dict[str, Any]) -> bool:
    if kind != "PERSON":
        return True
    person = record["body"].get("entity", {}).get("person", {})
    given = str(criteria.get("given_name", "")).strip().lower()
    if given and not any(
        given in [g.lower() for g in n.get("given_names", [])] for n in person.get("names", [])
    ):
        return False
    dob = criteria.get("date_of_birth") or {}
    held = person.get("date_of_birth") or {}
    for part in ("year", "month", "day"):
        if dob.get(part) and held.get(part) and int(dob[part]) != int(held[part]):
            return False
        if dob.get(part) and not held.get(part):
            return False
    postcode = "".join(str(criteria.get("postcode", "")).upper().split())
    if postcode and not any(
        "".join(str(a.get("postcode", "")).upper().split()) == postcode for a in person.get("addresses", [])
    ):
        return False
    return True


def _account_key(text: str) -> str | None:
    """`platform:handle` in normal form, or None when the text names no account."""
    try:
        return parse_account(text).key
    except AccountError:
        return None


def _account_keys(body: dict[str, Any]) -> list[str | None]:
    """An account record is found by its platform and handle and by its link, which may differ."""
    keys: list[str | None] = []
    if body.get("platform") and body.get("handle"):
        try:
            keys.append(OnlineAccount.of(str(body["platform"]), str(body["handle"])).key)
        except AccountError:
            keys.append(None)
    if body.get("url"):
        keys.append(_account_key(str(body["url"])))
    return keys
