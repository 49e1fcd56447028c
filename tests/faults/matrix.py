"""The services of the fault matrix: how each is started, written to and checked.

A write returns the resource names it created; each service stores one row per resource in its
`table` (keyed by the name's last segment) and publishes its events with the resource (or a
child of it) as the CloudEvents subject. The checks read the service's database as the
superuser and its stream on the test's own broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as comms_resources
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc, pole_pb2
from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

Write = Callable[[Any, int, str], Awaitable[list[str]]]
CALL_TIMEOUT = 15.0  # seconds; no call of these tests should come near it


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    package: str
    stub: Callable[[Any], Any]
    domain: str  # its events are on subjects toex.<region>.<domain>.<Event>
    table: str  # one row per resource its writes create, keyed `id`
    user: str  # the demo user who writes
    # write(service, n, request_id): the n-th write of a test (n makes its content unique);
    # a write with a request id repeats as the first answer.
    write: Write
    settings: dict[str, Any] = field(default_factory=dict)
    # Extra writes, not idempotent by request id (a bulk stream): (service, first n) -> names.
    bulk: Callable[[Any, int], Awaitable[list[str]]] | None = None
    needs_pnd: bool = False  # events only once the PND simulator has answered
    request_ids: bool = True  # whether its write sends the request id (an import: its bytes instead)

    def __str__(self) -> str:
        return self.name


# -- entity: ResolveRecord (and the IngestRecords bulk stream) --------------------------------

ENTITY_GRADING = entity_pb2.Grading(
    source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
    intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def number(n: int) -> str:
    """The n-th phone number of a test (each test has a database of its own)."""
    return f"+4477009{n:05d}"


def phone_record(n: int) -> entity_pb2.SourceRecord:
    return entity_pb2.SourceRecord(
        ref=entity_pb2.SourceRecordRef(source_system="faults", source_record_id=f"F-{n}"),
        grading=ENTITY_GRADING,
        phone=entity_pb2.Phone(number=number(n)),
    )


async def entity_write(service: Any, n: int, request_id: str) -> list[str]:
    answer = await service.stub.ResolveRecord(
        entity_pb2.ResolveRecordRequest(
            parent="regions/EMSOU", record=phone_record(n), request_id=request_id
        ),
        metadata=service.md(),
        timeout=CALL_TIMEOUT,
    )
    return [answer.record.name]


async def entity_bulk(service: Any, first: int) -> list[str]:
    async def records() -> AsyncIterator[entity_pb2.IngestRecordsRequest]:
        for n in range(first, first + 2):
            yield entity_pb2.IngestRecordsRequest(parent="regions/EMSOU", record=phone_record(n))

    answer = await service.stub.IngestRecords(records(), metadata=service.md(), timeout=CALL_TIMEOUT)
    assert answer.error_count == 0, [r.error for r in answer.results]
    return [r.record for r in answer.results]


# -- pnd: SubmitIntelligence ------------------------------------------------------------------


async def pnd_write(service: Any, n: int, request_id: str) -> list[str]:
    answer = await service.stub.SubmitIntelligence(
        pnd_pb2.SubmitIntelligenceRequest(
            parent="regions/EMSOU",
            record=pnd_pb2.IntelligenceRecord(
                entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number(n))),
                grading=pole_pb2.Grading(
                    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
                    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
                    handling=security_pb2.HANDLING_CODE_P,
                ),
            ),
            request_id=request_id,
        ),
        metadata=service.md(),
        timeout=CALL_TIMEOUT,
    )
    return [answer.record.name]


# -- comms: ImportCdr (a repeat of the same bytes is the same dataset) -------------------------

CDR_HEADER = (
    "start_time,duration,calling_number,called_number,event_type,calling_cell,called_cell,imei,imsi\n"
)


def cdr_file(n: int) -> bytes:
    rows = [f"2025-01-0{1 + k}T10:00:00Z,60,{number(n)},{number(9000 + k)},voice,,,," for k in range(3)]
    return (CDR_HEADER + "\n".join(rows) + "\n").encode()


def cdr_rows(rows: int) -> bytes:
    """A CDR file of `rows` rows (each test has a database and a data dir of its own)."""
    lines = [
        f"2025-02-{1 + k % 28:02d}T{k % 24:02d}:{k % 60:02d}:{k % 59:02d}Z,{k % 900},"
        f"{number(k % 4000)},{number(40_000 + k % 9000)},{'voice' if k % 3 else 'sms'},,,,"
        for k in range(rows)
    ]
    return (CDR_HEADER + "\n".join(lines) + "\n").encode()


CHUNK_BYTES = 64 * 1024


async def cdr_upload(
    body: bytes, *, halfway: asyncio.Event | None = None
) -> AsyncIterator[comms_pb2.ImportCdrRequest]:
    """A file as ImportCdr's stream: the header, then the file in chunks. With `halfway`, it
    is set once half the chunks are sent and the rest never follows: the next chunk is not
    ready when the server dies. (A write racing the end of the call is reported INTERNAL
    "Internal error from Core" by grpcio's asyncio client, not with the call's status:
    grpc/grpc#36066.)"""
    yield comms_pb2.ImportCdrRequest(
        header=comms_pb2.ImportHeader(parent="regions/EMSOU", filename="calls.csv")
    )
    pieces = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]
    for k, piece in enumerate(pieces):
        if halfway is not None and k == len(pieces) // 2:
            halfway.set()
            await asyncio.Event().wait()  # until the call ends
        yield comms_pb2.ImportCdrRequest(chunk=piece)


