"""gRPC servicer: translate requests to commands, call the handler, translate back."""

from __future__ import annotations

from google.protobuf import json_format
from grpc import aio
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc, sync_pb2
from toex_common import pagination
from toex_common.context import current_principal, current_purpose
from toex_common.uow import idempotency_of
from toex_kernel import names
from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

from toex_pnd.adapters import mapping
from toex_pnd.domain import commands, policy
from toex_pnd.domain.model import RegionFigures, Report, SyncState
from toex_pnd.service_layer import handlers

RECORD = "regions/{region}/intelligence/{record}"
UPDATABLE = ("entity", "grading", "links")


def _record_ref(name: str, field: str = "name") -> tuple[Region, str]:
    parts = names.parse(name, RECORD, field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region, parts["record"]


def _parent_region(parent: str, field: str = "parent", *, allow_all: bool = False) -> Region | None:
    parts = names.parse(parent, "regions/{region}", field)
    return names.parse_region(parts["region"], field, allow_all=allow_all)


def _report_id(name: str, field: str) -> str | None:
    parts = names.parse(name, "reconciliations/{reconciliation}", field)
    return None if parts["reconciliation"] == "latest" else parts["reconciliation"]


class PndSyncServicer(pnd_pb2_grpc.PndSyncServiceServicer):
    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def SubmitIntelligence(
        self, request: pb.SubmitIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.SubmitIntelligenceResponse:
        region = _parent_region(request.parent)
        assert region is not None
        record = request.record
        created = await handlers.submit_intelligence(
            commands.SubmitIntelligence(
                actor=current_principal(),
                region=region,
                entity=mapping.entity_from_proto(record.entity),
                grading=mapping.grading_from_proto(record.grading),
                links=mapping.links_from_proto(record.links),
                idempotency=idempotency_of(request),
                purpose=current_purpose(),
            ),
            self.deps,
        )
        return pb.SubmitIntelligenceResponse(record=mapping.record_to_proto(created))

    async def UpdateIntelligence(
        self, request: pb.UpdateIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.UpdateIntelligenceResponse:
        region, record_id = _record_ref(request.record.name, "record.name")
        paths = set(request.update_mask.paths) or set(UPDATABLE)
        unknown = paths - set(UPDATABLE)
        if unknown:
            raise InvalidArgument.field(
                "update_mask", f"only {', '.join(UPDATABLE)} can change, not {sorted(unknown)}"
            )
        record = request.record
        updated = await handlers.update_intelligence(
            commands.UpdateIntelligence(
                actor=current_principal(),
                region=region,
                record_id=record_id,
                entity=mapping.entity_from_proto(record.entity) if "entity" in paths else None,
                grading=(mapping.grading_from_proto(record.grading) or {}) if "grading" in paths else None,
                links=mapping.links_from_proto(record.links) if "links" in paths else None,
                expected_version=record.version,
                idempotency=idempotency_of(request),
                purpose=current_purpose(),
            ),
            self.deps,
        )
        return pb.UpdateIntelligenceResponse(record=mapping.record_to_proto(updated))

    async def DeleteIntelligence(
        self, request: pb.DeleteIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.DeleteIntelligenceResponse:
        region, record_id = _record_ref(request.name)
        deleted = await handlers.delete_intelligence(
            commands.DeleteIntelligence(
                current_principal(), region, record_id, request.version, idempotency_of(request)
            ),
            self.deps,
        )
        return pb.DeleteIntelligenceResponse(record=mapping.record_to_proto(deleted))

    async def GetIntelligence(
        self, request: pb.GetIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.GetIntelligenceResponse:
        region, record_id = _record_ref(request.name)
        record = await handlers.get_intelligence(
            commands.GetIntelligence(current_principal(), region, record_id, current_purpose()), self.deps
        )
        return pb.GetIntelligenceResponse(record=mapping.record_to_proto(record))

    async def ListIntelligence(
        self, request: pb.ListIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.ListIntelligenceResponse:
        region = _parent_region(request.parent or "regions/-", allow_all=True)
        states = frozenset(
            s for s in (mapping.sync_state_from_proto(v) for v in request.sync_states) if s is not None
        )
        kind = mapping.kind_from_proto(request.kind) if request.kind else None
        size = pagination.page_size(request.page_size)
        job = request.job.strip()
        if job:
            names.parse(job, "regions/{region}/jobs/{job}", "job")
        principal = current_principal()
        key = pagination.fingerprint(
            principal.subject, request.parent, sorted(states), kind, request.show_deleted, size, job
        )
        records, more = await handlers.list_intelligence(
            commands.ListIntelligence(
                principal,
                region,
                states,
                kind,
                request.show_deleted,
                size,
                pagination.decode_after(request.page_token, key),
                current_purpose(),
                job,
            ),
            self.deps,
        )
        response = pb.ListIntelligenceResponse(records=[mapping.record_to_proto(r) for r in records])
        if more and records:
            response.next_page_token = pagination.encode(
                records[-1].updated_at.isoformat(), records[-1].id, key
            )
        return response

    async def ReleaseIntelligence(
        self, request: pb.ReleaseIntelligenceRequest, context: aio.ServicerContext
    ) -> pb.ReleaseIntelligenceResponse:
        region, record_id = _record_ref(request.name)
        record = await handlers.release_intelligence(
            commands.ReleaseIntelligence(
                current_principal(), region, record_id, request.reason, idempotency_of(request)
            ),
            self.deps,
        )
        return pb.ReleaseIntelligenceResponse(record=mapping.record_to_proto(record))

    async def ListSubmissions(
        self, request: pb.ListSubmissionsRequest, context: aio.ServicerContext
    ) -> pb.ListSubmissionsResponse:
        region, record_id = _record_ref(request.parent, "parent")
        found = await handlers.list_submissions(
            commands.GetIntelligence(current_principal(), region, record_id, current_purpose()), self.deps
        )
        return pb.ListSubmissionsResponse(submissions=[mapping.submission_to_proto(s) for s in found])

    async def GetSyncStatus(
        self, request: pb.GetSyncStatusRequest, context: aio.ServicerContext
    ) -> pb.GetSyncStatusResponse:
        parts = names.parse(request.name or "regions/-/syncStatus", "regions/{region}/syncStatus", "name")
        region = names.parse_region(parts["region"], "name", allow_all=True)
        status, counts = await handlers.sync_status(current_principal(), region, self.deps)
        now = self.deps.clock()
        response = pb.GetSyncStatusResponse(
            queued=status.queued,
            held=status.held,
            retrying=status.retrying,
            last_error=status.last_error,
            records=[
                pb.StateCount(state=mapping.sync_state_to_proto(s), count=counts.get(s, 0))  # type: ignore[arg-type]
                for s in SyncState
            ],
        )
        if status.oldest_queued_at is not None:
            response.oldest_queued_age.CopyFrom(
                mapping.duration((now - status.oldest_queued_at).total_seconds())
            )
        return response

    async def SearchPnd(
        self, request: pb.SearchPndRequest, context: aio.ServicerContext
    ) -> pb.SearchPndResponse:
        region = _parent_region(request.parent)
        assert region is not None
        search = request.search
        kind = sync_pb2.PndSearchKind.Name(search.kind).removeprefix("PND_SEARCH_KIND_")
        if kind == "PERSON":
            criteria = json_format.MessageToDict(search.person, preserving_proto_field_name=True)
        elif kind == "PHONE":
            criteria = {"phone_e164": search.phone_e164}
        elif kind == "ONLINE_ACCOUNT":
            criteria = {"online_account": search.online_account}
        else:
            criteria = {"vrm": search.vrm}
        if request.max_results < 0:
            raise InvalidArgument.field("max_results", "must not be negative")
        row, answer = await handlers.search_pnd(
            commands.SearchPnd(
                current_principal(), region, kind, criteria, current_purpose(), request.max_results
            ),
            self.deps,
        )
        return pb.SearchPndResponse(
            search=mapping.search_to_proto(row),
            results=[mapping.source_record_to_proto(r) for r in answer.results],
            truncated=answer.truncated,
        )

    async def RunReconciliation(
        self, request: pb.RunReconciliationRequest, context: aio.ServicerContext
    ) -> pb.RunReconciliationResponse:
        principal = current_principal()
        report, _ = await handlers.run_reconciliation(
            commands.RunReconciliation(requested_by=principal.username, scheduled=False), self.deps
        )
        figures = handlers.visible_figures(principal, report)
        return pb.RunReconciliationResponse(reconciliation=_report(report, figures))

    async def GetReconciliation(
        self, request: pb.GetReconciliationRequest, context: aio.ServicerContext
    ) -> pb.GetReconciliationResponse:
        report, figures = await handlers.get_reconciliation(
            current_principal(), _report_id(request.name, "name"), self.deps
        )
        return pb.GetReconciliationResponse(reconciliation=_report(report, figures))

    async def ListReconciliationItems(
        self, request: pb.ListReconciliationItemsRequest, context: aio.ServicerContext
    ) -> pb.ListReconciliationItemsResponse:
        report_id = _report_id(request.parent, "parent")
        region = names.parse_region(request.region, "region") if request.region else None
        category = mapping.category_from_proto(request.category) if request.category else None
        size = pagination.page_size(request.page_size)
        principal = current_principal()
        key = pagination.fingerprint(principal.subject, request.parent, request.region, category, size)
        report, items, more = await handlers.list_reconciliation_items(
            principal,
            report_id,
            region,
            category,
            size,
            pagination.decode_after(request.page_token, key),
            self.deps,
        )
        response = pb.ListReconciliationItemsResponse(
            items=[mapping.item_to_proto(item, report.started_at) for item in items]
        )
        if more and items:
            response.next_page_token = pagination.encode(
                items[-1].changed_at.isoformat(), items[-1].record_id, key
            )
        return response


def _report(report: Report, figures: list[RegionFigures]) -> pb.Reconciliation:
    principal = current_principal()
    return mapping.report_to_proto(
        report, figures, whole=policy.everywhere(principal), caller=principal.username
    )
