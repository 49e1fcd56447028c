"""gRPC servicer: translate requests to commands, call the handler, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grpc import aio
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex_common import pagination
from toex_common.context import current_principal, current_purpose
from toex_kernel import names
from toex_kernel.errors import InvalidArgument
from toex_kernel.limits import bounded
from toex_kernel.regions import Region

from toex_comms.adapters import mapping
from toex_comms.domain import commands
from toex_comms.domain.commands import Scope
from toex_comms.domain.identifiers import (
    MAX_TARGETS_PER_ANALYSIS,
    BadIdentifier,
    normalise_vrm,
    parse_analysis_targets,
    parse_targets,
)
from toex_comms.domain.model import DatasetKind
from toex_comms.service_layer import handlers

DATASET = "regions/{region}/datasets/{dataset}"
WATCHLIST = "regions/{region}/watchlists/{watchlist}"
CHUNK = 1024 * 1024
# Bounds checked before an analysis starts (see toex_kernel.limits).
MAX_EDGES = 50_000
MAX_LIMIT = 10_000
MAX_WINDOW_SECONDS = 86_400


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


def _dataset_of(region: Region, name: str, field: str) -> str:
    """The id of a dataset of `region` named in field `field`."""
    r, dataset_id = _dataset_ref(name, field)
    if r is not region:
        raise InvalidArgument.field(field, f"must be a dataset of {region.value}")
    return dataset_id


def _when(stamp: Any, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _scope(scope: Any, field: str = "scope") -> Scope:
    region = _own_region(scope.parent, f"{field}.parent")
    return Scope(
        current_principal(),
        region,
        tuple(_dataset_of(region, name, f"{field}.datasets[{i}]") for i, name in enumerate(scope.datasets)),
        scope.job,
        _when(scope.start_time, scope.HasField("start_time")),
        _when(scope.end_time, scope.HasField("end_time")),
        current_purpose(),
    )


def _advert_networks_query(
    request: pb.FindAdvertNetworksRequest, prefix: str = ""
) -> commands.FindAdvertNetworks:
    """The query a FindAdvertNetworksRequest asks (also inside an export; `prefix` names the
    field it sits in, for the errors)."""
    scope = _scope(request.scope, f"{prefix}scope")
    calls = tuple(
        _dataset_of(scope.region, name, f"{prefix}call_datasets[{i}]")
        for i, name in enumerate(request.call_datasets)
    )
    return commands.FindAdvertNetworks(
        scope,
        calls,
        bounded(request.min_adverts, f"{prefix}min_adverts", default=2, maximum=MAX_LIMIT),
        bounded(request.min_numbers, f"{prefix}min_numbers", default=2, maximum=MAX_LIMIT),
        bounded(request.limit, f"{prefix}limit", default=100, maximum=MAX_LIMIT),
    )


def _vrm(raw: str, field: str) -> str:
    try:
        return normalise_vrm(raw)
    except BadIdentifier as exc:
        raise InvalidArgument.field(field, str(exc)) from None


async def _chunks(messages: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The file's bytes: every message after the header."""
    async for message in messages:
        if message.WhichOneof("part") != "chunk":
            raise InvalidArgument.field("header", "only one header per upload")
        yield message.chunk


