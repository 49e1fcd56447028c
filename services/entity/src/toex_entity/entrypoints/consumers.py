"""NATS consumers: records other services publish become source records here.

- tasking `JobCreated` (consumer `entity-tasking-subjects`): the job's subject entity ids give
  the job's region an interest in those entities; another region holding records on one raises
  deconfliction notices. They are also the entities a holder of the job's grant may read.
- PND `PndResultReceived` (consumer `entity-pnd-results`): every person, phone, vehicle and
  online account in the result is resolved as a source record of the searching region (source
  system "pnd").
- comms `DatasetIdentifiersObserved` (consumer `entity-comms-identifiers`): every phone number
  and vehicle of an imported dataset (call data, ANPR reads, adverts) is resolved as a source
  record of the dataset's region (source system "comms", one record per dataset and identifier).
All are handlers on the service's message bus (`subscribe`), run by the idempotent consumer
base: one transaction per batch, inbox-deduplicated.
"""

from __future__ import annotations

import logging
from typing import Any

from toex.comms.events.v1 import events_pb2 as comms_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import pole_pb2
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import security_pb2
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError, region_of
from toex_kernel.errors import InvalidArgument
from toex_kernel.grants import is_job_of
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_entity.domain import commands, normalise
from toex_entity.domain.records import (
    AccountData,
    Address,
    Content,
    Grading,
    Handling,
    PersonData,
    PhoneData,
    RecordType,
    VehicleData,
)
from toex_entity.service_layer import handlers
from toex_entity.service_layer.ports import EntityUnitOfWork

log = logging.getLogger(__name__)

CONSUMER_ACTOR = Principal("toex-entity", "system:consumer", Region.NATIONAL, frozenset({Role.SERVICE}))
_ASSESSMENT = "ABCDE"
# Parts of a dataset's identifiers resolved per consumer transaction. A part holds up to 2,000
# (comms' integration events), the records per transaction of the service's own bulk ingest
# (handlers.INGEST_CHUNK): so a large dataset holds the resolution lock no longer at a time
# than an IngestRecords stream does, and each part is done well within the acknowledgement wait.
COMMS_IDENTIFIER_BATCH = 1
# Communications data as a source, graded 1A: a technical source (providers' call records,
# ANPR cameras, advert captures) is reliable (1), and what the record says, that the number or
# vehicle was recorded in the dataset, was recorded directly (A). It claims nothing of whom the
# identifier belongs to. The handling code is the dataset's (its event's label).
COMMS_SOURCE_EVALUATION = 1
COMMS_ASSESSMENT = "A"


def subscribe(bus: MessageBus, deps: handlers.Deps) -> None:
    """The service's consumers of other services' events (durable names kept: their inboxes
    know what was handled)."""

    async def job_created(event: IncomingEvent, uow: Any) -> None:
        await on_job_created(event, uow, deps)

    async def pnd_result(event: IncomingEvent, uow: Any) -> None:
        await on_pnd_result(event, uow, deps)

    async def comms_identifiers(event: IncomingEvent, uow: Any) -> None:
        await on_comms_identifiers(event, uow, deps)

    bus.on("entity-tasking-subjects", tasking_events.JobCreated, job_created)
    bus.on("entity-pnd-results", pnd_events.PndResultReceived, pnd_result)
    bus.on(
        "entity-comms-identifiers",
        comms_events.DatasetIdentifiersObserved,
        comms_identifiers,
        batch=COMMS_IDENTIFIER_BATCH,
    )


async def on_job_created(event: IncomingEvent, uow: EntityUnitOfWork, deps: handlers.Deps) -> None:
    message = event.message
    if not isinstance(message, tasking_events.JobCreated):
        raise PermanentError(f"expected JobCreated, got {event.event_type or 'an untyped event'}")
    region = region_of(event)
    if not is_job_of(message.job, region):
        # The subject's region is what NATS vouches for: a job of another region named on it
        # would name subjects into that region's job, which its grant's holders may read.
        raise PermanentError(f"job {message.job!r} is not of the region {region.value} the event came from")
    ids = [s.strip().removeprefix("entities/") for s in message.subject_entity_ids if s.strip()]
    if ids:
        added = await handlers.record_job_subjects(message.job, region, ids, uow, deps)
        log.info("job %s: %d subject entities recorded", message.job, added)


