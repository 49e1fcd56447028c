"""Domain objects <-> protobuf messages of toex.comms.v1 (and the values the events share)."""

from __future__ import annotations

from typing import Any

from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res
from toex.type.v1 import security_pb2
from toex_kernel.timestamps import optional_timestamp as ts

from toex_comms.domain.advert_networks import AdvertNetwork
from toex_comms.domain.analysis import (
    Colocation,
    CommonContact,
    Convoy,
    Edge,
    Network,
    Profile,
    Suspect,
    Tie,
    TravelPattern,
)
from toex_comms.domain.commands import ExportFormat
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    Handling,
    Labels,
    Watchlist,
    WatchlistContact,
    WatchlistKind,
)
from toex_comms.domain.profiles import MappingProfile

KIND_TO_PROTO = {
    DatasetKind.CDR: res.DATASET_KIND_CDR,
    DatasetKind.ANPR: res.DATASET_KIND_ANPR,
    DatasetKind.ADVERTS: res.DATASET_KIND_ADVERTS,
}
KIND_FROM_PROTO = {v: k for k, v in KIND_TO_PROTO.items()}
WATCHLIST_KIND_TO_PROTO = {k: res.WatchlistKind.Value(f"WATCHLIST_KIND_{k.name}") for k in WatchlistKind}
WATCHLIST_KIND_FROM_PROTO = {v: k for k, v in WATCHLIST_KIND_TO_PROTO.items()}
HANDLING_TO_PROTO = {Handling.P: security_pb2.HANDLING_CODE_P, Handling.C: security_pb2.HANDLING_CODE_C}
HANDLING_FROM_PROTO = {v: k for k, v in HANDLING_TO_PROTO.items()}
FLAG_REASONS = {
    "many_adverts": res.ADVERT_FLAG_REASON_MANY_ADVERTS,
    "many_locations": res.ADVERT_FLAG_REASON_MANY_LOCATIONS,
    "in_phone_index": res.ADVERT_FLAG_REASON_IN_PHONE_INDEX,
    "in_contact_network": res.ADVERT_FLAG_REASON_IN_CONTACT_NETWORK,
}
EXPORT_FORMAT_FROM_PROTO = {
    pb.EXPORT_FORMAT_GRAPHML: ExportFormat.GRAPHML,
    pb.EXPORT_FORMAT_I2_LINK_CSV: ExportFormat.I2_LINK_CSV,
    pb.EXPORT_FORMAT_SVG: ExportFormat.SVG,
    pb.EXPORT_FORMAT_PNG: ExportFormat.PNG,
    pb.EXPORT_FORMAT_INDEX_CSV: ExportFormat.INDEX_CSV,
    pb.EXPORT_FORMAT_INDEX_XLSX: ExportFormat.INDEX_XLSX,
    pb.EXPORT_FORMAT_ADVERT_NETWORKS_GRAPHML: ExportFormat.ADVERT_NETWORKS_GRAPHML,
    pb.EXPORT_FORMAT_ADVERT_NETWORKS_I2_LINK_CSV: ExportFormat.ADVERT_NETWORKS_I2_LINK_CSV,
    pb.EXPORT_FORMAT_ADVERT_NETWORKS_CSV: ExportFormat.ADVERT_NETWORKS_CSV,
}


def dataset_name(region_value: str, dataset_id: str) -> str:
    return f"regions/{region_value}/datasets/{dataset_id}"


def watchlist_ref(region_value: str, watchlist_id: str, kind: WatchlistKind) -> res.WatchlistRef:
    return res.WatchlistRef(
        name=f"regions/{region_value}/watchlists/{watchlist_id}",
        kind=WATCHLIST_KIND_TO_PROTO[kind],  # type: ignore[arg-type]
    )


def watchlist_contact_fields(c: WatchlistContact) -> dict[str, Any]:
    """The fields a watchlist contact has both as an API resource (WatchlistContact) and as an
    event (WatchlistContactDetected): one mapping for both."""
    return {
        "dataset": dataset_name(c.region.value, c.dataset_id),
        "list_a": watchlist_ref(c.region.value, c.list_a, c.kind_a),
        "number_a": f"+{c.number_a}",
        "list_b": watchlist_ref(c.region.value, c.list_b, c.kind_b),
        "number_b": f"+{c.number_b}",
        "first_contact_time": ts(c.first),
        "last_contact_time": ts(c.last),
        "contact_count": c.contacts,
        "total_duration_seconds": c.duration,
        "call_count": c.calls,
        "sms_count": c.sms,
    }


# ---------------------------------------------------------------- datasets and profiles


