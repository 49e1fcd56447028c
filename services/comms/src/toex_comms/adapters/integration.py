"""Integration events (toex.comms.events.v1) in their envelopes, and the stream they go to."""

from __future__ import annotations

from datetime import datetime

from toex.comms.events.v1 import events_pb2 as ev
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import COMMS_STREAM
from toex_kernel.timestamps import optional_timestamp as ts

from toex_comms.adapters.mapping import (
    FLAG_REASONS,
    HANDLING_TO_PROTO,
    KIND_TO_PROTO,
    watchlist_contact_fields,
)
from toex_comms.domain.model import AdvertFlag, Dataset, WatchlistContact

DOMAIN = "comms"
SOURCE = "toex/comms"
STREAM = COMMS_STREAM


def _envelope(message: object, dataset: Dataset, resource: str) -> EventEnvelope:
    return build_event(
        message,  # type: ignore[arg-type]
        domain=DOMAIN,
        source=SOURCE,
        region=dataset.region,
        handling=HANDLING_TO_PROTO[dataset.handling],
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
    return _envelope(message, d, d.name)


def watchlist_contact_detected(
    c: WatchlistContact, d: Dataset, entity_a: str = "", entity_b: str = ""
) -> EventEnvelope:
    message = ev.WatchlistContactDetected(
        **watchlist_contact_fields(c), job=d.job, entity_id_a=entity_a, entity_id_b=entity_b
    )
    return _envelope(message, d, c.name)


def advert_number_flagged(f: AdvertFlag, d: Dataset, entity_id: str = "") -> EventEnvelope:
    message = ev.AdvertNumberFlagged(
        dataset=d.name,
        job=d.job,
        number=f"+{f.number}",
        reasons=[FLAG_REASONS[r] for r in f.reasons],  # type: ignore[misc]
        advert_count=f.adverts,
        locations=f.locations,
        sites=f.sites,
        first_advert_time=ts(f.first),
        last_advert_time=ts(f.last),
        cdr_datasets=f.cdr_datasets,
        entity_id=entity_id,
    )
    return _envelope(message, d, d.name)


def convoy_detected(
    d: Dataset,
    vrm_a: str,
    vrm_b: str,
    occasions: int,
    cameras: list[str],
    first: datetime,
    last: datetime,
    median_gap: int,
    window_seconds: int,
    entity_a: str = "",
    entity_b: str = "",
) -> EventEnvelope:
    message = ev.ConvoyDetected(
        dataset=d.name,
        job=d.job,
        vrm_a=vrm_a,
        vrm_b=vrm_b,
        occasion_count=occasions,
        cameras=cameras,
        first_seen_time=ts(first),
        last_seen_time=ts(last),
        median_gap_seconds=median_gap,
        window_seconds=window_seconds,
        entity_id_a=entity_a,
        entity_id_b=entity_b,
    )
    return _envelope(message, d, d.name)
