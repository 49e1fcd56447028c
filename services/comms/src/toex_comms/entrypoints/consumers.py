"""Events this service consumes, as handlers on the service's message bus: tasking JobCreated
(comms and ANPR jobs); entity RecordLinked (attributes numbers and vehicles to resolved
entities), EntitiesMerged and EntitySplit (the attributions follow), all three under the one
durable consumer `comms-entities`, so they are taken in the order entity published them. The
job grants of toex_common.grants go on the same bus (bootstrap.py).

Each entity event changes only the attributions of the region its subject names (`region_of`:
the consumer base has refused an event whose label says another)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from toex.entity.events.v1 import events_pb2 as entity_ev
from toex.tasking.events.v2 import events_pb2 as tasking_ev
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError, region_of
from toex_kernel.clock import utcnow

from toex_comms.domain.commands import FollowMerge, FollowSplit
from toex_comms.domain.model import Handling
from toex_comms.service_layer import handlers, identity

JOB_TYPES = {
    tasking_ev.JOB_TYPE_COMMS_ANALYSIS: "comms_analysis",
    tasking_ev.JOB_TYPE_ANPR: "anpr",
}


async def on_job_created(event: IncomingEvent, uow: Any) -> None:
    message: Any = event.message
    job_type = JOB_TYPES.get(message.job_type)
    if job_type is None:
        return
    handling = Handling.P if message.label.handling == 1 else Handling.C
    await handlers.on_job_created(
        message.job, region_of(event), job_type, handling, message.operation_name, uow
    )


def _occurred(message: Any) -> datetime:
    return message.occur_time.ToDatetime(tzinfo=UTC) if message.HasField("occur_time") else datetime.now(UTC)


def _required(value: str, what: str) -> str:
    if not value.strip():
        raise PermanentError(f"identity change without {what}")
    return value.strip()


async def on_record_linked(event: IncomingEvent, uow: Any) -> None:
    message: Any = event.message
    ids = message.identifiers
    await handlers.on_record_linked(
        region_of(event),
        message.entity_id or message.entity,
        message.record,
        list(ids.e164_numbers),
        list(ids.vrms),
        message.decided_by or "entity",
        _occurred(message),
        uow,
    )


def merge_command(event: IncomingEvent, message: entity_ev.EntitiesMerged) -> FollowMerge:
    return FollowMerge(
        region=region_of(event),
        change_id=_required(message.change_id, "a change id"),
        entity=_required(message.entity, "an entity"),
        merged=tuple(message.merged),
        decided_by=message.decided_by,
        occurred_at=_occurred(message),
    )


def split_command(event: IncomingEvent, message: entity_ev.EntitySplit) -> FollowSplit:
    # Parallel lists in the event: a record and the entity it went to, pair by pair.
    if len(message.moved_records) != len(message.moved_to):
        raise PermanentError("EntitySplit: moved_records and moved_to differ in length")
    moves = tuple(zip(message.moved_records, message.moved_to, strict=True))
    return FollowSplit(
        region=region_of(event),
        change_id=_required(message.change_id, "a change id"),
        entity=_required(message.entity, "an entity"),
        moves=moves,
        undone_change=message.undone_change.strip(),
        decided_by=message.decided_by,
        occurred_at=_occurred(message),
    )


async def on_entities_merged(event: IncomingEvent, uow: Any) -> None:
    await identity.follow_merge(merge_command(event, event.message), uow, utcnow())  # type: ignore[arg-type]


async def on_entity_split(event: IncomingEvent, uow: Any) -> None:
    await identity.follow_split(split_command(event, event.message), uow, utcnow())  # type: ignore[arg-type]


def subscribe(bus: MessageBus, service: str) -> None:
    """The consumers on the bus, under the durable names they always had (`comms-jobs`,
    `comms-entities` for service "comms"): a new name would read the streams again from the
    start. Merges and splits join RecordLinked on `comms-entities` (its subjects grow; what it
    has acknowledged stays acknowledged)."""
    entities = f"{service}-entities"
    bus.on(f"{service}-jobs", tasking_ev.JobCreated, on_job_created)
    bus.on(entities, entity_ev.RecordLinked, on_record_linked)
    bus.on(entities, entity_ev.EntitiesMerged, on_entities_merged)
    bus.on(entities, entity_ev.EntitySplit, on_entity_split)
