"""NATS consumers: records other services publish become source records here.

- tasking `JobCreated` (consumer `entity-tasking-subjects`): the job's subject entity ids give
  the job's region an interest in those entities; another region holding records on one raises
  deconfliction notices. They are also the entities a holder of the job's grant may read.
- PND `PndResultReceived` (consumer `entity-pnd-results`): every person, phone, vehicle and
  online account in the result is resolved as a source record of the searching region (source
  system "pnd").
Both are handlers on the service's message bus (`subscribe`), run by the idempotent consumer
base: one transaction per batch, inbox-deduplicated.
"""

from __future__ import annotations

import logging
from typing import Any

from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import pole_pb2
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import security_pb2
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError, region_of
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


def subscribe(bus: MessageBus, deps: handlers.Deps) -> None:
    """The service's consumers of other services' events (durable names kept: their inboxes
    know what was handled)."""

    async def job_created(event: IncomingEvent, uow: Any) -> None:
        await on_job_created(event, uow, deps)

    async def pnd_result(event: IncomingEvent, uow: Any) -> None:
        await on_pnd_result(event, uow, deps)

    bus.on("entity-tasking-subjects", tasking_events.JobCreated, job_created)
    bus.on("entity-pnd-results", pnd_events.PndResultReceived, pnd_result)


async def on_job_created(event: IncomingEvent, uow: EntityUnitOfWork, deps: handlers.Deps) -> None:
    message = event.message
    if not isinstance(message, tasking_events.JobCreated):
        raise PermanentError(f"expected JobCreated, got {event.event_type or 'an untyped event'}")
    region = region_of(event)
    if not message.job.startswith(f"regions/{region.value}/jobs/"):
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
    valid = []
    for item in pnd_records(message, region):
        try:
            valid.append(handlers.build_record(item, CONSUMER_ACTOR, now))
        except Exception as exc:  # one malformed result must not hold back the others
            log.warning("PND result %s skipped: %s", item.source_record_id, exc)
    if valid:
        await handlers.resolve_in(uow, valid, CONSUMER_ACTOR, deps, now)


__all__ = ["normalise", "on_job_created", "on_pnd_result", "subscribe"]
