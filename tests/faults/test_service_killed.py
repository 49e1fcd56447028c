"""A service SIGKILLed mid-batch, started again on the same database and broker; the client
tries again with the same request (the same request ids, the same file).

Each service runs as its own process (`python -m toex_<name> serve`, as the local stack runs
it), so the kill is a real one: no shutdown, no rollback hook, no acknowledgement, no cleanup.
Afterwards every accepted change is stored once and its events are on the stream once; what was
under way when the process died is either absent or complete once retried, never half there.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats
import pytest
from toex.comms.v1 import comms_pb2
from toex.entity.v1 import entity_pb2
from toex_common.events.streams import COMMS_STREAM, ensure_stream
from toex_common.testing.streams import stream_messages

from .matrix import (
    COMMS,
    ENTITY,
    SAFEGUARDING,
    TASKING,
    cdr_rows,
    cdr_upload,
    consumer_info,
    events_by_resource,
    eventually,
    files_under,
    job_request,
    list_datasets,
    phone_record,
    query,
    relayed,
    watchlist_contact,
)

T = TypeVar("T")
# What a caller whose call was under way when the server died is told: try again.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE}
CALL_TIMEOUT = 30.0


def in_background(call: Awaitable[T]) -> asyncio.Task[T]:
    """A streaming call under way while the test goes on (to kill its server)."""

    async def answer() -> T:
        return await call

    return asyncio.create_task(answer())


# -- comms: ImportCdr of a file, killed mid-upload or mid-Parquet-write --------------------------

CDR_ROWS = 60_000  # about 3.7 MB


@dataclass
class Listings:
    """Every dataset ListDatasets showed while the test ran: (name, rows accepted)."""

    seen: set[tuple[str, int]] = field(default_factory=set)
    answered: int = 0


async def watch_listings(service: Any, listings: Listings, stop: asyncio.Event) -> None:
    # A channel of its own, which the restart does not close under a call.
    async with service.connect() as channel:
        stub = service.spec.stub(channel)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):  # refused while no process serves
                answer = await stub.ListDatasets(
                    comms_pb2.ListDatasetsRequest(parent="regions/EMSOU", page_size=50),
                    metadata=service.md(),
                    timeout=2,
                )
                listings.seen.update((d.name, d.rows_accepted) for d in answer.datasets)
                listings.answered += 1
            await asyncio.sleep(0.05)


def uploaded(uploads: Path) -> int:
    """Bytes of uploads under way (or left behind) in the data dir."""
    return sum(p.stat().st_size for p in uploads.glob("*"))


def staged(staging: Path) -> bool:
    return any(staging.glob("*/rows-*.parquet"))


async def kill_when_staged(service: Any, staging: Path) -> None:
    """SIGKILL as soon as the import's first Parquet part is on disk."""
    while not staged(staging):
        await asyncio.sleep(0.002)
    service.kill()


