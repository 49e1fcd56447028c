"""The services of the fault matrix: how each is started, written to and checked.

A write returns the resource names it created; each service stores one row per resource in its
`table` (keyed by the name's last segment) and publishes its events with the resource (or a
child of it) as the CloudEvents subject. The checks read the service's database as the
superuser and its stream on the test's own broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc, pole_pb2
from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
from toex.type.v1 import security_pb2
from toex_common.testing.streams import stream_messages

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


def event_ids(messages: Iterable[Msg]) -> Counter[str]:
    """How many times each event (CloudEvents id) is on the stream."""
    return Counter((m.headers or {}).get("ce-id", "") for m in messages)