async def list_datasets(service: Any, timeout: float = CALL_TIMEOUT) -> list[tuple[str, int]]:
    """The region's datasets as ListDatasets shows them: (name, rows accepted)."""
    answer = await service.stub.ListDatasets(
        comms_pb2.ListDatasetsRequest(parent="regions/EMSOU", page_size=50),
        metadata=service.md(),
        timeout=timeout,
    )
    return [(d.name, d.rows_accepted) for d in answer.datasets]


async def comms_write(service: Any, n: int, request_id: str) -> list[str]:
    del request_id  # an import has none: the file's bytes identify it

    def upload() -> Iterable[comms_pb2.ImportCdrRequest]:
        yield comms_pb2.ImportCdrRequest(
            header=comms_pb2.ImportHeader(parent="regions/EMSOU", filename=f"cdr-{n}.csv")
        )
        yield comms_pb2.ImportCdrRequest(chunk=cdr_file(n))

    answer = await service.stub.ImportCdr(upload(), metadata=service.md(), timeout=CALL_TIMEOUT)
    assert answer.dataset.rows_accepted == 3, answer
    return [answer.dataset.name]


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def watchlist_contact(victim: str) -> EventEnvelope:
    """Comms' finding, as comms publishes it: a number on a victims' list in contact with a
    registered sex offender's (what safeguarding drafts a referral from)."""
    message = comms_events.WatchlistContactDetected(
        dataset=f"regions/EMSOU/datasets/cdr-{uuid.uuid4().hex[:8]}",
        list_a=comms_resources.WatchlistRef(
            name="regions/EMSOU/watchlists/rso", kind=comms_resources.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
        ),
        number_a="+447700900001",
        list_b=comms_resources.WatchlistRef(
            name="regions/EMSOU/watchlists/victims", kind=comms_resources.WATCHLIST_KIND_VICTIM
        ),
        number_b="+447700900002",
        entity_id_b=victim,
        contact_count=12,
        call_count=5,
        sms_count=7,
        total_duration_seconds=640,
        first_contact_time=stamp(datetime(2025, 3, 1, tzinfo=UTC)),
        last_contact_time=stamp(datetime(2025, 3, 20, tzinfo=UTC)),
    )
    return build_event(message, domain="comms", source="toex/comms", region=Region.EMSOU)


# -- safeguarding: CreateReferral -------------------------------------------------------------