@pytest.mark.parametrize("moment", ["upload", "parquet"])
async def test_cdr_import_killed_midway_is_never_listed_half_written_and_a_rerun_finishes_it(
    moment: str, spawn: Any, postgres: Any, broker: Any, tmp_path: Path
) -> None:
    data = tmp_path / "comms-data"
    # Parquet parts of a few thousand rows: the write takes long enough for the kill to land in it.
    comms = await spawn(COMMS, postgres=postgres, nats_url=broker.url, data_dir=data, import_batch_rows=2_000)
    body = cdr_rows(CDR_ROWS)
    listings, stop_watching = Listings(), asyncio.Event()
    watcher = asyncio.create_task(watch_listings(comms, listings, stop_watching))
    try:
        if moment == "upload":
            halfway = asyncio.Event()
            importing = in_background(
                comms.stub.ImportCdr(
                    cdr_upload(body, halfway=halfway), metadata=comms.md(), timeout=CALL_TIMEOUT
                )
            )
            await halfway.wait()

            async def partly_written() -> bool:
                return uploaded(data / "uploads") >= len(body) // 4

            await eventually(partly_written, "part of the upload on the server's disk", every=0.01)
            comms.kill()
        else:
            importing = in_background(
                comms.stub.ImportCdr(cdr_upload(body), metadata=comms.md(), timeout=CALL_TIMEOUT)
            )
            killer = asyncio.create_task(kill_when_staged(comms, data / "staging"))
            done, _ = await asyncio.wait({importing, killer}, return_when=asyncio.FIRST_COMPLETED)
            if importing in done:
                killer.cancel()
                pytest.fail(f"the import finished before the kill: {importing.result()}; use a larger file")
            await killer
        with pytest.raises(grpc.aio.AioRpcError) as interrupted:
            await importing
        assert interrupted.value.code() in RETRYABLE, interrupted.value

        # Where the kill landed: in the upload (part of the file on disk), or in the Parquet write.
        if moment == "upload":
            assert 0 < uploaded(data / "uploads") < len(body), files_under(data)
        else:
            assert staged(data / "staging"), files_under(data)

        await comms.start()
        assert not await list_datasets(comms), "a dataset of the killed import is listed"
        # The restarted process swept what its killed predecessor left before serving.
        assert files_under(data) == [], "partial files of the killed import after the restart"

        retried = await comms.stub.ImportCdr(cdr_upload(body), metadata=comms.md(), timeout=CALL_TIMEOUT)
        assert retried.dataset.rows_accepted == CDR_ROWS and retried.dataset.rows_rejected == 0, retried
    finally:
        stop_watching.set()
        await watcher

    assert await list_datasets(comms) == [(retried.dataset.name, CDR_ROWS)]
    assert listings.answered > 0
    assert listings.seen <= {(retried.dataset.name, CDR_ROWS)}, f"listed half-written: {listings.seen}"

    await relayed(comms)
    imported = await events_by_resource(broker.url, "comms", "DatasetImported")
    assert imported == Counter({retried.dataset.name: 1}), "DatasetImported once, for the one dataset"

    # Nothing but the one dataset's files is in the data dir after the rerun.
    dataset_id = retried.dataset.name.rsplit("/", 1)[-1]
    leftovers = [f for f in files_under(data) if not f.startswith(f"datasets/{dataset_id}/")]
    assert not leftovers, (
        f"files other than the dataset's in the data dir after restart and rerun: {leftovers}"
    )


# -- entity: IngestRecords, killed after some chunks committed -----------------------------------

RECORDS = 5_000  # resolved and committed 2,000 at a time


async def records(count: int) -> AsyncIterator[entity_pb2.IngestRecordsRequest]:
    for n in range(count):
        yield entity_pb2.IngestRecordsRequest(parent="regions/EMSOU", record=phone_record(n))


async def stored_records(service: Any) -> int:
    rows = await query(service.dsn, "SELECT count(*) AS n FROM source_records")
    return int(rows[0]["n"])


