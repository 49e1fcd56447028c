"""Domain events -> integration events (toex.comms.events.v1) in their envelopes, and the stream
they go to. The only module that knows the event messages."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from toex.comms.events.v1 import events_pb2 as ev
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import COMMS_STREAM
from toex_kernel.regions import Region
from toex_kernel.timestamps import optional_timestamp as ts

from toex_comms.adapters.mapping import (
    FLAG_REASONS,
    HANDLING_TO_PROTO,
    KIND_TO_PROTO,
    watchlist_contact_fields,
)
from toex_comms.domain import events
from toex_comms.domain.model import Dataset, Handling

DOMAIN = "comms"
SOURCE = "toex/comms"
STREAM = COMMS_STREAM
# Identifiers per DatasetIdentifiersObserved message: at most about 40 kB (an E.164 number is
# 16 bytes with its framing), far below the 1 MB NATS limit, and a batch entity resolution
# takes in one transaction.
IDENTIFIERS_PER_EVENT = 2_000


def _envelope(message: Message, region: Region, handling: Handling, resource: str) -> EventEnvelope:
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=region,
        handling=HANDLING_TO_PROTO[handling],
        resource=resource,
    )


def dataset_imported(d: Dataset) -> EventEnvelope:
    message = ev.DatasetImported(
        dataset=d.name,
        job=d.job,
        kind=KIND_TO_PROTO[d.kind],  # type: ignore[arg-type]
        source_filename=d.source_filename,
        content_sha256=d.content_sha256,
        rows_accepted=d.rows_accepted,
        rows_rejected=d.rows_rejected,
        first_record_time=ts(d.first_time),
        last_record_time=ts(d.last_time),
        distinct_identifiers=d.distinct_identifiers,
        imported_by=d.created_by,
    )
    return _envelope(message, d.region, d.handling, d.name)


def convoy_detected(d: Dataset, e: events.ConvoyDetected) -> EventEnvelope:
    c = e.convoy
    message = ev.ConvoyDetected(
        dataset=d.name,
        job=d.job,
        vrm_a=c.vrm_a,
        vrm_b=c.vrm_b,
        occasion_count=c.occasions,
        cameras=c.cameras,
        first_seen_time=ts(c.first),
        last_seen_time=ts(c.last),
        median_gap_seconds=c.median_gap,
        window_seconds=e.window_seconds,
    )
    return _envelope(message, d.region, d.handling, d.name)


def _parts(lists: Sequence[Sequence[str]], size: int) -> list[list[Sequence[str]]]:
    """`lists` read as one sequence, cut into parts of `size` values: each part as the slice
    of every list it holds (empty slices for the lists it does not reach)."""
    total = sum(len(values) for values in lists)
    out = []
    for start in range(0, total, size):
        part: list[Sequence[str]] = []
        offset = 0
        for values in lists:
            part.append(values[max(0, start - offset) : max(0, start + size - offset)])
            offset += len(values)
        out.append(part)
    return out


def dataset_identifiers_observed(
    d: Dataset, e: events.DatasetIdentifiersObserved, size: int = IDENTIFIERS_PER_EVENT
) -> list[EventEnvelope]:
    """One message per part of at most `size` identifiers, each with the dataset's label."""
    found = e.identifiers
    parts = _parts([found.numbers, found.vrms, found.imeis], size)
    return [
        _envelope(
            ev.DatasetIdentifiersObserved(
                dataset=d.name,
                job=d.job,
                e164_numbers=numbers,
                vrms=vrms,
                imeis=imeis,
                part=index,
                parts=len(parts),
            ),
            d.region,
            d.handling,
            d.name,
        )
        for index, (numbers, vrms, imeis) in enumerate(parts, start=1)
    ]


def watchlist_contact_detected(e: events.WatchlistContactDetected) -> EventEnvelope:
    c = e.contact
    message = ev.WatchlistContactDetected(
        **watchlist_contact_fields(c), job=e.job, entity_id_a=e.entity_a, entity_id_b=e.entity_b
    )
    return _envelope(message, c.region, e.handling, c.name)


def advert_number_flagged(e: events.AdvertNumberFlagged) -> EventEnvelope:
    f = e.flag
    message = ev.AdvertNumberFlagged(
        dataset=e.dataset,
        job=e.job,
        number=f"+{f.number}",
        reasons=[FLAG_REASONS[r] for r in f.reasons],  # type: ignore[misc]
        advert_count=f.adverts,
        locations=f.locations,
        sites=f.sites,
        first_advert_time=ts(f.first),
        last_advert_time=ts(f.last),
        cdr_datasets=f.cdr_datasets,
        entity_id=e.entity_id,
    )
    return _envelope(message, f.region, e.handling, e.dataset)


def advert_network_detected(e: events.AdvertNetworkDetected) -> EventEnvelope:
    n = e.network
    message = ev.AdvertNetworkDetected(
        dataset=e.dataset,
        job=e.job,
        network_id=n.network_id,
        numbers=[f"+{x}" for x in n.numbers],
        advert_count=n.size,
        towns=[t for _, t in n.movements],
        minor=n.minor,
        minor_reasons=n.minor_reasons[:20],
        indicators=[i.text for i in n.indicators][:20],
        score=n.score,
    )
    return _envelope(message, e.region, e.handling, e.dataset)


def integration_events(dataset: Dataset | None, event: events.DomainEvent) -> list[EventEnvelope]:
    """The comms service's one mapping of a domain event (what the unit of work publishes at
    commit). A dataset's own events come with the dataset; findings recorded on the unit of
    work come with None and carry their dataset's labels themselves."""
    if isinstance(event, events.WatchlistContactDetected):
        return [watchlist_contact_detected(event)]
    if isinstance(event, events.AdvertNumberFlagged):
        return [advert_number_flagged(event)]
    if isinstance(event, events.AdvertNetworkDetected):
        return [advert_network_detected(event)]
    if dataset is None:
        raise TypeError(f"{type(event).__name__} is an event of a dataset: track the dataset")
    if isinstance(event, events.DatasetImported):
        return [dataset_imported(dataset)]
    if isinstance(event, events.ConvoyDetected):
        return [convoy_detected(dataset, event)]
    if isinstance(event, events.DatasetIdentifiersObserved):
        return dataset_identifiers_observed(dataset, event)
    raise TypeError(f"no integration event for {event!r}")
