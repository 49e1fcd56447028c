"""The soak's verdict: drain, reconcile what was accepted against what the stack holds, and
measure the calls inside and outside the fault windows.

Reconciliation reads each service's database as the superuser and every stream from its start:

- **stored once**: each accepted job, dataset, entity record, PND record and referral has exactly
  one row, and no request was stored twice (two rows carrying one request's own marker: its
  operation name, file name, source record id, phone number or subject);
- **published once**: no event id is on a stream twice, and each accepted resource has exactly
  one event of each type it must cause, by CloudEvents subject (JobCreated and JobAssigned per
  job, DatasetImported per dataset, RecordLinked per record, one PND answer per record,
  ReferralDrafted per referral); the stream reader saw every message on every stream once;
- **consumers' effects once**: every durable consumer has nothing pending or unacknowledged, its
  inbox holds as many events as its stream has for it, nothing is dead-lettered; each job's grant
  reached comms, entity, PND and safeguarding, comms knows each job, each assignment is one item
  in the assignee's inbox; each dataset's six numbers became six entity records and each of those
  and each resolved record one comms attribution; each PND record has one answered submission;
- **no outbox backlog** in any service;
- **no errors outside the fault windows**, every logical call answered in the end;
- the issue's figures: throughput outside the windows at least 0.8 of the fault-free baseline of
  the same run, recovery after each fault under 30 s.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from toex_oversight.adapters.scrub import ALLOWED as REPORTED_TYPES

from bench.soak.faults import Window
from bench.soak.stack import SoakStack
from bench.soak.traffic import STREAMS

SERVICES = ("tasking", "entity", "pnd", "comms", "safeguarding", "oversight")
# Streams of copies, read for the consumers' reconciliation but kept out of the checks of what
# the services published (each copy carries its original's event id): oversight's reports.
REPORTS = {"OVERSIGHT": "toex.*.oversight.>"}
# The producers' streams whose events oversight's reporter reports (by type, all but COMMS's).
REPORTED_FROM = ("TASKING", "SAFEGUARDING", "PND", "ENTITY")
GRANT_SERVICES = ("comms", "entity", "pnd", "safeguarding")
THROUGHPUT_GOAL = 0.8
RECOVERY_GOAL = 30.0
ANSWERED = ("ACCEPTED", "REJECTED", "CONFLICT")
PND_ANSWERS = ("SubmissionAccepted", "SubmissionRejected", "SubmissionConflict")
NUMBER = re.compile(r"\+44\d{10}")


@dataclass
class Check:
    area: str
    what: str
    expected: str
    found: str
    ok: bool
    detail: str = ""


@dataclass
class Reconciliation:
    checks: list[Check] = field(default_factory=list)
    stream_counts: dict[str, int] = field(default_factory=dict)
    events_by_type: Counter[str] = field(default_factory=Counter)
    consumers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, area: str, what: str, expected: Any, found: Any, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(area, what, str(expected), str(found), ok, detail))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _few(items: Iterable[Any], n: int = 5) -> str:
    listed = list(items)
    head = ", ".join(str(i) for i in listed[:n])
    return head + (f" (+{len(listed) - n} more)" if len(listed) > n else "")


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# -- the broker --------------------------------------------------------------------------------


async def _connect(nats_url: str) -> Any:
    import nats

    return await nats.connect(
        nats_url, max_reconnect_attempts=5, reconnect_time_wait=0.5, name="toex-soak-verdict"
    )


async def read_stream(js: Any, stream: str, subject: str) -> list[dict[str, Any]]:
    """Every message on `stream`, oldest first: sequence and CloudEvents headers."""
    import nats.errors

    try:
        info = await js.stream_info(stream)
    except Exception:
        return []
    last = info.state.last_seq
    if not info.state.messages:
        return []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    found: list[dict[str, Any]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except nats.errors.TimeoutError:
                break
            headers = msg.headers or {}
            found.append(
                {
                    "seq": msg.metadata.sequence.stream,
                    "nats_subject": msg.subject,
                    "type": headers.get("ce-type", ""),
                    "id": headers.get("ce-id", headers.get("Nats-Msg-Id", "")),
                    "subject": headers.get("ce-subject", ""),
                }
            )
            if msg.metadata.sequence.stream >= last:
                break
    finally:
        await sub.unsubscribe()
    return found


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


async def consumers(js: Any) -> list[Any]:
    """Every durable consumer on the services' streams (and oversight's reports)."""
    found: list[Any] = []
    for stream in (*STREAMS, *REPORTS):
        try:
            infos = await js.consumers_info(stream)
        except Exception:
            continue
        found.extend(info for info in infos if info.config.durable_name)
    return found


# -- draining ----------------------------------------------------------------------------------


async def backlog(stack: SoakStack) -> dict[str, int]:
    """What is still on its way: each outbox's unpublished rows, each durable consumer's
    pending and unacknowledged messages, PND submissions queued."""
    waiting: dict[str, int] = {}
    for service in SERVICES:
        rows = await _fetch(stack.dsn(service), "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        waiting[f"outbox {service}"] = rows[0]["n"]
    rows = await _fetch(stack.dsn("pnd"), "SELECT count(*) AS n FROM submissions WHERE state = 'QUEUED'")
    waiting["pnd submissions queued"] = rows[0]["n"]
    nc = await _connect(stack.nats_url)
    try:
        for info in await consumers(nc.jetstream()):
            waiting[f"consumer {info.name}"] = (info.num_pending or 0) + (info.num_ack_pending or 0)
    finally:
        await nc.close()
    return waiting


async def drain(stack: SoakStack, timeout: float, echo: Any = print) -> tuple[float, dict[str, int]]:
    """Wait until nothing is on its way (twice in a row, a second apart) or `timeout` passes;
    returns the seconds it took and what was left."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    quiet = 0
    left: dict[str, int] = {}
    while loop.time() - started < timeout:
        try:
            left = {k: v for k, v in (await backlog(stack)).items() if v}
        except Exception as exc:  # a component still coming back
            left = {f"unreachable: {exc!r}"[:120]: 1}
        quiet = quiet + 1 if not left else 0
        if quiet >= 2:
            return loop.time() - started, {}
        await asyncio.sleep(1.0)
    echo(f"  not drained after {timeout:.0f} s: {left}")
    return loop.time() - started, left