async def test_bulk_ingest_killed_midway_stores_each_record_once_when_sent_again(
    spawn: Any, postgres: Any, broker: Any
) -> None:
    entity = await spawn(ENTITY, postgres=postgres, nats_url=broker.url)
    ingest = in_background(
        entity.stub.IngestRecords(records(RECORDS), metadata=entity.md(), timeout=CALL_TIMEOUT)
    )

    async def some_committed() -> int:
        return await stored_records(entity)

    await eventually(some_committed, "the first chunk of records to be committed", every=0.02)
    entity.kill()
    with pytest.raises(grpc.aio.AioRpcError) as interrupted:
        await ingest
    assert interrupted.value.code() in RETRYABLE, interrupted.value
    before = await stored_records(entity)
    assert 0 < before < RECORDS, f"the kill did not land mid-batch: {before} of {RECORDS} stored"
    print(f"entity: {before} of {RECORDS} records stored at the kill")

    await entity.start()
    answer = await entity.stub.IngestRecords(records(RECORDS), metadata=entity.md(), timeout=CALL_TIMEOUT)
    assert answer.received_count == RECORDS and answer.error_count == 0, answer.error_count
    outcomes = Counter(r.outcome for r in answer.results)
    assert outcomes[entity_pb2.RESOLVE_OUTCOME_UNCHANGED] == before, outcomes

    names = [r.record for r in answer.results]
    assert len(set(names)) == RECORDS
    rows = await query(entity.dsn, "SELECT id, source_record_id FROM source_records")
    assert Counter(r["source_record_id"] for r in rows) == Counter(f"F-{n}" for n in range(RECORDS))
    assert {f"regions/EMSOU/records/{r['id']}" for r in rows} == set(names)

    await relayed(entity)
    linked = await events_by_resource(broker.url, "entity", "RecordLinked", at_least=RECORDS)
    assert linked == Counter(names), "RecordLinked once per record, and for nothing else"


# -- safeguarding: referral triggers, killed while it drafts ------------------------------------

TRIGGERS = 400  # one WatchlistContactDetected per subject
BATCH = 64  # events the consumer fetches and drafts in one transaction


async def test_referral_triggers_killed_while_drafting_draft_each_referral_once(
    spawn: Any, postgres: Any, broker: Any
) -> None:
    # Comms' findings are on its stream before safeguarding starts: it drafts them a batch at a
    # time (one transaction each) from the moment it is up.
    victims = [f"ent-{uuid.uuid4().hex[:10]}" for _ in range(TRIGGERS)]
    events = {victim: watchlist_contact(victim) for victim in victims}
    nc = await nats.connect(broker.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, COMMS_STREAM)  # as comms declares it
        for event in events.values():
            await js.publish(event.subject, event.payload, headers=event.headers)
    finally:
        await nc.close()

    # Events fetched by the killed process come back after the acknowledgement wait.
    safeguarding = await spawn(
        SAFEGUARDING, postgres=postgres, nats_url=broker.url, ack_wait=2.0, consume_triggers=True
    )
    consumer = "safeguarding-comms-triggers"

    async def drafted_so_far() -> int:
        rows = await query(safeguarding.dsn, "SELECT count(*) AS n FROM referrals")
        return int(rows[0]["n"])

    async def first_batch_drafted() -> bool:
        return await drafted_so_far() >= BATCH

    await eventually(first_batch_drafted, "the first batch of referrals to be drafted", every=0.02)
    safeguarding.kill()
    before = await drafted_so_far()
    assert before < TRIGGERS, f"the kill did not land while drafting: {before} of {TRIGGERS}"
    at_kill = await consumer_info(broker.url, "COMMS", consumer)
    assert at_kill.num_ack_pending > 0, "the killed process held no fetched, unacknowledged event"

    await safeguarding.start()

    async def all_handled() -> bool:
        info = await consumer_info(broker.url, "COMMS", consumer)
        return info.num_pending == 0 and info.num_ack_pending == 0 and await drafted_so_far() >= TRIGGERS

    await eventually(all_handled, "every trigger handled and acknowledged", timeout=60)
    info = await consumer_info(broker.url, "COMMS", consumer)
    assert info.config.ack_wait == 2.0, "the serving process kept the acknowledgement wait it was given"
    print(
        f"safeguarding: {before} of {TRIGGERS} drafted at the kill, "
        f"{at_kill.num_ack_pending} fetched and not acknowledged"
    )

    rows = await query(
        safeguarding.dsn,
        "SELECT r.id, r.subject_entity_id AS subject, e->>'ref' AS ref FROM referrals r, "
        "jsonb_array_elements(r.evidence) e WHERE e->>'kind' = 'EVENT'",
    )
    referrals = await query(safeguarding.dsn, "SELECT id, subject_entity_id AS subject FROM referrals")
    assert Counter(r["subject"] for r in referrals) == Counter(victims), "one referral per subject"
    assert Counter((r["subject"], r["ref"]) for r in rows) == Counter(
        (victim, event.event_id) for victim, event in events.items()
    ), "each event's evidence on its subject's referral once"
    handled = await query(safeguarding.dsn, "SELECT event_id FROM inbox WHERE consumer = $1", consumer)
    assert Counter(r["event_id"] for r in handled) == Counter(e.event_id for e in events.values())

    await relayed(safeguarding)
    drafted = await events_by_resource(broker.url, "safeguarding", "ReferralDrafted", at_least=TRIGGERS)
    assert drafted == Counter(f"regions/EMSOU/referrals/{r['id']}" for r in referrals)
    evidence = await stream_messages(broker.url, "toex.*.safeguarding.EvidenceAdded", wait=1)
    assert not evidence, "a repeated trigger added its evidence again"


