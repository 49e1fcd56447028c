"""Domain events -> integration events (toex.entity.events.v1) in their envelopes, labelled
at creation: the entity service's one mapping (what its unit of work publishes at commit), the
only place that knows the protobuf event messages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.hub.events.v1 import events_pb2 as hub_ev
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import ENTITY_STREAM
from toex_kernel.regions import Region

from toex_entity.adapters.mapping import grading_to_proto, identifiers_to_proto, record_type_to_proto
from toex_entity.domain import events
from toex_entity.domain.model import LinkMethod, entity_name
from toex_entity.domain.records import Handling, RecordType, SourceRecord

DOMAIN = "entity"
SOURCE = "toex/entity"
STREAM = ENTITY_STREAM
# What the hub addresses to one region (stream HUB): the domain of toex.hub.events.v1.
ADDRESSED_DOMAIN = "hub"

_HANDLING = {Handling.P: security_pb2.HANDLING_CODE_P, Handling.C: security_pb2.HANDLING_CODE_C}
_DECISION = {
    "NEW": pb.MATCH_DECISION_UNSPECIFIED,
    "DETERMINISTIC": pb.MATCH_DECISION_DETERMINISTIC,
    "AUTO_LINK": pb.MATCH_DECISION_AUTO_LINK,
    "REVIEWER_CONFIRMED": pb.MATCH_DECISION_REVIEWER_CONFIRMED,
    "MANUAL": pb.MATCH_DECISION_UNSPECIFIED,
}


def _handling(record: SourceRecord) -> int:
    return _HANDLING[record.grading.handling]


def entity_created(record: SourceRecord, entity_id: str) -> EventEnvelope:
    message = ev.EntityCreated(
        entity=entity_name(entity_id),
        entity_id=entity_id,
        entity_type=record_type_to_proto(record.record_type),  # type: ignore[arg-type]
        record=record.name,
    )
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=record.region,
        handling=_handling(record),
        resource=entity_name(entity_id),
    )


def record_linked(
    record: SourceRecord, entity_id: str, method: str, probability: float, decided_by: str
) -> EventEnvelope:
    message = ev.RecordLinked(
        entity=entity_name(entity_id),
        entity_id=entity_id,
        entity_type=record_type_to_proto(record.record_type),  # type: ignore[arg-type]
        record=record.name,
        source=pb.SourceRecordRef(
            source_system=record.source_system,
            source_record_id=record.source_record_id,
            record_type=record_type_to_proto(record.record_type),  # type: ignore[arg-type]
        ),
        identifiers=identifiers_to_proto(record.identifiers),
        decision=_DECISION.get(method, pb.MATCH_DECISION_UNSPECIFIED),  # type: ignore[arg-type]
        probability=probability,
        decided_by=decided_by,
    )
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=record.region,
        handling=_handling(record),
        resource=record.name,
    )


def _strictest(records: list[SourceRecord]) -> int:
    if not records or any(r.grading.handling is Handling.C for r in records):
        return security_pb2.HANDLING_CODE_C
    return security_pb2.HANDLING_CODE_P


def entities_merged(event: events.EntitiesMerged, region: Region, *, spans_regions: bool) -> EventEnvelope:
    """`region`'s copy of a merge. A merge across regions names to each region only the merged
    entities that held its records (ids it knows from its own records' links, so that what it
    keyed on them can follow the survivor), never the other regions' ids, who decided or why
    (reasons may be another region's)."""
    change = event.change
    mine = [r for r in event.moved.values() if r.region is region]
    message = ev.EntitiesMerged(
        entity=entity_name(change.entity_id),
        merged=[entity_name(e) for e in (event.merged_of(region) if spans_regions else change.others)],
        change_id=change.id,
        undone_change=change.undoes or "",
        decided_by="" if spans_regions else change.decided_by,
        reason="" if spans_regions else change.reason,
    )
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=region,
        handling=_strictest(mine),
        resource=entity_name(change.entity_id),
    )


def entity_split(event: events.EntitySplit, region: Region, *, spans_regions: bool) -> EventEnvelope:
    """`region`'s copy of a split: its own records and where they went; across regions, as
    for a merge, only the entities its records went to, without who or why."""
    change, moved = event.change, event.moved
    mine = event.moves_of(region)
    message = ev.EntitySplit(
        entity=entity_name(change.entity_id),
        split_entities=sorted({entity_name(m.to_entity) for m in mine})
        if spans_regions
        else [entity_name(e) for e in change.others],
        moved_records=[moved[m.record_id].name for m in mine],
        moved_to=[entity_name(m.to_entity) for m in mine],
        change_id=change.id,
        undone_change=change.undoes or "",
        decided_by="" if spans_regions else change.decided_by,
        reason="" if spans_regions else change.reason,
    )
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=region,
        handling=_strictest([moved[m.record_id] for m in mine]),
        resource=entity_name(change.entity_id),
    )


def deconfliction_notice(
    entity_id: str,
    entity_type: RecordType,
    region: Region,
    own_records: list[str],
    other: Region,
    contact_role: str,
    trigger_record: str,
) -> EventEnvelope:
    message = ev.DeconflictionNotice(
        entity=entity_name(entity_id),
        entity_type=record_type_to_proto(entity_type),  # type: ignore[arg-type]
        own_records=own_records,
        other_region=other.to_proto(),  # type: ignore[arg-type]
        contact_role=contact_role,
        trigger_record=trigger_record,
    )
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=region,
        handling=security_pb2.HANDLING_CODE_C,
        resource=entity_name(entity_id),
    )


