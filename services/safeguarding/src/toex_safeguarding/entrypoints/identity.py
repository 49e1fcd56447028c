"""Entity resolution's identity changes -> the referrals of the region they are about.

- entity `EntitiesMerged`: referrals about the merged entities follow the surviving one; drafts
  about one person become one case.
- entity `EntitySplit`: referrals about the entity are told, for an officer to review (an undone
  merge is put back where nothing changed since).
- entity `RecordLinked` of a person: referrals raised on a bare number the record holds follow
  the person.

Registered on the service's message bus under `<service>-identity`. Each event changes only the
referrals of the region its subject names (`region_of`: the consumer base has refused an event
whose label says another); the rules are in service_layer/identity.py.
"""

from __future__ import annotations

from typing import Any

from toex.entity.events.v1 import events_pb2 as entity_events
from toex.entity.v1 import entity_pb2
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError, region_of
from toex_common.events.envelope import IncomingEvent

from toex_safeguarding.domain import commands
from toex_safeguarding.service_layer import handlers, identity


def _required(value: str, what: str) -> str:
    if not value.strip():
        raise PermanentError(f"identity event without {what}")
    return value.strip()


def merge_command(event: IncomingEvent, message: entity_events.EntitiesMerged) -> commands.MergeIdentities:
    return commands.MergeIdentities(
        event_id=event.event_id,
        region=region_of(event),
        change_id=_required(message.change_id, "a change id"),
        entity=_required(message.entity, "an entity"),
        merged=tuple(message.merged),
    )


def split_command(event: IncomingEvent, message: entity_events.EntitySplit) -> commands.SplitIdentity:
    return commands.SplitIdentity(
        event_id=event.event_id,
        region=region_of(event),
        change_id=_required(message.change_id, "a change id"),
        entity=_required(message.entity, "an entity"),
        moved_records=tuple(message.moved_records),
        moved_to=tuple(message.moved_to),
        undone_change=message.undone_change.strip(),
    )


def link_command(event: IncomingEvent, message: entity_events.RecordLinked) -> commands.LinkNumbers | None:
    """Only a person's record, and only its numbers: a referral's subject is a person."""
    if message.entity_type != entity_pb2.RECORD_TYPE_PERSON or not message.identifiers.e164_numbers:
        return None
    return commands.LinkNumbers(
        event_id=event.event_id,
        region=region_of(event),
        entity=_required(message.entity_id or message.entity, "an entity"),
        record=message.record,
        numbers=tuple(message.identifiers.e164_numbers),
    )


def subscribe(bus: MessageBus, service: str, clock: handlers.Clock = handlers.utcnow) -> None:
    """The identity consumer on the bus: `<service>-identity`, on the entity service's stream."""

    async def on_merged(event: IncomingEvent, uow: Any) -> None:
        await identity.merge_identities(merge_command(event, event.message), uow, clock())  # type: ignore[arg-type]

    async def on_split(event: IncomingEvent, uow: Any) -> None:
        await identity.split_identity(split_command(event, event.message), uow, clock())  # type: ignore[arg-type]

    async def on_linked(event: IncomingEvent, uow: Any) -> None:
        command = link_command(event, event.message)  # type: ignore[arg-type]
        if command is not None:
            await identity.link_numbers(command, uow, clock())

    name = f"{service}-identity"
    bus.on(name, entity_events.EntitiesMerged, on_merged)
    bus.on(name, entity_events.EntitySplit, on_split)
    bus.on(name, entity_events.RecordLinked, on_linked)