def _grading(grading: pole_pb2.Grading) -> Grading:
    evaluation = int(grading.source_evaluation) if 1 <= grading.source_evaluation <= 3 else 2
    assessment = (
        _ASSESSMENT[grading.intelligence_assessment - 1] if 1 <= grading.intelligence_assessment <= 5 else "D"
    )
    handling = Handling.P if grading.handling == security_pb2.HANDLING_CODE_P else Handling.C
    return Grading(evaluation, assessment, handling, grading.handling_conditions)


def _person(person: pole_pb2.Person, pnd_id: str, links: dict[str, list[str]]) -> PersonData:
    main = person.names[0] if person.names else None
    aliases = tuple(
        " ".join([*n.given_names, n.family_name]).strip()
        for n in person.names[1:]
        if n.given_names or n.family_name
    )
    dob = person.date_of_birth
    birth_date = f"{dob.year:04d}-{dob.month:02d}-{dob.day:02d}" if dob.year and dob.month and dob.day else ""
    gender = {"male": "M", "m": "M", "female": "F", "f": "F"}.get(person.gender.strip().lower(), "")
    return PersonData(
        given_name=main.given_names[0] if main and main.given_names else "",
        middle_names=" ".join(main.given_names[1:]) if main else "",
        surname=main.family_name if main else "",
        aliases=aliases,
        birth_date=birth_date,
        gender=gender,
        addresses=tuple(Address(tuple(a.lines), a.town, a.postcode) for a in person.addresses),
        identifiers=(("PND", pnd_id),) if pnd_id else (),
        phone_numbers=tuple(links.get("phones", ())),
        vrms=tuple(links.get("vrms", ())),
    )


def pnd_records(message: pnd_events.PndResultReceived, region: Region) -> list[commands.IncomingRecord]:
    """The result's persons, phones, vehicles and online accounts as source records. A
    person's linked phones and vehicles are carried on the person record as its identifiers."""
    by_id = {r.source_record_id: r for r in message.results}
    out: list[commands.IncomingRecord] = []
    for result in message.results:
        kind = result.entity.WhichOneof("kind")
        content: Content | None = None
        record_type: RecordType | None = None
        if kind == "person":
            links: dict[str, list[str]] = {"phones": [], "vrms": []}
            for link in result.links:
                target = by_id.get(link.target)
                if target is None:
                    continue
                target_kind = target.entity.WhichOneof("kind")
                if target_kind == "phone":
                    links["phones"].append(target.entity.phone.e164)
                elif target_kind == "vehicle":
                    links["vrms"].append(target.entity.vehicle.vrm)
            content, record_type = _person(result.entity.person, result.pnd_id, links), RecordType.PERSON
        elif kind == "phone":
            content, record_type = PhoneData(result.entity.phone.e164), RecordType.PHONE
        elif kind == "vehicle":
            v = result.entity.vehicle
            content, record_type = VehicleData(v.vrm, v.make, v.model, v.colour), RecordType.VEHICLE
        elif kind == "online_account":
            a = result.entity.online_account
            content, record_type = AccountData(a.platform, a.handle), RecordType.ONLINE_ACCOUNT
        if content is None:
            continue  # locations and events are not resolved here
        out.append(
            commands.IncomingRecord(
                region=region,
                source_system="pnd",
                source_record_id=result.source_record_id or f"pnd/{result.pnd_id}@{result.pnd_version}",
                record_type=record_type,
                grading=_grading(result.grading),
                content=content,
            )
        )
    return out


