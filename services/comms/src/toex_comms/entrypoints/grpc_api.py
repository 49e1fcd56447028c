"""gRPC servicer: translate requests to handler calls and answers back to messages."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grpc import aio
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as res
from toex_common import names, pagination
from toex_common.context import current_principal
from toex_common.errors import InvalidArgument
from toex_common.limits import bounded
from toex_common.regions import Region

from toex_comms import analysis
from toex_comms.adapters import exports, ingest
from toex_comms.adapters.integration import (
    HANDLING_TO_PROTO,
    KIND_TO_PROTO,
    WATCHLIST_KIND_TO_PROTO,
    ts,
    watchlist_ref,
)
from toex_comms.domain.commands import ImportFile, Scope
from toex_comms.domain.identifiers import (
    MAX_TARGETS_PER_ANALYSIS,
    BadIdentifier,
    normalise_vrm,
    parse_targets,
)
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    Handling,
    WatchlistContact,
    WatchlistKind,
)
from toex_comms.domain.profiles import MappingProfile
from toex_comms.service_layer import handlers

DATASET = "regions/{region}/datasets/{dataset}"
WATCHLIST = "regions/{region}/watchlists/{watchlist}"
CHUNK = 1024 * 1024
# Bounds checked before an analysis starts (see toex_common.limits).
MAX_EDGES = 50_000
MAX_LIMIT = 10_000
MAX_WINDOW_SECONDS = 86_400
KIND_FROM_PROTO = {v: k for k, v in KIND_TO_PROTO.items()}
WATCHLIST_KIND_FROM_PROTO = {v: k for k, v in WATCHLIST_KIND_TO_PROTO.items()}
HANDLING_FROM_PROTO = {v: k for k, v in HANDLING_TO_PROTO.items()}
FLAG_TO_PROTO = {
    "many_adverts": res.ADVERT_FLAG_REASON_MANY_ADVERTS,
    "many_locations": res.ADVERT_FLAG_REASON_MANY_LOCATIONS,
    "in_phone_index": res.ADVERT_FLAG_REASON_IN_PHONE_INDEX,
    "in_contact_network": res.ADVERT_FLAG_REASON_IN_CONTACT_NETWORK,
}


def _region(parent: str, field: str = "parent", *, allow_all: bool = False) -> Region | None:
    parts = names.parse(parent or ("regions/-" if allow_all else ""), "regions/{region}", field)
    return names.parse_region(parts["region"], field, allow_all=allow_all)


def _own_region(parent: str, field: str = "parent") -> Region:
    region = _region(parent, field)
    assert region is not None
    return region


def _dataset_ref(name: str, field: str) -> tuple[Region, str]:
    parts = names.parse(name, DATASET, field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region, parts["dataset"]


def _when(stamp: Any, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _scope(scope: Any, field: str = "scope") -> Scope:
    region = _own_region(scope.parent, f"{field}.parent")
    ids = []
    for i, name in enumerate(scope.datasets):
        r, dataset_id = _dataset_ref(name, f"{field}.datasets[{i}]")
        if r is not region:
            raise InvalidArgument.field(f"{field}.datasets[{i}]", f"must be a dataset of {region.value}")
        ids.append(dataset_id)
    return Scope(
        current_principal(),
        region,
        tuple(ids),
        scope.job,
        _when(scope.start_time, scope.HasField("start_time")),
        _when(scope.end_time, scope.HasField("end_time")),
    )


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


def _rejections(items: list[tuple[int, str, str]]) -> list[pb.RowRejection]:
    return [pb.RowRejection(line=line, reason=reason, raw=raw) for line, reason, raw in items]


def _attribution(a: Attribution) -> pb.Attribution:
    return pb.Attribution(
        entity_id=a.entity_id,
        label=a.label,
        source=a.source,
        recorded_by=a.recorded_by,
        record_time=ts(a.recorded_at),
    )


def _tie(t: analysis.Tie) -> pb.TargetTie:
    return pb.TargetTie(
        target=f"+{t.other}",
        contact_count=t.contacts,
        call_count=t.calls,
        sms_count=t.sms,
        total_duration_seconds=t.duration,
        first_contact_time=ts(t.first),
        last_contact_time=ts(t.last),
    )


def _contact(c: WatchlistContact) -> pb.WatchlistContact:
    return pb.WatchlistContact(
        name=c.name,
        dataset=f"regions/{c.region.value}/datasets/{c.dataset_id}",
        list_a=watchlist_ref(c.region.value, c.list_a, c.kind_a),
        number_a=f"+{c.number_a}",
        list_b=watchlist_ref(c.region.value, c.list_b, c.kind_b),
        number_b=f"+{c.number_b}",
        first_contact_time=ts(c.first),
        last_contact_time=ts(c.last),
        contact_count=c.contacts,
        total_duration_seconds=c.duration,
        detect_time=ts(c.detected_at),
        call_count=c.calls,
        sms_count=c.sms,
    )


def _flag(f: AdvertFlag) -> pb.AdvertFlag:
    return pb.AdvertFlag(
        number=f"+{f.number}",
        dataset=f"regions/{f.region.value}/datasets/{f.dataset_id}",
        reasons=[FLAG_TO_PROTO[r] for r in f.reasons],  # type: ignore[misc]
        advert_count=f.adverts,
        locations=f.locations,
        sites=f.sites,
        cdr_datasets=f.cdr_datasets,
        first_advert_time=ts(f.first),
        last_advert_time=ts(f.last),
    )


def _convoy(c: analysis.Convoy) -> pb.Convoy:
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


def _profile_to_proto(p: MappingProfile, region: Region) -> pb.MappingProfile:
    name = (
        f"mappingProfiles/{p.profile_id}"
        if p.builtin
        else f"regions/{region.value}/mappingProfiles/{p.profile_id}"
    )
    return pb.MappingProfile(
        name=name,
        columns=p.columns,
        time_format=p.time_format,
        time_zone=p.time_zone,
        event_types=p.event_types,
        separator=p.separator,
        default_country=p.default_country,
    )


class CommsServicer(comms_pb2_grpc.CommsAnalysisServiceServicer):
    def __init__(self, deps: handlers.Deps, max_upload_bytes: int) -> None:
        self.deps = deps
        self.max_upload_bytes = max_upload_bytes

    # ------------------------------------------------------------ imports

    async def _import(self, requests: AsyncIterator[Any], kind: DatasetKind) -> handlers.ImportOutcome:
        header: pb.ImportHeader | None = None
        writer: ingest.UploadWriter | None = None
        path = self.deps.store.upload_path()
        try:
            async for message in requests:
                part = message.WhichOneof("part")
                if header is None:
                    if part != "header":
                        raise InvalidArgument.field("header", "send the header first, then the file's chunks")
                    header = message.header
                    region = _own_region(header.parent, "header.parent")
                    if header.size_bytes > self.max_upload_bytes:
                        raise InvalidArgument.field(
                            "header.size_bytes",
                            f"the file is larger than the limit of {self.max_upload_bytes} bytes",
                        )
                    try:
                        writer = ingest.UploadWriter(path, header.encoding, self.max_upload_bytes)
                    except ingest.FileProblem as exc:
                        raise InvalidArgument.field("header.encoding", str(exc)) from None
                    continue
                if part != "chunk":
                    raise InvalidArgument.field("header", "only one header per upload")
                assert writer is not None
                try:
                    writer.write(message.chunk)
                except ingest.FileProblem as exc:
                    raise InvalidArgument.field("chunk", str(exc)) from None
            if header is None or writer is None:
                raise InvalidArgument.field("header", "the upload was empty")
            sha = writer.close()
            writer = None
            handling = HANDLING_FROM_PROTO.get(header.handling)  # type: ignore[call-overload]
            return await handlers.import_file(
                ImportFile(
                    actor=current_principal(),
                    kind=kind,
                    region=region,
                    job=header.job.strip(),
                    display_name=header.display_name.strip(),
                    filename=Path(header.filename).name,
                    profile=header.profile.strip(),
                    handling=handling,
                    upload=path,
                    content_sha256=sha,
                    size_bytes=path.stat().st_size,
                ),
                self.deps,
            )
        finally:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            path.unlink(missing_ok=True)

    async def ImportCdr(self, request_iterator: Any, context: aio.ServicerContext) -> pb.ImportCdrResponse:
        out = await self._import(request_iterator, DatasetKind.CDR)
        return pb.ImportCdrResponse(
            dataset=dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=_rejections(out.rejections),
        )

    async def ImportAnpr(self, request_iterator: Any, context: aio.ServicerContext) -> pb.ImportAnprResponse:
        out = await self._import(request_iterator, DatasetKind.ANPR)
        return pb.ImportAnprResponse(
            dataset=dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=_rejections(out.rejections),
            convoys=[_convoy(c) for c in out.convoys],
        )

    async def ImportAdverts(
        self, request_iterator: Any, context: aio.ServicerContext
    ) -> pb.ImportAdvertsResponse:
        out = await self._import(request_iterator, DatasetKind.ADVERTS)
        return pb.ImportAdvertsResponse(
            dataset=dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=_rejections(out.rejections),
            flags=[_flag(f) for f in out.flags],
        )

    # ------------------------------------------------------------ datasets

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        region, dataset_id = _dataset_ref(request.name, "name")
        d = await handlers.get_dataset(current_principal(), region, dataset_id, self.deps)
        return pb.GetDatasetResponse(dataset=dataset_to_proto(d))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        region = _region(request.parent, allow_all=True)
        kind = KIND_FROM_PROTO.get(request.kind)  # type: ignore[call-overload]
        size = pagination.page_size(request.page_size)
        principal = current_principal()
        key = pagination.fingerprint(principal.subject, request.parent, request.job, request.kind, size)
        after = pagination.decode_after(request.page_token, key)
        found = await handlers.list_datasets(principal, region, request.job, kind, size + 1, after, self.deps)
        page = found[:size]
        response = pb.ListDatasetsResponse(datasets=[dataset_to_proto(d) for d in page])
        if len(found) > size:
            response.next_page_token = pagination.encode(page[-1].created_at.isoformat(), page[-1].id, key)
        return response

    async def ListRejections(
        self, request: pb.ListRejectionsRequest, context: aio.ServicerContext
    ) -> pb.ListRejectionsResponse:
        region, dataset_id = _dataset_ref(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        key = pagination.fingerprint(request.parent, size)
        offset = pagination.decode_offset(request.page_token, key)
        dataset, items = await handlers.list_rejections(
            current_principal(), region, dataset_id, offset, size, self.deps
        )
        response = pb.ListRejectionsResponse(rejections=_rejections(items), total_size=dataset.rows_rejected)
        if offset + len(items) < dataset.rows_rejected and items:
            response.next_page_token = pagination.encode(str(offset + len(items)), "", key)
        return response

    async def CreateMappingProfile(
        self, request: pb.CreateMappingProfileRequest, context: aio.ServicerContext
    ) -> pb.CreateMappingProfileResponse:
        region = _own_region(request.parent)
        p = request.profile
        profile = MappingProfile(
            profile_id=request.profile_id,
            columns=dict(p.columns),
            time_format=p.time_format,
            time_zone=p.time_zone or "Europe/London",
            event_types={k.lower(): v.lower() for k, v in p.event_types.items()},
            separator=p.separator or ",",
            default_country=(p.default_country or "GB").upper(),
        )
        stored = await handlers.create_profile(current_principal(), region, profile, self.deps)
        return pb.CreateMappingProfileResponse(profile=_profile_to_proto(stored, region))

    async def ListMappingProfiles(
        self, request: pb.ListMappingProfilesRequest, context: aio.ServicerContext
    ) -> pb.ListMappingProfilesResponse:
        region = _own_region(request.parent)
        found = await handlers.list_profiles(current_principal(), region, self.deps)
        return pb.ListMappingProfilesResponse(profiles=[_profile_to_proto(p, region) for p in found])

    # ------------------------------------------------------------ phone index

    async def SearchPhoneIndex(
        self, request: pb.SearchPhoneIndexRequest, context: aio.ServicerContext
    ) -> pb.SearchPhoneIndexResponse:
        region = _region(request.parent, allow_all=True)
        hit, _ = await handlers.search_index(current_principal(), region, request.number, self.deps)
        own = region or current_principal().region
        return pb.SearchPhoneIndexResponse(
            number=hit.number,
            entries=[
                pb.PhoneIndexEntry(
                    number=hit.number,
                    dataset=e["dataset"],
                    first_seen_time=ts(e["first"]),
                    last_seen_time=ts(e["last"]),
                    event_count=e["events"],
                    call_count=e["calls"],
                    sms_count=e["sms"],
                    total_duration_seconds=e["duration"],
                )
                for e in hit.entries
            ],
            attributions=[_attribution(a) for a in hit.attributions],
            watchlists=[watchlist_ref(own.value, w, k) for w, k in hit.watchlists],
            advert_datasets=hit.advert_datasets,
        )

    async def ListPhoneIndex(
        self, request: pb.ListPhoneIndexRequest, context: aio.ServicerContext
    ) -> pb.ListPhoneIndexResponse:
        region = _own_region(request.parent)
        scope = _scope(pb.AnalysisScope(parent=request.parent, datasets=request.datasets), "request")
        size = pagination.page_size(request.page_size)
        key = pagination.fingerprint(request.parent, sorted(request.datasets), size)
        after = pagination.decode_offset(request.page_token, key)
        rows = await handlers.list_index(
            current_principal(), region, scope.dataset_ids, after, size + 1, self.deps
        )
        page = rows[:size]
        response = pb.ListPhoneIndexResponse(
            entries=[
                pb.PhoneIndexEntry(
                    number=f"+{r['number']}",
                    first_seen_time=ts(r["first"]),
                    last_seen_time=ts(r["last"]),
                    event_count=r["events"],
                    call_count=r["calls"],
                    sms_count=r["sms"],
                    total_duration_seconds=r["duration"],
                )
                for r in page
            ]
        )
        if len(rows) > size:
            response.next_page_token = pagination.encode(str(page[-1]["number"]), "", key)
        return response

    async def AttributeIdentifier(
        self, request: pb.AttributeIdentifierRequest, context: aio.ServicerContext
    ) -> pb.AttributeIdentifierResponse:
        region = _own_region(request.parent)
        a = await handlers.attribute(
            current_principal(),
            region,
            request.identifier,
            request.vehicle,
            request.entity_id,
            request.label,
            self.deps,
        )
        return pb.AttributeIdentifierResponse(identifier=a.identifier, attribution=_attribution(a))

    # ------------------------------------------------------------ analyses

    async def _cdr(self, scope_msg: Any) -> tuple[Scope, Any]:
        scope, rows, _ = await self._cdr_pairs(scope_msg)
        return scope, rows

    async def _cdr_pairs(self, scope_msg: Any) -> tuple[Scope, Any, Any]:
        """Rows in the window, and the datasets' pair totals when the window holds all of them."""
        scope = _scope(scope_msg)
        chosen, rows = await handlers.resolve_scope(scope, DatasetKind.CDR, self.deps)
        return scope, rows, handlers.whole_dataset_pairs(scope, chosen, self.deps)

    async def _labels(
        self, region: Region, numbers: list[int]
    ) -> tuple[dict[str, list[Attribution]], dict[int, list[tuple[str, WatchlistKind]]]]:
        found = await handlers.attributions_for(region, [f"+{n}" for n in numbers], self.deps)
        members = await handlers.watchlists_for(region, self.deps)
        return found, members

    async def GetContactNetwork(
        self, request: pb.GetContactNetworkRequest, context: aio.ServicerContext
    ) -> pb.GetContactNetworkResponse:
        max_edges = bounded(request.max_edges, "max_edges", default=2000, maximum=MAX_EDGES)
        targets = parse_targets(request.targets, "targets")
        handlers.ensure_targets(targets)
        scope, rows, pairs = await self._cdr_pairs(request.scope)
        net = await asyncio.to_thread(
            analysis.contact_network,
            rows,
            targets,
            min_contacts=request.min_contacts or 1,
            max_edges=max_edges,
            pairs=pairs,
        )
        found, members = await self._labels(scope.region, list(net.nodes))
        return pb.GetContactNetworkResponse(
            nodes=[
                pb.ContactNode(
                    number=f"+{n}",
                    target=n in targets,
                    event_count=events,
                    attributions=[_attribution(a) for a in found.get(f"+{n}", [])],
                    watchlists=[watchlist_ref(scope.region.value, w, k) for w, k in members.get(n, [])],
                )
                for n, events in net.nodes.items()
            ],
            edges=[
                pb.ContactEdge(
                    number_a=f"+{e.a}",
                    number_b=f"+{e.b}",
                    call_count=e.calls,
                    sms_count=e.sms,
                    total_duration_seconds=e.duration,
                    contact_count=e.contacts,
                    first_contact_time=ts(e.first),
                    last_contact_time=ts(e.last),
                )
                for e in net.edges
            ],
            targets=[f"+{t}" for t in targets],
        )

    async def FindCommonContacts(
        self, request: pb.FindCommonContactsRequest, context: aio.ServicerContext
    ) -> pb.FindCommonContactsResponse:
        min_targets = bounded(request.min_targets, "min_targets", default=2, maximum=MAX_TARGETS_PER_ANALYSIS)
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        targets = parse_targets(request.targets, "targets")
        handlers.ensure_targets(targets)
        scope, rows, pairs = await self._cdr_pairs(request.scope)
        found = await asyncio.to_thread(
            analysis.common_contacts,
            rows,
            targets,
            min_targets=min_targets,
            include_targets=request.include_targets,
            limit=limit,
            pairs=pairs,
        )
        attributed, _ = await self._labels(scope.region, [c.number for c in found])
        return pb.FindCommonContactsResponse(
            contacts=[
                pb.CommonContact(
                    number=f"+{c.number}",
                    target=c.target,
                    target_count=c.target_count,
                    contact_count=c.contacts,
                    ties=[_tie(t) for t in c.ties],
                    attributions=[_attribution(a) for a in attributed.get(f"+{c.number}", [])],
                )
                for c in found
            ],
            targets=[f"+{t}" for t in targets],
        )

    async def RankSuspects(
        self, request: pb.RankSuspectsRequest, context: aio.ServicerContext
    ) -> pb.RankSuspectsResponse:
        limit = bounded(request.limit, "limit", default=25, maximum=MAX_LIMIT)
        targets = parse_targets(request.targets, "targets")
        handlers.ensure_targets(targets)
        scope, rows, pairs = await self._cdr_pairs(request.scope)
        found = await asyncio.to_thread(
            analysis.rank_suspects,
            rows,
            targets,
            limit=limit,
            max_degree=request.max_degree,
            pairs=pairs,
        )
        attributed, members = await self._labels(scope.region, [s.number for s in found])
        return pb.RankSuspectsResponse(
            suspects=[
                pb.Suspect(
                    number=f"+{s.number}",
                    score=s.score,
                    target_count=s.target_count,
                    contact_count=s.contacts,
                    total_duration_seconds=s.duration,
                    ties=[_tie(t) for t in s.ties],
                    reason=s.reason,
                    attributions=[_attribution(a) for a in attributed.get(f"+{s.number}", [])],
                    watchlists=[
                        watchlist_ref(scope.region.value, w, k) for w, k in members.get(s.number, [])
                    ],
                )
                for s in found
            ],
            targets=[f"+{t}" for t in targets],
        )

    async def GetTargetProfile(
        self, request: pb.GetTargetProfileRequest, context: aio.ServicerContext
    ) -> pb.GetTargetProfileResponse:
        top = bounded(request.top, "top", default=20, maximum=MAX_LIMIT)
        (target,) = parse_targets([request.target], "target")
        scope, rows = await self._cdr(request.scope)
        p = await asyncio.to_thread(analysis.target_profile, rows, target, top=top)
        attributed, _ = await self._labels(scope.region, [target])
        return pb.GetTargetProfileResponse(
            target=f"+{target}",
            event_count=p.events,
            first_contact_time=ts(p.first),
            last_contact_time=ts(p.last),
            top_contacts=[_tie(t) for t in p.top],
            by_hour=p.by_hour,
            by_weekday=p.by_weekday,
            imeis=p.imeis,
            imsis=p.imsis,
            attributions=[_attribution(a) for a in attributed.get(f"+{target}", [])],
        )

    async def FindColocations(
        self, request: pb.FindColocationsRequest, context: aio.ServicerContext
    ) -> pb.FindColocationsResponse:
        window_seconds = bounded(
            request.window_seconds, "window_seconds", default=900, maximum=MAX_WINDOW_SECONDS
        )
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        targets = parse_targets(request.targets, "targets")
        handlers.ensure_targets(targets)
        _, rows = await self._cdr(request.scope)
        found = await asyncio.to_thread(
            analysis.colocations,
            rows,
            targets,
            window_seconds=window_seconds,
            limit=limit,
        )
        return pb.FindColocationsResponse(
            colocations=[
                pb.Colocation(
                    number_a=f"+{c.a}",
                    number_b=f"+{c.b}",
                    occasion_count=c.occasions,
                    cells=c.cells,
                    first_time=ts(c.first),
                    last_time=ts(c.last),
                    in_contact=c.in_contact,
                )
                for c in found
            ]
        )

    # ------------------------------------------------------------ watchlists and adverts

    def _watchlist(self, w: Any) -> pb.Watchlist:
        return pb.Watchlist(
            name=w.name,
            display_name=w.display_name,
            kind=WATCHLIST_KIND_TO_PROTO[w.kind],
            numbers=[f"+{n}" for n in w.numbers],
            created_by=w.created_by,
            create_time=ts(w.created_at),
        )

    async def CreateWatchlist(
        self, request: pb.CreateWatchlistRequest, context: aio.ServicerContext
    ) -> pb.CreateWatchlistResponse:
        region = _own_region(request.parent)
        kind = WATCHLIST_KIND_FROM_PROTO.get(request.watchlist.kind)
        if kind is None:
            raise InvalidArgument.field("watchlist.kind", "say what the list holds")
        w = await handlers.create_watchlist(
            current_principal(), region, request.watchlist_id, request.watchlist.display_name, kind, self.deps
        )
        return pb.CreateWatchlistResponse(watchlist=self._watchlist(w))

    async def AddWatchlistNumbers(
        self, request: pb.AddWatchlistNumbersRequest, context: aio.ServicerContext
    ) -> pb.AddWatchlistNumbersResponse:
        parts = names.parse(request.name, WATCHLIST, "name")
        region = names.parse_region(parts["region"], "name")
        assert region is not None
        w, contacts = await handlers.add_watchlist_numbers(
            current_principal(), region, parts["watchlist"], list(request.numbers), self.deps
        )
        return pb.AddWatchlistNumbersResponse(
            watchlist=self._watchlist(w), contacts=[_contact(c) for c in contacts]
        )

    async def ListWatchlists(
        self, request: pb.ListWatchlistsRequest, context: aio.ServicerContext
    ) -> pb.ListWatchlistsResponse:
        region = _own_region(request.parent)
        found = await handlers.list_watchlists(current_principal(), region, self.deps)
        return pb.ListWatchlistsResponse(watchlists=[self._watchlist(w) for w in found])

    async def ListWatchlistContacts(
        self, request: pb.ListWatchlistContactsRequest, context: aio.ServicerContext
    ) -> pb.ListWatchlistContactsResponse:
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        region = _own_region(request.parent)
        found = await handlers.list_watchlist_contacts(current_principal(), region, limit, self.deps)
        return pb.ListWatchlistContactsResponse(contacts=[_contact(c) for c in found])

    async def ListAdvertFlags(
        self, request: pb.ListAdvertFlagsRequest, context: aio.ServicerContext
    ) -> pb.ListAdvertFlagsResponse:
        region = _own_region(request.parent)
        dataset_id = ""
        if request.dataset:
            r, dataset_id = _dataset_ref(request.dataset, "dataset")
            if r is not region:
                raise InvalidArgument.field("dataset", f"must be a dataset of {region.value}")
        found = await handlers.list_flags(current_principal(), region, dataset_id, self.deps)
        return pb.ListAdvertFlagsResponse(flags=[_flag(f) for f in found])

    # ------------------------------------------------------------ ANPR

    async def _anpr(self, scope_msg: Any) -> tuple[Scope, Any]:
        scope = _scope(scope_msg)
        _, rows = await handlers.resolve_scope(scope, DatasetKind.ANPR, self.deps)
        return scope, rows

    async def FindConvoys(
        self, request: pb.FindConvoysRequest, context: aio.ServicerContext
    ) -> pb.FindConvoysResponse:
        window_seconds = bounded(
            request.window_seconds, "window_seconds", default=180, maximum=MAX_WINDOW_SECONDS
        )
        min_occasions = bounded(request.min_occasions, "min_occasions", default=3, maximum=MAX_LIMIT)
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        vrms = []
        for i, raw in enumerate(request.vrms):
            try:
                vrms.append(normalise_vrm(raw))
            except BadIdentifier as exc:
                raise InvalidArgument.field(f"vrms[{i}]", str(exc)) from None
        _, rows = await self._anpr(request.scope)
        found = await asyncio.to_thread(
            analysis.convoys,
            rows,
            window_seconds=window_seconds,
            min_occasions=min_occasions,
            vrms=vrms or None,
            limit=limit,
        )
        return pb.FindConvoysResponse(convoys=[_convoy(c) for c in found])

    async def GetTravelPattern(
        self, request: pb.GetTravelPatternRequest, context: aio.ServicerContext
    ) -> pb.GetTravelPatternResponse:
        max_hop_seconds = bounded(
            request.max_hop_seconds, "max_hop_seconds", default=7200, maximum=MAX_WINDOW_SECONDS
        )
        try:
            vrm = normalise_vrm(request.vrm)
        except BadIdentifier as exc:
            raise InvalidArgument.field("vrm", str(exc)) from None
        scope, rows = await self._anpr(request.scope)
        p = await asyncio.to_thread(analysis.travel_pattern, rows, vrm, max_hop_seconds=max_hop_seconds)
        found = await handlers.attributions_for(scope.region, [vrm], self.deps)
        return pb.GetTravelPatternResponse(
            vrm=vrm,
            read_count=p.reads,
            locations=[
                pb.CameraVisit(
                    camera=c, location=loc, read_count=n, usual_hour=h, first_time=ts(f), last_time=ts(la)
                )
                for c, loc, n, h, f, la in p.locations
            ],
            by_hour=p.by_hour,
            by_weekday=p.by_weekday,
            routes=[
                pb.Route(from_camera=a, to_camera=b, count=n, median_seconds=m) for a, b, n, m in p.routes
            ],
            attributions=[_attribution(a) for a in found.get(vrm, [])],
        )

    # ------------------------------------------------------------ exports

    async def Export(
        self, request: pb.ExportRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.ExportResponse]:
        fmt = request.format
        if fmt in (pb.EXPORT_FORMAT_INDEX_CSV, pb.EXPORT_FORMAT_INDEX_XLSX):
            payload, filename, content_type = await self._export_index(request)
        elif fmt in (
            pb.EXPORT_FORMAT_GRAPHML,
            pb.EXPORT_FORMAT_I2_LINK_CSV,
            pb.EXPORT_FORMAT_SVG,
            pb.EXPORT_FORMAT_PNG,
        ):
            payload, filename, content_type = await self._export_network(request)
        else:
            raise InvalidArgument.field("format", "choose an export format")
        try:
            first = True
            with payload.open("rb") as handle:
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk and not first:
                        break
                    yield pb.ExportResponse(
                        filename=filename if first else "",
                        content_type=content_type if first else "",
                        chunk=chunk,
                    )
                    first = False
                    if not chunk:
                        break
        finally:
            payload.unlink(missing_ok=True)

    async def _export_network(self, request: pb.ExportRequest) -> tuple[Path, str, str]:
        targets = parse_targets(request.targets, "targets")
        handlers.ensure_targets(targets)
        scope, rows, pairs = await self._cdr_pairs(request.scope)
        net = await asyncio.to_thread(
            analysis.contact_network, rows, targets, min_contacts=request.min_contacts or 1, pairs=pairs
        )
        found, _ = await self._labels(scope.region, list(net.nodes))
        labels = {int(k[1:]): v[0].label or v[0].entity_id for k, v in found.items() if v}
        fmt = request.format
        if fmt == pb.EXPORT_FORMAT_GRAPHML:
            data, name, media = (
                await asyncio.to_thread(exports.graphml, net, labels),
                "network.graphml",
                "application/graphml+xml",
            )
        elif fmt == pb.EXPORT_FORMAT_I2_LINK_CSV:
            data, name, media = (
                await asyncio.to_thread(exports.i2_link_table, net, labels),
                "network-i2-links.csv",
                "text/csv",
            )
        elif fmt == pb.EXPORT_FORMAT_SVG:
            data, name, media = (
                await asyncio.to_thread(exports.picture, net, "svg", labels),
                "network.svg",
                "image/svg+xml",
            )
        else:
            data, name, media = (
                await asyncio.to_thread(exports.picture, net, "png", labels),
                "network.png",
                "image/png",
            )
        path = self._temp_file()
        path.write_bytes(data)
        return path, name, media

    async def _export_index(self, request: pb.ExportRequest) -> tuple[Path, str, str]:
        scope = _scope(request.scope)
        chosen, _ = await handlers.resolve_scope(scope, DatasetKind.CDR, self.deps)
        rows = await handlers.list_index(
            scope.actor, scope.region, tuple(d.id for d in chosen), 0, 10_000_000, self.deps
        )
        found = await handlers.attributions_for(scope.region, [f"+{r['number']}" for r in rows], self.deps)
        table = [
            (
                f"+{r['number']}",
                "; ".join(a.label or a.entity_id for a in found.get(f"+{r['number']}", [])),
                r["events"],
                r["calls"],
                r["sms"],
                r["duration"],
                r["first"].isoformat() if r["first"] else "",
                r["last"].isoformat() if r["last"] else "",
            )
            for r in rows
        ]
        path = self._temp_file()
        if request.format == pb.EXPORT_FORMAT_INDEX_CSV:
            await asyncio.to_thread(exports.index_csv, table, path)
            return path, "phone-index.csv", "text/csv"
        await asyncio.to_thread(exports.index_xlsx, table, path)
        return path, "phone-index.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    def _temp_file(self) -> Path:
        handle = tempfile.NamedTemporaryFile(
            dir=self.deps.store.root / "uploads", delete=False, suffix=".export"
        )
        handle.close()
        return Path(handle.name)


__all__ = ["CommsServicer", "Handling", "dataset_to_proto"]