def dataset_to_proto(d: Dataset) -> pb.Dataset:
    return pb.Dataset(
        name=d.name,
        kind=KIND_TO_PROTO[d.kind],  # type: ignore[arg-type]
        job=d.job,
        display_name=d.display_name,
        source_filename=d.source_filename,
        content_sha256=d.content_sha256,
        profile=d.profile,
        region=d.region.to_proto(),  # type: ignore[arg-type]
        handling=HANDLING_TO_PROTO[d.handling],  # type: ignore[arg-type]
        rows_read=d.rows_read,
        rows_accepted=d.rows_accepted,
        rows_rejected=d.rows_rejected,
        distinct_identifiers=d.distinct_identifiers,
        first_record_time=ts(d.first_time),
        last_record_time=ts(d.last_time),
        created_by=d.created_by,
        create_time=ts(d.created_at),
        size_bytes=d.size_bytes,
    )


def rejections_to_proto(items: list[tuple[int, str, str]]) -> list[pb.RowRejection]:
    return [pb.RowRejection(line=line, reason=reason, raw=raw) for line, reason, raw in items]


def profile_from_proto(profile_id: str, p: pb.MappingProfile) -> MappingProfile:
    # Unspecified is call data, as every profile was before adverts had any.
    kind = KIND_FROM_PROTO.get(p.kind, DatasetKind.CDR)  # type: ignore[call-overload]
    return MappingProfile(
        profile_id=profile_id,
        columns=dict(p.columns),
        time_format=p.time_format,
        time_zone=p.time_zone or "Europe/London",
        event_types={k.lower(): v.lower() for k, v in p.event_types.items()},
        separator=p.separator or ",",
        default_country=(p.default_country or "GB").upper(),
        kind=kind,
    )