async def on_pnd_result(event: IncomingEvent, uow: EntityUnitOfWork, deps: handlers.Deps) -> None:
    message = event.message
    if not isinstance(message, pnd_events.PndResultReceived):
        raise PermanentError(f"expected PndResultReceived, got {event.event_type or 'an untyped event'}")
    region = region_of(event)
    now = deps.clock()
    # A search made for a job makes its results that job's records, as a resolution under the job
    # would: only a job of the subject's region (another's would open this region's records to
    # that job's grant holders).
    job = message.search.job if is_job_of(message.search.job, region) else ""
    if message.search.job and not job:
        log.warning(
            "PND search %s names job %s of another region; not attached",
            message.search.name,
            message.search.job,
        )
    valid = []
    for item in pnd_records(message, region):
        try:
            valid.append(handlers.build_record(item, CONSUMER_ACTOR, now, job=job))
        except Exception as exc:  # one malformed result must not hold back the others
            log.warning("PND result %s skipped: %s", item.source_record_id, exc)
    if valid:
        await handlers.resolve_in(uow, valid, CONSUMER_ACTOR, deps, now)


def comms_records(
    message: comms_events.DatasetIdentifiersObserved, region: Region
) -> list[commands.IncomingRecord]:
    """A dataset's phone numbers and vehicles as source records of `region`, each identified by
    the dataset and the identifier (`regions/R/datasets/D/+447700900123`), so a part delivered
    again resolves to the records it made the first time. IMEIs are left out: a record holds no
    handset identifier to match on (PhoneData is a number)."""
    handling = Handling.P if message.label.handling == security_pb2.HANDLING_CODE_P else Handling.C
    grading = Grading(COMMS_SOURCE_EVALUATION, COMMS_ASSESSMENT, handling)
    found: list[tuple[RecordType, Content, str]] = [
        *((RecordType.PHONE, PhoneData(n), n) for n in message.e164_numbers if n.strip()),
        *((RecordType.VEHICLE, VehicleData(v), v) for v in message.vrms if v.strip()),
    ]
    return [
        commands.IncomingRecord(
            region=region,
            source_system="comms",
            source_record_id=f"{message.dataset}/{identifier.strip()}",
            record_type=record_type,
            grading=grading,
            content=content,
        )
        for record_type, content, identifier in found
    ]


async def on_comms_identifiers(event: IncomingEvent, uow: EntityUnitOfWork, deps: handlers.Deps) -> None:
    message = event.message
    if not isinstance(message, comms_events.DatasetIdentifiersObserved):
        raise PermanentError(
            f"expected DatasetIdentifiersObserved, got {event.event_type or 'an untyped event'}"
        )
    region = region_of(event)
    prefix = f"regions/{region.value}/"
    if not message.dataset.startswith(f"{prefix}datasets/"):
        # The records would be of this region but name another region's dataset as their source.
        raise PermanentError(
            f"dataset {message.dataset!r} is not of the region {region.value} the event came from"
        )
    # Attached only to a job of the subject's region: a job of another would put this region's
    # records in reach of that job's grant holders.
    job = message.job if is_job_of(message.job, region) else ""
    if message.job and not job:
        log.warning("%s names job %s of another region; not attached", message.dataset, message.job)
    now = deps.clock()
    valid = []
    skipped: list[str] = []
    for item in comms_records(message, region):
        try:
            valid.append(handlers.build_record(item, CONSUMER_ACTOR, now, job=job))
        except InvalidArgument:  # one malformed identifier must not hold back the others
            skipped.append(item.source_record_id)
    if skipped:
        log.warning(
            "%s: %d identifiers skipped, not valid (%s, ...)", message.dataset, len(skipped), skipped[0]
        )
    if valid:
        await handlers.resolve_in(uow, valid, CONSUMER_ACTOR, deps, now)


__all__ = ["normalise", "on_comms_identifiers", "on_job_created", "on_pnd_result", "subscribe"]