async def safeguarding_write(service: Any, n: int, request_id: str) -> list[str]:
    answer = await service.stub.CreateReferral(
        safeguarding_pb2.CreateReferralRequest(
            parent="regions/EMSOU",
            referral=safeguarding_pb2.Referral(
                subject=safeguarding_pb2.Subject(
                    entity_id=f"ent-{n}", age_band=safeguarding_pb2.AGE_BAND_CHILD
                ),
                concerns=[safeguarding_pb2.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
            ),
            request_id=request_id,
        ),
        metadata=service.md(),
        timeout=CALL_TIMEOUT,
    )
    return [answer.referral.name]


# -- tasking: CreateJob ------------------------------------------------------------------------


def job_request(n: int, request_id: str) -> tasking_pb2.CreateJobRequest:
    """The n-th job of a test; sent again as it is (a retry repeats the request, due time too)."""
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    return tasking_pb2.CreateJobRequest(
        parent="regions/EMSOU",
        job=tasking_pb2.Job(
            requesting_unit="Leicestershire Police",
            operation_name=f"Op FAULTLINE {n}",
            job_type=tasking_pb2.JOB_TYPE_COMMS_ANALYSIS,
            due_time=due,
        ),
        request_id=request_id,
    )


async def tasking_write(service: Any, n: int, request_id: str) -> list[str]:
    answer = await service.stub.CreateJob(
        job_request(n, request_id), metadata=service.md(), timeout=CALL_TIMEOUT
    )
    return [answer.job.name]


ENTITY = ServiceSpec(
    "entity",
    "toex_entity",
    entity_pb2_grpc.EntityResolutionServiceStub,
    domain="entity",
    table="source_records",
    user="researcher.emsou",
    write=entity_write,
    bulk=entity_bulk,
    settings={"consume": False},
)
PND = ServiceSpec(
    "pnd",
    "toex_pnd",
    pnd_pb2_grpc.PndSyncServiceStub,
    domain="pnd",
    table="intelligence",
    user="researcher.emsou",
    write=pnd_write,
    needs_pnd=True,
    settings={
        "dispatch_poll_seconds": 0.1,
        "retry_base_seconds": 0.2,
        "retry_cap_seconds": 1.0,
        "reconcile_interval_seconds": 0,
    },
)
COMMS = ServiceSpec(
    "comms",
    "toex_comms",
    comms_pb2_grpc.CommsAnalysisServiceStub,
    domain="comms",
    table="datasets",
    user="analyst.emsou",
    write=comms_write,
    settings={"consume_events": False},
    request_ids=False,
)
SAFEGUARDING = ServiceSpec(
    "safeguarding",
    "toex_safeguarding",
    safeguarding_pb2_grpc.SafeguardingServiceStub,
    domain="safeguarding",
    table="referrals",
    user="safeguarding_officer.emsou",
    write=safeguarding_write,
    settings={"consume_triggers": False, "tasking_address": "127.0.0.1:9"},  # no job is linked
)
SERVICES = [ENTITY, PND, COMMS, SAFEGUARDING]
# Tasking's broker and database cells are its own integration tests (services/tasking/tests);
# the cells here that it takes part in name it.
TASKING = ServiceSpec(
    "tasking",
    "toex_tasking",
    tasking_pb2_grpc.TaskingServiceStub,
    domain="tasking",
    table="jobs",
    user="supervisor.emsou",
    write=tasking_write,
    settings={"directory": "static"},
)


# -- checks -----------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0, every: float = 0.1
) -> Any:
    """Poll `probe` until it returns something truthy (returned), or fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@dataclass(frozen=True)
class Held:
    """An event waiting in a service's outbox."""

    event_id: str
    resource: str  # its CloudEvents subject
    attempts: int  # publishes that went unacknowledged so far


async def outbox(dsn: str) -> list[Held]:
    rows = await query(dsn, "SELECT event_id, headers->>'ce-subject' AS resource, attempts FROM outbox")
    return [Held(r["event_id"], r["resource"] or "", r["attempts"]) for r in rows]


def about(resource: str, name: str) -> bool:
    """Whether an event whose subject is `resource` is about the resource `name` (or a child)."""
    return resource == name or resource.startswith(name + "/")


def covers(resources: Iterable[str], names: Iterable[str]) -> bool:
    """Every name has an event about it."""
    resources = list(resources)
    return all(any(about(r, name) for r in resources) for name in names)


async def stored_ids(service: Any) -> Counter[str]:
    rows = await query(service.dsn, f"SELECT id FROM {service.spec.table}")
    return Counter(r["id"] for r in rows)


def ids_of(names: Iterable[str]) -> Counter[str]:
    return Counter(name.rsplit("/", 1)[-1] for name in names)


async def published(nats_url: str, domain: str, until: Callable[[list[Msg]], bool]) -> list[Msg]:
    """The messages on the domain's subjects, read until `until` holds (or ten seconds)."""
    return await stream_messages(nats_url, f"toex.*.{domain}.>", until=until, wait=10)


async def relayed(service: Any, timeout: float = 30.0) -> None:
    """Wait until the service's outbox is empty: every stored event is on its stream."""

    async def empty() -> bool:
        return not await outbox(service.dsn)

    await eventually(empty, f"{service.spec.name}'s outbox to empty", timeout=timeout)


async def events_by_resource(nats_url: str, domain: str, event: str, at_least: int = 1) -> Counter[str]:
    """How many times each resource (CloudEvents subject) has an `event` (type name) on the
    domain's stream, read once at least `at_least` are there (or after twenty seconds)."""
    messages = await stream_messages(
        nats_url, f"toex.*.{domain}.{event}", until=lambda found: len(found) >= at_least, wait=20
    )
    return Counter(m.headers.get("ce-subject", "") for m in messages)


async def consumer_info(nats_url: str, stream: str, name: str) -> Any:
    """The durable consumer's state on the stream (NotFoundError while it is not there)."""
    nc = await nats.connect(nats_url)
    try:
        return await nc.jetstream().consumer_info(stream, name)
    finally:
        await nc.close()


async def consumer_bound(nats_url: str, stream: str, name: str) -> None:
    """Wait until the consumer is on the stream: a service declares the producer's stream and
    binds its consumers in the background after it starts."""

    async def bound() -> bool:
        with contextlib.suppress(NotFoundError):
            return bool(await consumer_info(nats_url, stream, name))
        return False

    await eventually(bound, f"consumer {name} on {stream}")


def files_under(root: Path) -> list[str]:
    """The files under `root`, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def event_ids(messages: Iterable[Msg]) -> Counter[str]:
    """How many times each event (CloudEvents id) is on the stream."""
    return Counter((m.headers or {}).get("ce-id", "") for m in messages)