def profile_to_proto(p: MappingProfile, region_value: str) -> pb.MappingProfile:
    name = (
        f"mappingProfiles/{p.profile_id}"
        if p.builtin
        else f"regions/{region_value}/mappingProfiles/{p.profile_id}"
    )
    return pb.MappingProfile(
        name=name,
        columns=p.columns,
        time_format=p.time_format,
        time_zone=p.time_zone,
        event_types=p.event_types,
        separator=p.separator,
        default_country=p.default_country,
        kind=KIND_TO_PROTO[p.kind],  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- identifiers


def attribution_to_proto(a: Attribution) -> pb.Attribution:
    return pb.Attribution(
        entity_id=a.entity_id,
        label=a.label,
        source=a.source,
        recorded_by=a.recorded_by,
        record_time=ts(a.recorded_at),
    )


def attributions_of(labels: Labels, identifier: str) -> list[pb.Attribution]:
    return [attribution_to_proto(a) for a in labels.of(identifier)]


def watchlists_of(labels: Labels, number: int) -> list[res.WatchlistRef]:
    return [watchlist_ref(labels.region.value, w, k) for w, k in labels.lists(number)]


def index_entry_to_proto(number: str, row: dict[str, Any], dataset: str = "") -> pb.PhoneIndexEntry:
    """A phone index row (events, calls, sms, duration, first, last)."""
    return pb.PhoneIndexEntry(
        number=number,
        dataset=dataset,
        first_seen_time=ts(row["first"]),
        last_seen_time=ts(row["last"]),
        event_count=row["events"],
        call_count=row["calls"],
        sms_count=row["sms"],
        total_duration_seconds=row["duration"],
    )


# ---------------------------------------------------------------- analyses


def tie_to_proto(t: Tie) -> pb.TargetTie:
    return pb.TargetTie(
        target=f"+{t.other}",
        contact_count=t.contacts,
        call_count=t.calls,
        sms_count=t.sms,
        total_duration_seconds=t.duration,
        first_contact_time=ts(t.first),
        last_contact_time=ts(t.last),
    )


def edge_to_proto(e: Edge) -> pb.ContactEdge:
    return pb.ContactEdge(
        number_a=f"+{e.a}",
        number_b=f"+{e.b}",
        call_count=e.calls,
        sms_count=e.sms,
        total_duration_seconds=e.duration,
        contact_count=e.contacts,
        first_contact_time=ts(e.first),
        last_contact_time=ts(e.last),
    )


def contact_network_to_proto(net: Network, labels: Labels) -> pb.GetContactNetworkResponse:
    return pb.GetContactNetworkResponse(
        nodes=[
            pb.ContactNode(
                number=f"+{n}",
                target=n in net.targets,
                event_count=events,
                attributions=attributions_of(labels, f"+{n}"),
                watchlists=watchlists_of(labels, n),
            )
            for n, events in net.nodes.items()
        ],
        edges=[edge_to_proto(e) for e in net.edges],
        targets=[f"+{t}" for t in net.targets],
    )


def common_contact_to_proto(c: CommonContact, labels: Labels) -> pb.CommonContact:
    return pb.CommonContact(
        number=f"+{c.number}",
        target=c.target,
        target_count=c.target_count,
        contact_count=c.contacts,
        ties=[tie_to_proto(t) for t in c.ties],
        attributions=attributions_of(labels, f"+{c.number}"),
    )


def suspect_to_proto(s: Suspect, labels: Labels) -> pb.Suspect:
    return pb.Suspect(
        number=f"+{s.number}",
        score=s.score,
        target_count=s.target_count,
        contact_count=s.contacts,
        total_duration_seconds=s.duration,
        ties=[tie_to_proto(t) for t in s.ties],
        reason=s.reason,
        attributions=attributions_of(labels, f"+{s.number}"),
        watchlists=watchlists_of(labels, s.number),
    )


def target_profile_to_proto(p: Profile, labels: Labels) -> pb.GetTargetProfileResponse:
    return pb.GetTargetProfileResponse(
        target=f"+{p.target}",
        event_count=p.events,
        first_contact_time=ts(p.first),
        last_contact_time=ts(p.last),
        top_contacts=[tie_to_proto(t) for t in p.top],
        by_hour=p.by_hour,
        by_weekday=p.by_weekday,
        imeis=p.imeis,
        imsis=p.imsis,
        attributions=attributions_of(labels, f"+{p.target}"),
    )


def colocation_to_proto(c: Colocation) -> pb.Colocation:
    return pb.Colocation(
        number_a=f"+{c.a}",
        number_b=f"+{c.b}",
        occasion_count=c.occasions,
        cells=c.cells,
        first_time=ts(c.first),
        last_time=ts(c.last),
        in_contact=c.in_contact,
    )


def convoy_to_proto(c: Convoy) -> pb.Convoy:
    return pb.Convoy(
        vrm_a=c.vrm_a,
        vrm_b=c.vrm_b,
        occasion_count=c.occasions,
        cameras=c.cameras,
        day_count=c.days,
        first_seen_time=ts(c.first),
        last_seen_time=ts(c.last),
        median_gap_seconds=c.median_gap,
    )


def travel_pattern_to_proto(p: TravelPattern, labels: Labels) -> pb.GetTravelPatternResponse:
    return pb.GetTravelPatternResponse(
        vrm=p.vrm,
        read_count=p.reads,
        locations=[
            pb.CameraVisit(
                camera=c, location=loc, read_count=n, usual_hour=h, first_time=ts(f), last_time=ts(la)
            )
            for c, loc, n, h, f, la in p.locations
        ],
        by_hour=p.by_hour,
        by_weekday=p.by_weekday,
        routes=[pb.Route(from_camera=a, to_camera=b, count=n, median_seconds=m) for a, b, n, m in p.routes],
        attributions=attributions_of(labels, p.vrm),
    )


# ---------------------------------------------------------------- watchlists and adverts


def watchlist_to_proto(w: Watchlist) -> pb.Watchlist:
    return pb.Watchlist(
        name=w.name,
        display_name=w.display_name,
        kind=WATCHLIST_KIND_TO_PROTO[w.kind],  # type: ignore[arg-type]
        numbers=[f"+{n}" for n in w.numbers],
        accounts=w.accounts,
        created_by=w.created_by,
        create_time=ts(w.created_at),
    )


def watchlist_contact_to_proto(c: WatchlistContact) -> pb.WatchlistContact:
    return pb.WatchlistContact(name=c.name, detect_time=ts(c.detected_at), **watchlist_contact_fields(c))


def flag_to_proto(f: AdvertFlag) -> pb.AdvertFlag:
    return pb.AdvertFlag(
        number=f"+{f.number}",
        dataset=dataset_name(f.region.value, f.dataset_id),
        reasons=[FLAG_REASONS[r] for r in f.reasons],  # type: ignore[misc]
        advert_count=f.adverts,
        locations=f.locations,
        sites=f.sites,
        cdr_datasets=f.cdr_datasets,
        first_advert_time=ts(f.first),
        last_advert_time=ts(f.last),
    )


def advert_network_to_proto(n: AdvertNetwork) -> pb.AdvertNetwork:
    return pb.AdvertNetwork(
        network_id=n.network_id,
        advert_count=n.size,
        numbers=[f"+{x}" for x in n.numbers],
        sites=n.sites,
        movements=[pb.AdvertNetworkStop(first_seen=ts(when), location=town) for when, town in n.movements],
        names=n.names,
        ages=n.ages,
        minor=n.minor,
        minor_reasons=n.minor_reasons,
        indicators=[
            pb.AdvertNetworkIndicator(code=i.code, points=i.points, text=i.text) for i in n.indicators
        ],
        score=n.score,
        adverts=[pb.AdvertMembership(advert_id=a, reasons=n.reasons.get(a, [])) for a in n.adverts],
        accounts=n.accounts,
    )