def _record_linked(event: events.RecordLinked) -> list[EventEnvelope]:
    """A record that started its entity: EntityCreated, then RecordLinked."""
    out = [entity_created(event.record, event.entity_id)] if event.method == LinkMethod.NEW else []
    out.append(
        record_linked(event.record, event.entity_id, event.method, event.probability, event.decided_by)
    )
    return out


def _entities_merged(event: events.EntitiesMerged) -> list[EventEnvelope]:
    """One copy per region holding records on the surviving entity."""
    spans = len(event.regions) > 1
    return [entities_merged(event, region, spans_regions=spans) for region in sorted(event.regions)]


def _entity_split(event: events.EntitySplit) -> list[EventEnvelope]:
    """One copy per region whose records were moved."""
    spans = len(event.regions) > 1
    return [
        entity_split(event, region, spans_regions=spans)
        for region in sorted({r.region for r in event.moved.values()})
    ]


def _deconfliction(event: events.DeconflictionRaised) -> list[EventEnvelope]:
    """A notice to each region: the other region and whom to contact there, its own records;
    only the region that raised it learns what did (its own record or job)."""
    return [
        deconfliction_notice(
            event.entity_id,
            event.entity_type,
            mine,
            list(event.records.get(mine, ())),
            theirs,
            event.contacts[theirs],
            trigger,
        )
        for mine, theirs, trigger in (
            (event.region, event.other, event.trigger),
            (event.other, event.region, ""),
        )
    ]


def identifiers_fingerprinted(event: events.IdentifiersFingerprinted) -> list[EventEnvelope]:
    """The region's fingerprints under one key: digests and its own references, nothing else."""
    message = ev.IdentifiersFingerprinted(
        key_id=event.key_id,
        fingerprints=[ev.IdentifierFingerprint(digest=d, ref=r) for d, r in event.fingerprints],
    )
    return [
        build_event(
            message,
            domain=DOMAIN,
            source=SOURCE,
            region=event.region,
            handling=security_pb2.HANDLING_CODE_C,
        )
    ]


def deconfliction_matched(event: events.DeconflictionMatched) -> list[EventEnvelope]:
    """At the hub: addressed to `event.to` alone (`toex.<region>.hub.DeconflictionMatch`)."""
    message = hub_ev.DeconflictionMatch(
        fingerprint_ref=event.ref,
        other_region=event.other.to_proto(),  # type: ignore[arg-type]
        contact_role=event.contact_role,
    )
    return [
        build_event(
            message,
            domain=ADDRESSED_DOMAIN,
            source=SOURCE,
            region=event.to,
            handling=security_pb2.HANDLING_CODE_C,
        )
    ]


def remote_deconfliction(event: events.RemoteDeconflictionRaised) -> list[EventEnvelope]:
    """The region's own notice (the other region has its own, from its own installation)."""
    return [
        deconfliction_notice(
            event.entity_id,
            event.entity_type,
            event.region,
            list(event.records),
            event.other,
            event.contact_role,
            "",
        )
    ]


def relation_recorded(event: events.RelationRecorded) -> list[EventEnvelope]:
    r = event.relation
    keyed = r.target.startswith(("addr:", "bank:"))
    message = ev.RelationRecorded(
        kind=pb.RelationKind.Value(f"RELATION_KIND_{r.kind.value}"),  # type: ignore[arg-type]
        subject=entity_name(r.subject),
        target=r.target if keyed else entity_name(r.target),
        source=pb.SourceRecordRef(source_system=r.source_system, source_record_id=r.source_record_id),
        grading=grading_to_proto(r.grading),
        valid_from=r.valid_from.isoformat() if r.valid_from else "",
        valid_to=r.valid_to.isoformat() if r.valid_to else "",
    )
    return [
        build_event(
            message,
            domain=DOMAIN,
            source=SOURCE,
            region=Region(r.region),
            handling=_HANDLING[r.grading.handling],
            resource=entity_name(r.subject),
        )
    ]


def mule_cluster_detected(event: events.MuleClusterDetected) -> list[EventEnvelope]:
    """The event's id comes from the cluster's: a second publish of it is deduplicated too."""
    c = event.cluster
    message = ev.MuleClusterDetected(
        event_id=str(uuid.UUID(hex=event.cluster_id)),
        cluster_id=event.cluster_id,
        holders=sorted(entity_name(h) for h in c.holders),
        controller=entity_name(c.controller) if c.controller else "",
        accounts=sorted(c.accounts),
        score=c.score,
    )
    return [
        build_event(
            message,
            domain=DOMAIN,
            source=SOURCE,
            region=event.region,
            handling=security_pb2.HANDLING_CODE_C,
        )
    ]


_MAPPINGS: dict[type, Callable[[Any], list[EventEnvelope]]] = {
    events.RecordLinked: _record_linked,
    events.EntitiesMerged: _entities_merged,
    events.EntitySplit: _entity_split,
    events.DeconflictionRaised: _deconfliction,
    events.IdentifiersFingerprinted: identifiers_fingerprinted,
    events.DeconflictionMatched: deconfliction_matched,
    events.RemoteDeconflictionRaised: remote_deconfliction,
    events.RelationRecorded: relation_recorded,
    events.MuleClusterDetected: mule_cluster_detected,
}


def integration_events(aggregate: object, event: events.DomainEvent) -> list[EventEnvelope]:
    """The entity service's one mapping of a domain event (what the unit of work publishes at
    commit). Entity facts are recorded on the unit of work, so `aggregate` is None."""
    mapping = _MAPPINGS.get(type(event))
    if mapping is None:
        raise TypeError(f"no integration event for {event!r}")
    return mapping(event)
