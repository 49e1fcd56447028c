"""Findings from other services -> triggers -> draft referrals (or evidence on the open one).

- comms `WatchlistContactDetected`: a number on a victim or potential-victim list in contact
  with a number on a registered-sex-offender or suspect list. The victim side is the subject.
- comms `AdvertNumberFlagged`: a number in adult-services adverts, a potential victim of
  sexual exploitation.
- comms `AdvertNetworkDetected` with a child indicated (a claimed age under 18, an age or words
  in the text): ONE draft referral for the network (subject `advert-network:<id>`), not one
  per number; the network found again adds its evidence to that open referral. A network
  without a child indicated triggers nothing here (its numbers' flags do).
- tasking `JobCreated` of type SAFEGUARDING: each subject of the job.

Registered on the service's message bus (`subscribe`): the platform's idempotent consumers
(inbox, retries, dead letters) run the handler inside the consumer's transaction. Each fetched
batch first has its subjects' aliases looked up at once (`prefetch`), not one event at a time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import security_pb2
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import IncomingEvent
from toex_kernel.regions import Region

from toex_safeguarding.domain.commands import Trigger
from toex_safeguarding.domain.model import Evidence
from toex_safeguarding.domain.values import AgeBand, Concern, EvidenceKind, Handling, RiskLevel
from toex_safeguarding.service_layer import handlers, identity

log = logging.getLogger(__name__)

WATCHLIST_CONTACT = comms_events.WatchlistContactDetected.DESCRIPTOR.full_name
ADVERT_FLAGGED = comms_events.AdvertNumberFlagged.DESCRIPTOR.full_name
ADVERT_NETWORK = comms_events.AdvertNetworkDetected.DESCRIPTOR.full_name
JOB_CREATED = tasking_events.JobCreated.DESCRIPTOR.full_name

VICTIM_KINDS = {comms.WATCHLIST_KIND_VICTIM, comms.WATCHLIST_KIND_POTENTIAL_VICTIM}
# The other party's list decides the concern and the risk. Age is not known from call data, so
# the subject is presumed a child until the officer establishes it.
OFFENDER_KINDS = {
    comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER: (
        Concern.CHILD_SEXUAL_EXPLOITATION,
        RiskLevel.HIGH,
        "a registered sex offender",
    ),
    comms.WATCHLIST_KIND_SUSPECT: (Concern.OTHER, RiskLevel.MEDIUM, "a suspect"),
}
JOB_RISK = {
    tasking_events.PRIORITY_URGENT: RiskLevel.HIGH,
    tasking_events.PRIORITY_PRIORITY: RiskLevel.MEDIUM,
}


def _region(label: Any, event: IncomingEvent) -> Region:
    try:
        if label.region:
            return Region.from_proto(label.region)
        if event.region is not None:
            return event.region
    except ValueError:
        pass
    raise PermanentError("event carries no region label")


def _handling(label: Any) -> Handling:
    return Handling.P if label.handling == security_pb2.HANDLING_CODE_P else Handling.C


def _stamp(value: Any) -> str:
    return value.ToDatetime(tzinfo=UTC).date().isoformat() if value.seconds else "?"


def _common_evidence(event_id: str, dataset: str, job: str, description: str) -> list[Evidence]:
    found = [Evidence(EvidenceKind.EVENT, event_id, description)]
    if dataset:
        found.append(Evidence(EvidenceKind.DATASET, dataset, "call data or adverts holding the evidence"))
    if job:
        found.append(Evidence(EvidenceKind.JOB, job, "the job the finding came from"))
    return found


def watchlist_triggers(event: IncomingEvent, message: comms_events.WatchlistContactDetected) -> list[Trigger]:
    region = _region(message.label, event)
    sides = [
        (message.list_a, message.number_a, message.entity_id_a, message.list_b),
        (message.list_b, message.number_b, message.entity_id_b, message.list_a),
    ]
    found = []
    for own, number, entity, other in sides:
        if own.kind not in VICTIM_KINDS or other.kind not in OFFENDER_KINDS:
            continue
        subject = entity.strip() or (f"phone:{number.strip()}" if number.strip() else "")
        if not subject:
            continue
        concern, risk, who = OFFENDER_KINDS[other.kind]
        description = (
            f"{message.contact_count} contacts ({message.call_count} calls, {message.sms_count} texts, "
            f"{message.total_duration_seconds}s) with {who} on {other.name or 'a watchlist'}, "
            f"{_stamp(message.first_contact_time)} to {_stamp(message.last_contact_time)}"
        )
        found.append(
            Trigger(
                source_event_id=event.event_id,
                source_type=WATCHLIST_CONTACT,
                region=region,
                subject_entity_id=subject,
                concern=concern,
                evidence=_common_evidence(event.event_id, message.dataset, message.job, description),
                linked_job=message.job,
                risk_level=risk,
                handling=_handling(message.label),
            )
        )
    return found


def advert_triggers(event: IncomingEvent, message: comms_events.AdvertNumberFlagged) -> list[Trigger]:
    subject = message.entity_id.strip() or (
        f"phone:{message.number.strip()}" if message.number.strip() else ""
    )
    if not subject:
        return []
    description = (
        f"number in {message.advert_count} adult-services adverts across {len(message.locations)} locations, "
        f"{_stamp(message.first_advert_time)} to {_stamp(message.last_advert_time)}"
    )
    return [
        Trigger(
            source_event_id=event.event_id,
            source_type=ADVERT_FLAGGED,
            region=_region(message.label, event),
            subject_entity_id=subject,
            concern=Concern.SEXUAL_EXPLOITATION,
            evidence=_common_evidence(event.event_id, message.dataset, message.job, description),
            linked_job=message.job,
            risk_level=RiskLevel.MEDIUM,
            handling=_handling(message.label),
        )
    ]


def advert_network_triggers(
    event: IncomingEvent, message: comms_events.AdvertNetworkDetected
) -> list[Trigger]:
    if not message.minor or not message.network_id.strip():
        return []
    why = "; ".join(message.minor_reasons[:5])
    description = (
        f"advert network of {message.advert_count} adverts under {len(message.numbers)} numbers "
        f"({', '.join(message.numbers[:10])}); a child indicated: {why}"
    )
    if message.towns:
        description += f"; towns: {' -> '.join(message.towns[:10])}"
    return [
        Trigger(
            source_event_id=event.event_id,
            source_type=ADVERT_NETWORK,
            region=_region(message.label, event),
            subject_entity_id=f"advert-network:{message.network_id.strip()}",
            concern=Concern.CHILD_SEXUAL_EXPLOITATION,
            evidence=_common_evidence(event.event_id, message.dataset, message.job, description[:2000]),
            linked_job=message.job,
            risk_level=RiskLevel.HIGH,
            handling=_handling(message.label),
            age_band=AgeBand.CHILD,
        )
    ]


def job_triggers(event: IncomingEvent, message: tasking_events.JobCreated) -> list[Trigger]:
    if message.job_type != tasking_events.JOB_TYPE_SAFEGUARDING:
        return []
    region = _region(message.label, event)
    description = (
        f"safeguarding job for {message.operation_name or 'an operation'}: {message.description[:200]}"
    )
    return [
        Trigger(
            source_event_id=event.event_id,
            source_type=JOB_CREATED,
            region=region,
            subject_entity_id=subject.strip(),
            concern=None,
            evidence=[Evidence(EvidenceKind.JOB, message.job, description)],
            linked_job=message.job,
            risk_level=JOB_RISK.get(message.priority, RiskLevel.LOW),
            handling=_handling(message.label),
        )
        for subject in message.subject_entity_ids
        if subject.strip()
    ]


def triggers_for(event: IncomingEvent) -> list[Trigger]:
    message: Any = event.message
    if message is None:
        raise PermanentError(f"cannot decode event type {event.event_type!r}")
    if event.event_type == WATCHLIST_CONTACT:
        return watchlist_triggers(event, message)
    if event.event_type == ADVERT_FLAGGED:
        return advert_triggers(event, message)
    if event.event_type == ADVERT_NETWORK:
        return advert_network_triggers(event, message)
    if event.event_type == JOB_CREATED:
        return job_triggers(event, message)
    return []


def make_handler(clock: handlers.Clock = handlers.utcnow) -> Any:
    async def handle(event: IncomingEvent, uow: Any) -> None:
        now: datetime = clock()
        for trigger in triggers_for(event):
            referral = await handlers.draft_from_trigger(trigger, uow, now)
            log.info(
                "trigger %s (%s) -> %s", event.event_id, event.event_type.rsplit(".", 1)[-1], referral.name
            )

    return handle


async def prefetch(events: Sequence[IncomingEvent], uow: Any) -> None:
    """Before a batch's triggers are handled: who their subjects are now, looked up for the
    whole batch at once (each trigger's handler then resolves its subject without a round trip).
    An event that cannot trigger is left to its handler to refuse."""
    subjects: dict[Region, list[str]] = defaultdict(list)
    for event in events:
        try:
            found = triggers_for(event)
        except PermanentError:
            continue
        for trigger in found:
            subjects[trigger.region].append(trigger.subject_entity_id)
    for region, batch in subjects.items():
        await identity.prefetch(uow, region, batch)


def subscribe(bus: MessageBus, service: str, clock: handlers.Clock = handlers.utcnow) -> None:
    """The triggers on the bus: comms findings under `<service>-comms-triggers`, safeguarding
    jobs under `<service>-job-triggers`."""
    handle = make_handler(clock)
    bus.on(f"{service}-comms-triggers", comms_events.WatchlistContactDetected, handle, prefetch=prefetch)
    bus.on(f"{service}-comms-triggers", comms_events.AdvertNumberFlagged, handle, prefetch=prefetch)
    bus.on(f"{service}-comms-triggers", comms_events.AdvertNetworkDetected, handle, prefetch=prefetch)
    bus.on(f"{service}-job-triggers", tasking_events.JobCreated, handle, prefetch=prefetch)
