"""Events this service consumes, as handlers on the service's message bus: tasking JobCreated
(comms and ANPR jobs) and entity RecordLinked (attributes numbers and vehicles to resolved
entities). The job grants of toex_common.grants go on the same bus (bootstrap.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from toex.entity.events.v1 import events_pb2 as entity_ev
from toex.tasking.events.v2 import events_pb2 as tasking_ev
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import region_of

from toex_comms.domain.model import Handling
from toex_comms.service_layer import handlers

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


async def on_record_linked(event: IncomingEvent, uow: Any) -> None:
    message: Any = event.message
    ids = message.identifiers
    when = message.occur_time.ToDatetime(tzinfo=UTC) if message.HasField("occur_time") else datetime.now(UTC)
    await handlers.on_record_linked(
        region_of(event),
        message.entity_id,
        list(ids.e164_numbers),
        list(ids.vrms),
        message.decided_by or "entity",
        when,
        uow,
    )


def subscribe(bus: MessageBus, service: str) -> None:
    """The consumers on the bus, under the durable names they always had (`comms-jobs`,
    `comms-entities` for service "comms"): a new name would read the streams again from the start."""
    bus.on(f"{service}-jobs", tasking_ev.JobCreated, on_job_created)
    bus.on(f"{service}-entities", entity_ev.RecordLinked, on_record_linked)