class CommsServicer(comms_pb2_grpc.CommsAnalysisServiceServicer):
    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    # ------------------------------------------------------------ imports

    async def _import(self, requests: Any, kind: DatasetKind) -> handlers.ImportOutcome:
        messages = aiter(requests)
        first = await anext(messages, None)
        if first is None:
            raise InvalidArgument.field("header", "the upload was empty")
        if first.WhichOneof("part") != "header":
            raise InvalidArgument.field("header", "send the header first, then the file's chunks")
        header = first.header
        return await handlers.import_file(
            commands.ImportFile(
                actor=current_principal(),
                kind=kind,
                region=_own_region(header.parent, "header.parent"),
                job=header.job.strip(),
                display_name=header.display_name.strip(),
                filename=Path(header.filename).name,
                profile=header.profile.strip(),
                handling=mapping.HANDLING_FROM_PROTO.get(header.handling),  # type: ignore[call-overload]
                encoding=header.encoding,
                declared_size=header.size_bytes,
                chunks=_chunks(messages),
                purpose=current_purpose(),
            ),
            self.deps,
        )

    async def ImportCdr(self, request_iterator: Any, context: aio.ServicerContext) -> pb.ImportCdrResponse:
        out = await self._import(request_iterator, DatasetKind.CDR)
        return pb.ImportCdrResponse(
            dataset=mapping.dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=mapping.rejections_to_proto(out.rejections),
        )

    async def ImportAnpr(self, request_iterator: Any, context: aio.ServicerContext) -> pb.ImportAnprResponse:
        out = await self._import(request_iterator, DatasetKind.ANPR)
        return pb.ImportAnprResponse(
            dataset=mapping.dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=mapping.rejections_to_proto(out.rejections),
            convoys=[mapping.convoy_to_proto(c) for c in out.convoys],
        )

    async def ImportAdverts(
        self, request_iterator: Any, context: aio.ServicerContext
    ) -> pb.ImportAdvertsResponse:
        out = await self._import(request_iterator, DatasetKind.ADVERTS)
        return pb.ImportAdvertsResponse(
            dataset=mapping.dataset_to_proto(out.dataset),
            already_imported=out.already_imported,
            rejections=mapping.rejections_to_proto(out.rejections),
            flags=[mapping.flag_to_proto(f) for f in out.flags],
        )

    # ------------------------------------------------------------ datasets and profiles

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        region, dataset_id = _dataset_ref(request.name, "name")
        d = await handlers.get_dataset(
            commands.GetDataset(current_principal(), region, dataset_id, current_purpose()), self.deps
        )
        return pb.GetDatasetResponse(dataset=mapping.dataset_to_proto(d))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        region = _region(request.parent, allow_all=True)
        kind = mapping.KIND_FROM_PROTO.get(request.kind)  # type: ignore[call-overload]
        size = pagination.page_size(request.page_size)
        principal = current_principal()
        key = pagination.fingerprint(principal.subject, request.parent, request.job, request.kind, size)
        after = pagination.decode_after(request.page_token, key)
        page, more = await handlers.list_datasets(
            commands.ListDatasets(principal, region, request.job, kind, size, after, current_purpose()),
            self.deps,
        )
        response = pb.ListDatasetsResponse(datasets=[mapping.dataset_to_proto(d) for d in page])
        if more:
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
            commands.ListRejections(current_principal(), region, dataset_id, offset, size, current_purpose()),
            self.deps,
        )
        response = pb.ListRejectionsResponse(
            rejections=mapping.rejections_to_proto(items), total_size=dataset.rows_rejected
        )
        if offset + len(items) < dataset.rows_rejected and items:
            response.next_page_token = pagination.encode(str(offset + len(items)), "", key)
        return response

    async def CreateMappingProfile(
        self, request: pb.CreateMappingProfileRequest, context: aio.ServicerContext
    ) -> pb.CreateMappingProfileResponse:
        region = _own_region(request.parent)
        profile = mapping.profile_from_proto(request.profile_id, request.profile)
        stored = await handlers.create_profile(
            commands.CreateMappingProfile(current_principal(), region, profile), self.deps
        )
        return pb.CreateMappingProfileResponse(profile=mapping.profile_to_proto(stored, region.value))

    async def ListMappingProfiles(
        self, request: pb.ListMappingProfilesRequest, context: aio.ServicerContext
    ) -> pb.ListMappingProfilesResponse:
        region = _own_region(request.parent)
        kind = mapping.KIND_FROM_PROTO.get(request.kind)  # type: ignore[call-overload]
        found = await handlers.list_profiles(
            commands.ListMappingProfiles(current_principal(), region, current_purpose(), kind), self.deps
        )
        return pb.ListMappingProfilesResponse(
            profiles=[mapping.profile_to_proto(p, region.value) for p in found]
        )

    # ------------------------------------------------------------ phone index and attribution

    async def SearchPhoneIndex(
        self, request: pb.SearchPhoneIndexRequest, context: aio.ServicerContext
    ) -> pb.SearchPhoneIndexResponse:
        region = _region(request.parent, allow_all=True)
        hit = await handlers.search_index(
            commands.SearchPhoneIndex(current_principal(), region, request.number, current_purpose()),
            self.deps,
        )
        return pb.SearchPhoneIndexResponse(
            number=hit.number,
            entries=[mapping.index_entry_to_proto(hit.number, e, e["dataset"]) for e in hit.entries],
            attributions=[mapping.attribution_to_proto(a) for a in hit.attributions],
            watchlists=[mapping.watchlist_ref(hit.region.value, w, k) for w, k in hit.watchlists],
            advert_datasets=hit.advert_datasets,
        )

    async def ListPhoneIndex(
        self, request: pb.ListPhoneIndexRequest, context: aio.ServicerContext
    ) -> pb.ListPhoneIndexResponse:
        _own_region(request.parent)  # a bad parent is named as "parent", before the scope's checks
        scope = _scope(pb.AnalysisScope(parent=request.parent, datasets=request.datasets), "request")
        size = pagination.page_size(request.page_size)
        key = pagination.fingerprint(request.parent, sorted(request.datasets), size)
        after = pagination.decode_offset(request.page_token, key)
        page, more = await handlers.list_phone_index(commands.ListPhoneIndex(scope, after, size), self.deps)
        response = pb.ListPhoneIndexResponse(
            entries=[mapping.index_entry_to_proto(f"+{r['number']}", r) for r in page]
        )
        if more:
            response.next_page_token = pagination.encode(str(page[-1]["number"]), "", key)
        return response

    async def AttributeIdentifier(
        self, request: pb.AttributeIdentifierRequest, context: aio.ServicerContext
    ) -> pb.AttributeIdentifierResponse:
        a = await handlers.attribute(
            commands.AttributeIdentifier(
                current_principal(),
                _own_region(request.parent),
                request.identifier,
                request.vehicle,
                request.entity_id,
                request.label,
            ),
            self.deps,
        )
        return pb.AttributeIdentifierResponse(
            identifier=a.identifier, attribution=mapping.attribution_to_proto(a)
        )

    # ------------------------------------------------------------ analyses of call data

    async def GetContactNetwork(
        self, request: pb.GetContactNetworkRequest, context: aio.ServicerContext
    ) -> pb.GetContactNetworkResponse:
        max_edges = bounded(request.max_edges, "max_edges", default=2000, maximum=MAX_EDGES)
        targets = parse_analysis_targets(request.targets)
        out = await handlers.get_contact_network(
            commands.GetContactNetwork(_scope(request.scope), targets, request.min_contacts or 1, max_edges),
            self.deps,
        )
        return mapping.contact_network_to_proto(out.found, out.labels)

    async def FindCommonContacts(
        self, request: pb.FindCommonContactsRequest, context: aio.ServicerContext
    ) -> pb.FindCommonContactsResponse:
        min_targets = bounded(request.min_targets, "min_targets", default=2, maximum=MAX_TARGETS_PER_ANALYSIS)
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        targets = parse_analysis_targets(request.targets)
        out = await handlers.find_common_contacts(
            commands.FindCommonContacts(
                _scope(request.scope), targets, min_targets, request.include_targets, limit
            ),
            self.deps,
        )
        return pb.FindCommonContactsResponse(
            contacts=[mapping.common_contact_to_proto(c, out.labels) for c in out.found],
            targets=[f"+{t}" for t in targets],
        )

    async def RankSuspects(
        self, request: pb.RankSuspectsRequest, context: aio.ServicerContext
    ) -> pb.RankSuspectsResponse:
        limit = bounded(request.limit, "limit", default=25, maximum=MAX_LIMIT)
        targets = parse_analysis_targets(request.targets)
        out = await handlers.rank_suspects(
            commands.RankSuspects(_scope(request.scope), targets, limit, request.max_degree), self.deps
        )
        return pb.RankSuspectsResponse(
            suspects=[mapping.suspect_to_proto(s, out.labels) for s in out.found],
            targets=[f"+{t}" for t in targets],
        )

    async def GetTargetProfile(
        self, request: pb.GetTargetProfileRequest, context: aio.ServicerContext
    ) -> pb.GetTargetProfileResponse:
        top = bounded(request.top, "top", default=20, maximum=MAX_LIMIT)
        (target,) = parse_targets([request.target], "target")
        out = await handlers.get_target_profile(
            commands.GetTargetProfile(_scope(request.scope), target, top), self.deps
        )
        return mapping.target_profile_to_proto(out.found, out.labels)

    async def FindColocations(
        self, request: pb.FindColocationsRequest, context: aio.ServicerContext
    ) -> pb.FindColocationsResponse:
        window_seconds = bounded(
            request.window_seconds, "window_seconds", default=900, maximum=MAX_WINDOW_SECONDS
        )
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        targets = parse_analysis_targets(request.targets)
        found = await handlers.find_colocations(
            commands.FindColocations(_scope(request.scope), targets, window_seconds, limit), self.deps
        )
        return pb.FindColocationsResponse(colocations=[mapping.colocation_to_proto(c) for c in found])

    # ------------------------------------------------------------ watchlists and adverts

    async def CreateWatchlist(
        self, request: pb.CreateWatchlistRequest, context: aio.ServicerContext
    ) -> pb.CreateWatchlistResponse:
        region = _own_region(request.parent)
        kind = mapping.WATCHLIST_KIND_FROM_PROTO.get(request.watchlist.kind)
        if kind is None:
            raise InvalidArgument.field("watchlist.kind", "say what the list holds")
        w = await handlers.create_watchlist(
            commands.CreateWatchlist(
                current_principal(), region, request.watchlist_id, request.watchlist.display_name, kind
            ),
            self.deps,
        )
        return pb.CreateWatchlistResponse(watchlist=mapping.watchlist_to_proto(w))

    async def AddWatchlistNumbers(
        self, request: pb.AddWatchlistNumbersRequest, context: aio.ServicerContext
    ) -> pb.AddWatchlistNumbersResponse:
        parts = names.parse(request.name, WATCHLIST, "name")
        region = names.parse_region(parts["region"], "name")
        assert region is not None
        w, contacts = await handlers.add_watchlist_numbers(
            commands.AddWatchlistNumbers(
                current_principal(), region, parts["watchlist"], list(request.numbers), list(request.accounts)
            ),
            self.deps,
        )
        return pb.AddWatchlistNumbersResponse(
            watchlist=mapping.watchlist_to_proto(w),
            contacts=[mapping.watchlist_contact_to_proto(c) for c in contacts],
        )

    async def ListWatchlists(
        self, request: pb.ListWatchlistsRequest, context: aio.ServicerContext
    ) -> pb.ListWatchlistsResponse:
        region = _own_region(request.parent)
        found = await handlers.list_watchlists(
            commands.ListWatchlists(current_principal(), region), self.deps
        )
        return pb.ListWatchlistsResponse(watchlists=[mapping.watchlist_to_proto(w) for w in found])

    async def ListWatchlistContacts(
        self, request: pb.ListWatchlistContactsRequest, context: aio.ServicerContext
    ) -> pb.ListWatchlistContactsResponse:
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        region = _own_region(request.parent)
        found = await handlers.list_watchlist_contacts(
            commands.ListWatchlistContacts(current_principal(), region, limit, current_purpose()), self.deps
        )
        return pb.ListWatchlistContactsResponse(
            contacts=[mapping.watchlist_contact_to_proto(c) for c in found]
        )

    async def FindAdvertNetworks(
        self, request: pb.FindAdvertNetworksRequest, context: aio.ServicerContext
    ) -> pb.FindAdvertNetworksResponse:
        found = await handlers.find_advert_networks(_advert_networks_query(request), self.deps)
        return pb.FindAdvertNetworksResponse(networks=[mapping.advert_network_to_proto(n) for n in found])

    async def ListAdvertFlags(
        self, request: pb.ListAdvertFlagsRequest, context: aio.ServicerContext
    ) -> pb.ListAdvertFlagsResponse:
        region = _own_region(request.parent)
        dataset_id = _dataset_of(region, request.dataset, "dataset") if request.dataset else ""
        found = await handlers.list_flags(
            commands.ListAdvertFlags(current_principal(), region, dataset_id, current_purpose()), self.deps
        )
        return pb.ListAdvertFlagsResponse(flags=[mapping.flag_to_proto(f) for f in found])

    # ------------------------------------------------------------ ANPR

    async def FindConvoys(
        self, request: pb.FindConvoysRequest, context: aio.ServicerContext
    ) -> pb.FindConvoysResponse:
        window_seconds = bounded(
            request.window_seconds, "window_seconds", default=180, maximum=MAX_WINDOW_SECONDS
        )
        min_occasions = bounded(request.min_occasions, "min_occasions", default=3, maximum=MAX_LIMIT)
        limit = bounded(request.limit, "limit", default=100, maximum=MAX_LIMIT)
        vrms = [_vrm(raw, f"vrms[{i}]") for i, raw in enumerate(request.vrms)]
        found = await handlers.find_convoys(
            commands.FindConvoys(_scope(request.scope), window_seconds, min_occasions, vrms, limit), self.deps
        )
        return pb.FindConvoysResponse(convoys=[mapping.convoy_to_proto(c) for c in found])

    async def GetTravelPattern(
        self, request: pb.GetTravelPatternRequest, context: aio.ServicerContext
    ) -> pb.GetTravelPatternResponse:
        max_hop_seconds = bounded(
            request.max_hop_seconds, "max_hop_seconds", default=7200, maximum=MAX_WINDOW_SECONDS
        )
        vrm = _vrm(request.vrm, "vrm")
        out = await handlers.get_travel_pattern(
            commands.GetTravelPattern(_scope(request.scope), vrm, max_hop_seconds), self.deps
        )
        return mapping.travel_pattern_to_proto(out.found, out.labels)

    # ------------------------------------------------------------ exports

    async def Export(
        self, request: pb.ExportRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.ExportResponse]:
        fmt = mapping.EXPORT_FORMAT_FROM_PROTO.get(request.format)  # type: ignore[call-overload]
        if fmt is None:
            raise InvalidArgument.field("format", "choose an export format")
        targets = parse_analysis_targets(request.targets) if fmt.is_network else []
        if fmt.is_advert_networks:
            query = _advert_networks_query(request.advert_networks, "advert_networks.")
            command = commands.Export(query.scope, fmt, [], 1, query)
        else:
            command = commands.Export(_scope(request.scope), fmt, targets, request.min_contacts or 1)
        out = await handlers.export(command, self.deps)
        try:
            first = True
            with out.path.open("rb") as handle:
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk and not first:
                        break
                    yield pb.ExportResponse(
                        filename=out.filename if first else "",
                        content_type=out.content_type if first else "",
                        chunk=chunk,
                    )
                    first = False
                    if not chunk:
                        break
        finally:
            out.path.unlink(missing_ok=True)