# -- tasking: a burst of CreateJob, killed midway, every request retried with its id -------------

JOBS = 300
CALLERS = 6


@dataclass
class Burst:
    answered: dict[str, str] = field(default_factory=dict)  # request id -> job name
    failures: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    in_flight: int = 0
    in_flight_at_kill: int = 0


async def test_create_job_burst_killed_midway_makes_one_job_per_request_id(
    spawn: Any, postgres: Any, broker: Any
) -> None:
    tasking = await spawn(TASKING, postgres=postgres, nats_url=broker.url)
    requests = {str(uuid.uuid4()): n for n in range(JOBS)}
    sent = {request_id: job_request(n, request_id) for request_id, n in requests.items()}
    burst = Burst()
    queue = list(sent)

    async def caller() -> None:
        while queue:
            request_id = queue.pop()
            burst.in_flight += 1
            try:
                answer = await tasking.stub.CreateJob(
                    sent[request_id], metadata=tasking.md(), timeout=CALL_TIMEOUT
                )
                burst.answered[request_id] = answer.job.name
            except grpc.aio.AioRpcError as exc:
                burst.failures.append((exc.code(), exc.details() or ""))
            finally:
                burst.in_flight -= 1

    async def kill_midway() -> None:
        async def enough() -> bool:
            rows = await query(tasking.dsn, "SELECT count(*) AS n FROM jobs")
            return int(rows[0]["n"]) >= JOBS // 5

        await eventually(enough, "a fifth of the jobs to be raised", every=0.02)
        burst.in_flight_at_kill = burst.in_flight
        tasking.kill()

    await asyncio.gather(kill_midway(), *(caller() for _ in range(CALLERS)))
    print(
        f"tasking: {len(burst.answered)} answered before the kill, {len(burst.failures)} failed, "
        f"{burst.in_flight_at_kill} under way at the kill"
    )
    assert burst.in_flight_at_kill > 0, "no call was under way when the service died"
    assert 0 < len(burst.answered) < JOBS
    unclear = [(code.name, details) for code, details in burst.failures if code not in RETRYABLE]
    assert not unclear, f"calls failed with statuses a caller cannot act on: {unclear}"

    await tasking.start()
    retried: dict[str, str] = {}
    for request_id, request in sent.items():
        answer = await tasking.stub.CreateJob(request, metadata=tasking.md(), timeout=CALL_TIMEOUT)
        retried[request_id] = answer.job.name
    assert {r: retried[r] for r in burst.answered} == burst.answered, "a repeat returns the first answer"
    assert len(set(retried.values())) == JOBS, "one job per request id"
    jobs = await query(tasking.dsn, "SELECT id FROM jobs")
    assert Counter(f"regions/EMSOU/jobs/{r['id']}" for r in jobs) == Counter(retried.values())

    await relayed(tasking)
    created = await events_by_resource(broker.url, "tasking", "JobCreated", at_least=JOBS)
    assert created == Counter(retried.values()), "JobCreated once per job"