# -- reconciliation ----------------------------------------------------------------------------


async def reconcile(
    stack: SoakStack,
    run_id: str,
    accepted: dict[str, Any],
    seen: list[dict[str, Any]],
    traffic_start_wall: float,
) -> Reconciliation:
    result = Reconciliation()
    jobs: dict[str, str] = accepted["jobs"]
    datasets: dict[str, dict[str, Any]] = accepted["datasets"]
    records: dict[str, str] = accepted["records"]
    intelligence: dict[str, str] = accepted["intelligence"]
    referrals: dict[str, str] = accepted["referrals"]
    unanswered = Counter(u["op"] for u in accepted["unanswered"])

    def once(
        area: str, what: str, wanted: Iterable[str], stored: Counter[str], *, allow_extra: int = 0
    ) -> None:
        """Each of `wanted` stored exactly once, nothing else (bar `allow_extra` requests that
        got no answer, which may have been stored)."""
        wanted = set(wanted)
        missing = sorted(wanted - set(stored))
        twice = sorted(k for k, n in stored.items() if n > 1)
        extra = sorted(set(stored) - wanted)
        ok = not missing and not twice and len(extra) <= allow_extra
        detail = "; ".join(
            part
            for part in (
                f"missing {_few(missing)}" if missing else "",
                f"more than once {_few(twice)}" if twice else "",
                f"not accepted {_few(extra)}" if extra else "",
            )
            if part
        )
        result.add(
            area,
            what,
            f"{len(wanted)} x 1",
            f"{sum(stored[k] for k in wanted)} ({len(extra)} extra)",
            ok,
            detail,
        )

    # -- stored once ---------------------------------------------------------------------
    rows = await _fetch(
        stack.dsn("tasking"),
        "SELECT id, operation_name FROM jobs WHERE operation_name LIKE $1",
        f"Op SOAK-{run_id}-%",
    )
    by_id = {r["id"]: r["operation_name"] for r in rows}
    once(
        "stored",
        "tasking: one job per accepted CreateJob",
        (_last(j) for j in jobs),
        Counter(by_id.keys()),
        allow_extra=unanswered["CreateJob"],
    )
    twice = [name for name, n in Counter(by_id.values()).items() if n > 1]
    result.add("stored", "tasking: no CreateJob request stored twice", 0, len(twice), not twice, _few(twice))
    assigned = {_last(j): a for j, a in jobs.items() if a}
    rows = await _fetch(
        stack.dsn("tasking"), "SELECT job_id, username FROM job_assignees WHERE job_id = ANY($1)", list(by_id)
    )
    assignees: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        assignees[r["job_id"]].append(r["username"])
    wrong = [j for j, a in assigned.items() if assignees.get(j) != [a]]
    result.add(
        "stored",
        "tasking: each accepted AssignJob, its assignee once",
        f"{len(assigned)} jobs",
        f"{len(assigned) - len(wrong)} right",
        not wrong,
        _few(f"{j}: {assignees.get(j)}" for j in wrong),
    )

    rows = await _fetch(
        stack.dsn("comms"),
        "SELECT id, source_filename, rows_accepted, distinct_identifiers FROM datasets WHERE source_filename LIKE $1",
        f"soak-{run_id}-%",
    )
    once(
        "stored",
        "comms: one dataset per accepted ImportCdr",
        (_last(d) for d in datasets),
        Counter(r["id"] for r in rows),
        allow_extra=unanswered["ImportCdr"],
    )
    twice = [f for f, n in Counter(r["source_filename"] for r in rows).items() if n > 1]
    result.add("stored", "comms: no file stored as two datasets", 0, len(twice), not twice, _few(twice))
    short = [r["id"] for r in rows if r["rows_accepted"] != 5 or r["distinct_identifiers"] != 6]
    result.add(
        "stored",
        "comms: every dataset complete (5 rows, 6 numbers)",
        len(rows),
        len(rows) - len(short),
        not short,
        _few(short),
    )

    rows = await _fetch(
        stack.dsn("entity"),
        "SELECT id, source_record_id FROM source_records WHERE source_system = $1",
        f"soak-{run_id}",
    )
    once(
        "stored",
        "entity: one record per accepted ResolveRecord",
        (_last(r) for r in records),
        Counter(r["id"] for r in rows),
        allow_extra=unanswered["ResolveRecord"],
    )

    rows = await _fetch(
        stack.dsn("pnd"),
        "SELECT id, entity::text AS entity FROM intelligence WHERE created_at >= to_timestamp($1)",
        traffic_start_wall,
    )
    once(
        "stored",
        "pnd: one record per accepted SubmitIntelligence",
        (_last(r) for r in intelligence),
        Counter(r["id"] for r in rows),
        allow_extra=unanswered["SubmitIntelligence"],
    )
    numbers = Counter(m for r in rows for m in set(NUMBER.findall(r["entity"])))
    twice = [n for n, k in numbers.items() if k > 1]
    result.add(
        "stored", "pnd: no SubmitIntelligence request stored twice", 0, len(twice), not twice, _few(twice)
    )

    rows = await _fetch(
        stack.dsn("safeguarding"),
        "SELECT id, subject_entity_id FROM referrals WHERE subject_entity_id LIKE $1",
        f"soak-{run_id}-%",
    )
    once(
        "stored",
        "safeguarding: one referral per accepted CreateReferral",
        (_last(r) for r in referrals),
        Counter(r["id"] for r in rows),
        allow_extra=unanswered["CreateReferral"],
    )
    twice = [s for s, n in Counter(r["subject_entity_id"] for r in rows).items() if n > 1]
    result.add(
        "stored",
        "safeguarding: no CreateReferral request stored twice",
        0,
        len(twice),
        not twice,
        _few(twice),
    )

    # -- the streams ---------------------------------------------------------------------
    nc = await _connect(stack.nats_url)
    try:
        js = nc.jetstream()
        on_streams: dict[str, list[dict[str, Any]]] = {}
        for stream, subject in STREAMS.items():
            on_streams[stream] = await read_stream(js, stream, subject)
        reports = {stream: await read_stream(js, stream, subject) for stream, subject in REPORTS.items()}
        durable = await consumers(js)
    finally:
        await nc.close()
    everything = [m for messages in on_streams.values() for m in messages]
    result.stream_counts = {s: len(m) for s, m in on_streams.items()}
    result.events_by_type = Counter(m["type"].rsplit(".", 1)[-1] for m in everything)
    ids = Counter(m["id"] for m in everything)
    twice = [i for i, n in ids.items() if n > 1]
    result.add("published", "no event id on a stream twice", 0, len(twice), not twice, _few(twice))
    dead = on_streams.get("DEADLETTER", [])
    result.add(
        "consumers",
        "nothing dead-lettered",
        0,
        len(dead),
        not dead,
        _few(m["subject"] or m["type"] for m in dead),
    )

    by_subject: Counter[tuple[str, str]] = Counter(
        (m["type"].rsplit(".", 1)[-1], m["subject"]) for m in everything
    )

    def events_once(what: str, event_type: str | tuple[str, ...], resources: Iterable[str]) -> None:
        types = (event_type,) if isinstance(event_type, str) else event_type
        resources = list(resources)
        counts = {r: sum(by_subject[(t, r)] for t in types) for r in resources}
        wrong = [f"{r}: {n}" for r, n in counts.items() if n != 1]
        result.add(
            "published", what, f"{len(resources)} x 1", f"{sum(counts.values())}", not wrong, _few(wrong)
        )

    events_once("JobCreated once per job", "JobCreated", jobs)
    events_once("JobAssigned once per assigned job", "JobAssigned", [j for j, a in jobs.items() if a])
    events_once("DatasetImported once per dataset", "DatasetImported", datasets)
    events_once("RecordLinked once per resolved record", "RecordLinked", records)
    events_once("one PND answer per record", PND_ANSWERS, intelligence)
    events_once("ReferralDrafted once per referral", "ReferralDrafted", referrals)

    # The stream reader, across the broker restarts, saw each message once.
    reader = Counter((s["stream"], s["seq"]) for s in seen)
    on_stream = {(stream, m["seq"]) for stream, messages in on_streams.items() for m in messages}
    missed = on_stream - set(reader)
    result.add(
        "published",
        "the stream reader saw every message once",
        len(on_stream),
        len(set(reader) & on_stream),
        not missed,
        f"missed {_few(sorted(missed))}" if missed else "",
    )

    # -- consumers -----------------------------------------------------------------------
    inbox: Counter[str] = Counter()
    for service in SERVICES:
        for r in await _fetch(
            stack.dsn(service), "SELECT consumer, count(*) AS n FROM inbox GROUP BY consumer"
        ):
            inbox[r["consumer"]] += r["n"]
    for info in durable:
        filters = info.config.filter_subjects or (
            [info.config.filter_subject] if info.config.filter_subject else []
        )
        messages = on_streams.get(info.stream_name) or reports.get(info.stream_name, [])
        expected = (
            sum(1 for m in messages if any(subject_matches(f, m["nats_subject"]) for f in filters))
            if filters
            else len(messages)
        )
        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        new_only = str(info.config.deliver_policy).endswith("NEW") or str(info.config.deliver_policy) == "new"
        ok = pending == 0 and (inbox[info.name] <= expected if new_only else inbox[info.name] == expected)
        result.consumers.append(
            {
                "name": info.name,
                "stream": info.stream_name,
                "events": expected,
                "inbox": inbox[info.name],
                "pending": pending,
                "redelivered": info.num_redelivered or 0,
                "ok": ok,
            }
        )
    # Oversight's reporter: every event of a type it reports, reported once under its own id.
    copies = Counter(m["id"] for messages in reports.values() for m in messages)
    reported_types = set(REPORTED_TYPES)
    originals = {
        m["id"] for stream in REPORTED_FROM for m in on_streams.get(stream, []) if m["type"] in reported_types
    }
    wrong = sorted(
        [f"{i}: reported {copies[i]} times" for i in originals if copies[i] != 1]
        + [f"{i}: reported, no original" for i in set(copies) - originals]
    )
    result.add(
        "consumers",
        "oversight: each counted event reported once (OVERSIGHT)",
        len(originals),
        sum(copies.values()),
        not wrong,
        _few(wrong),
    )
    bad = [c for c in result.consumers if not c["ok"]]
    result.add(
        "consumers",
        "each durable consumer: nothing pending, inbox = its events on the stream",
        f"{len(result.consumers)} consumers",
        f"{len(result.consumers) - len(bad)} right",
        not bad,
        _few(f"{c['name']}: {c['events']} events, inbox {c['inbox']}, pending {c['pending']}" for c in bad),
    )

    job_names = list(jobs)
    for service in GRANT_SERVICES:
        rows = await _fetch(
            stack.dsn(service), "SELECT job, holders FROM job_grants WHERE job = ANY($1)", job_names
        )
        holders = {r["job"]: list(r["holders"]) for r in rows}
        wrong = [j for j, a in jobs.items() if j not in holders or (a and a not in holders[j])]
        result.add(
            "consumers",
            f"{service}: each job's grant, with its assignee",
            len(jobs),
            len(jobs) - len(wrong),
            not wrong,
            _few(f"{j}: {holders.get(j)}" for j in wrong),
        )
    rows = await _fetch(stack.dsn("comms"), "SELECT name FROM known_jobs WHERE name = ANY($1)", job_names)
    once("consumers", "comms: each job known once (JobCreated)", jobs, Counter(r["name"] for r in rows))
    rows = await _fetch(
        stack.dsn("tasking"),
        "SELECT resource, recipient FROM inbox_items WHERE item_type = 'JOB_ASSIGNED' AND resource = ANY($1)",
        job_names,
    )
    items = Counter((r["resource"], r["recipient"]) for r in rows)
    wrong = [f"{j}: {items[(j, 'user:' + a)]}" for j, a in jobs.items() if a and items[(j, "user:" + a)] != 1]
    result.add(
        "consumers",
        "tasking inbox: one JOB_ASSIGNED item per assignment",
        len(assigned),
        sum(items.values()),
        not wrong,
        _few(wrong),
    )

    rows = await _fetch(
        stack.dsn("entity"),
        "SELECT id, source_record_id FROM source_records WHERE source_system = 'comms' AND source_record_id LIKE $1",
        f"{'regions/EMSOU/datasets/'}%",
    )
    derived: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        dataset, _, number = r["source_record_id"].rpartition("/")
        derived[dataset].append((number, r["id"]))
    wrong = []
    for name, info in datasets.items():
        got = Counter(number for number, _ in derived.get(name, []))
        if set(got) != set(info["numbers"]) or any(n > 1 for n in got.values()):
            wrong.append(f"{name}: {sum(got.values())} records")
    result.add(
        "consumers",
        "entity: each dataset's 6 numbers, one record each",
        f"{len(datasets)} x 6",
        sum(len(derived.get(d, [])) for d in datasets),
        not wrong,
        _few(wrong),
    )
    derived_records = [f"regions/EMSOU/records/{rid}" for d in datasets for _, rid in derived.get(d, [])]
    events_once("RecordLinked once per dataset number's record", "RecordLinked", derived_records)
    linked = list(records) + derived_records
    rows = await _fetch(
        stack.dsn("comms"),
        "SELECT record, count(*) AS n FROM attributions WHERE record = ANY($1) GROUP BY record",
        linked,
    )
    attributed = {r["record"]: r["n"] for r in rows}
    wrong = [f"{r}: {attributed.get(r, 0)}" for r in linked if attributed.get(r, 0) != 1]
    result.add(
        "consumers",
        "comms: one attribution per linked record (RecordLinked)",
        f"{len(linked)} x 1",
        sum(attributed.values()),
        not wrong,
        _few(wrong),
    )

    ids_pnd = [_last(r) for r in intelligence]
    rows = await _fetch(
        stack.dsn("pnd"),
        "SELECT record_id, version, state FROM submissions WHERE record_id = ANY($1)",
        ids_pnd,
    )
    submissions: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in rows:
        submissions[r["record_id"]].append((r["version"], r["state"]))
    wrong = [
        f"{i}: {submissions.get(i)}"
        for i in ids_pnd
        if len(submissions.get(i, [])) != 1 or submissions[i][0][1] not in ANSWERED
    ]
    result.add(
        "consumers",
        "pnd: one answered submission per record",
        len(ids_pnd),
        len(ids_pnd) - len(wrong),
        not wrong,
        _few(wrong),
    )
    states = Counter(s for v in submissions.values() for _, s in v)
    result.add("consumers", "pnd: answers (for the record)", "-", dict(states), True)

    # -- backlog ---------------------------------------------------------------------------
    for service in SERVICES:
        rows = await _fetch(stack.dsn(service), "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        result.add("outbox", f"{service}: outbox backlog", 0, rows[0]["n"], rows[0]["n"] == 0)
    return result


# -- latency, errors, throughput ---------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def in_any(windows: list[Window], start: float, end: float | None = None) -> bool:
    return any(w.covers(start, start if end is None else end) for w in windows)


@dataclass
class OpStats:
    op: str
    calls: int = 0
    failed: int = 0  # logical calls that never got an answer
    attempts_failed_in: int = 0
    attempts_failed_out: int = 0
    out_ms: list[float] = field(default_factory=list)
    in_ms: list[float] = field(default_factory=list)
    codes_in: Counter[str] = field(default_factory=Counter)
    codes_out: Counter[str] = field(default_factory=Counter)


def op_stats(samples: list[dict[str, Any]], windows: list[Window]) -> dict[str, OpStats]:
    stats: dict[str, OpStats] = {}
    for s in samples:
        st = stats.setdefault(s["op"], OpStats(s["op"]))
        st.calls += 1
        for when, code in s["failures"]:
            if in_any(windows, when):
                st.attempts_failed_in += 1
                st.codes_in[code] += 1
            else:
                st.attempts_failed_out += 1
                st.codes_out[code] += 1
        if not s["ok"]:
            st.failed += 1
            if s["failures"] and s["failures"][-1][1] == s["code"]:
                continue  # already counted as a failed attempt
            bucket = st.codes_in if in_any(windows, s["end"]) else st.codes_out
            bucket[s["code"]] += 1
            if bucket is st.codes_in:
                st.attempts_failed_in += 1
            else:
                st.attempts_failed_out += 1
            continue
        latency = (s["end"] - s["start"]) * 1000
        (st.in_ms if in_any(windows, s["start"], s["end"]) else st.out_ms).append(latency)
    return dict(sorted(stats.items()))


def throughput(
    samples: list[dict[str, Any]],
    windows: list[Window],
    *,
    start: float,
    baseline_end: float,
    end: float,
    warmup: float = 10.0,
) -> tuple[float, float, float]:
    """(baseline calls/s, calls/s outside the windows after the baseline, seconds outside):
    answered calls by when they started."""
    begun = [s["start"] for s in samples if s["ok"]]
    base_from = start + warmup
    base = sum(1 for t in begun if base_from <= t < baseline_end) / max(1e-9, baseline_end - base_from)
    outside_seconds = (end - baseline_end) - sum(
        max(0.0, min(w.end, end) - max(w.injected, baseline_end)) for w in windows
    )
    count = sum(1 for t in begun if baseline_end <= t < end and not in_any(windows, t))
    return base, count / max(1e-9, outside_seconds), outside_seconds


def recovery(samples: list[dict[str, Any]], windows: list[Window], end: float) -> list[float]:
    """For each fault, seconds from its injection until the component was back and the last
    call attempt it failed had failed (before the next fault)."""
    found = []
    for i, w in enumerate(windows):
        until = windows[i + 1].injected if i + 1 < len(windows) else end
        last = max(
            (t for s in samples for t, _ in s["failures"] if w.injected <= t < until),
            default=w.back,
        )
        found.append(max(w.back, last) - w.injected)
    return found


def failures_per_window(samples: list[dict[str, Any]], windows: list[Window]) -> list[int]:
    return [sum(1 for s in samples for t, _ in s["failures"] if w.injected <= t <= w.end) for w in windows]


def event_lags(
    seen: list[dict[str, Any]], windows: list[Window], mono_offset: float, since: float
) -> tuple[list[float], list[float]]:
    """Seconds from each event's CloudEvents time to its arrival at the reader, for events made
    since the traffic began (`since`, monotonic) outside and inside the fault windows
    (`mono_offset`: wall clock minus monotonic clock)."""
    inside: list[float] = []
    outside: list[float] = []
    for s in seen:
        if not s["time"]:
            continue
        try:
            made = datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if made - mono_offset < since:
            continue  # the demo data's, made before the reader started
        lag = s["received"] - made
        (inside if in_any(windows, made - mono_offset) else outside).append(lag)
    return outside, inside
