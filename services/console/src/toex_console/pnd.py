"""PND pages: the outbound queue's sync status and the newest reconciliation report per region,
with the records it found out of step (PndSyncService GetSyncStatus, GetReconciliation,
ListReconciliationItems; RunReconciliation for those allowed). The PND service decides who
reads which region; the page shows its answers and refusals."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import grpc
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc, sync_pb2
from toex.type.v1 import region_pb2
from toex_kernel.regions import Region

from toex_console.app import Console, what_to_do
from toex_console.charts import IN_STEP, bars
from toex_console.formats import when
from toex_console.oidc import SignInFailed

PAGE_SIZE = 25
# Per-region sync status is one call each: at most this many at once.
STATUS_CALLS = 8
REGIONS = [r.value for r in Region]
# In the order of the charts' colours (toex_console.charts.IN_STEP).
CATEGORIES = ("held", "stale", "missing", "rejected", "conflict")


def pnd_service(console: Console) -> Any:
    stub = getattr(console, "_pnd", None)
    if stub is None:
        stub = pnd_pb2_grpc.PndSyncServiceStub(console.channel_to(console.settings.pnd_addr))
        console._pnd = stub  # type: ignore[attr-defined]
    return stub


def duration_text(duration: Any) -> str:
    seconds = int(duration.seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def status_view(status: Any) -> dict[str, Any]:
    return {
        "queued": status.queued,
        "held": status.held,
        "oldest": duration_text(status.oldest_queued_age) if status.queued else "",
        "retrying": status.retrying,
        "last_error": status.last_error,
        "records": [
            (sync_pb2.SyncState.Name(c.state).removeprefix("SYNC_STATE_").lower(), c.count)
            for c in status.records
        ],
    }


def aged(count: Any) -> dict[str, Any]:
    return {
        "count": count.count,
        "oldest": duration_text(count.oldest_age) if count.count else "",
        "older_than_day": count.older_than_day,
    }


def reconciliation_view(report: Any) -> dict[str, Any]:
    regions = [
        {
            "region": str(region_pb2.Region.Name(r.region)).removeprefix("REGION_"),
            "local": r.local_records,
            "in_sync": r.in_sync,
            **{category: aged(getattr(r, category)) for category in CATEGORIES},
        }
        for r in report.regions
    ]
    return {
        "name": report.name,
        "scheduled": report.scheduled,
        "requested_by": report.requested_by,
        "started": when(report, "start_time"),
        "completed": when(report, "complete_time"),
        "pnd_records": report.pnd_records,
        "regions": regions,
        "chart": bars(
            "Newest reconciliation with the PND per region: records in sync and out of step",
            [(r["region"], [r["in_sync"], *(r[c]["count"] for c in CATEGORIES)]) for r in regions],
            ["in sync", *CATEGORIES],
            colours=IN_STEP,
        ),
    }


async def status_page(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    region = request.query_params.get("region", "")
    region = region if region in REGIONS else ""
    category = request.query_params.get("category", "")
    category = category if category in CATEGORIES else ""
    page_token = request.query_params.get("page_token", "")
    context: dict[str, Any] = {
        "region": region,
        "regions": REGIONS,
        "category": category,
        "categories": CATEGORIES,
        "sync": None,
        "per_region": [],
        "status_problem": "",
        "report": None,
        "report_problem": "",
        "items": [],
        "items_problem": "",
        "next_token": "",
        "refusal": "",
        "done": request.query_params.get("done", ""),
        "query": urlencode({k: v for k, v in (("region", region), ("category", category)) if v}),
    }
    status = 200
    if request.method == "POST":
        form = await request.form()
        if not console.csrf_ok(session, form):
            return PlainTextResponse("The form was stale: reload the page and try again.", status_code=403)
        if session.purpose:
            try:
                await pnd_service(console).RunReconciliation(
                    pb.RunReconciliationRequest(),
                    metadata=await console.metadata(session),
                    timeout=max(console.settings.grpc_timeout_seconds, 60.0),
                )
            except SignInFailed:
                return console.sign_in_again(request)
            except grpc.aio.AioRpcError as exc:
                context["refusal"] = (
                    f"Refused: {exc.details()}. Only a region's supervisor or a national coordinator runs a "
                    "reconciliation; the newest report is shown."
                    if exc.code() == grpc.StatusCode.PERMISSION_DENIED
                    else what_to_do(exc)
                )
                status = 403 if exc.code() == grpc.StatusCode.PERMISSION_DENIED else 502
            else:
                return RedirectResponse(f"/pnd?{context['query']}&done=1".replace("?&", "?"), status_code=303)
    if not session.purpose:
        return console.render(request, "pnd.html", session, **context)
    try:
        metadata = await console.metadata(session)
    except SignInFailed:
        return console.sign_in_again(request)
    service, timeout = pnd_service(console), console.settings.grpc_timeout_seconds
    answers: tuple[Any, ...] = await asyncio.gather(
        service.GetSyncStatus(
            pb.GetSyncStatusRequest(name=f"regions/{region or '-'}/syncStatus"),
            metadata=metadata,
            timeout=timeout,
        ),
        service.GetReconciliation(
            pb.GetReconciliationRequest(name="reconciliations/latest"), metadata=metadata, timeout=timeout
        ),
        return_exceptions=True,
    )
    sync, report = answers
    if isinstance(sync, grpc.aio.AioRpcError):
        context["status_problem"] = section_problem(sync)
    elif isinstance(sync, BaseException):
        raise sync
    else:
        context["sync"] = status_view(sync)
    if isinstance(report, grpc.aio.AioRpcError):
        context["report_problem"] = (
            "No reconciliation has run yet."
            if report.code() == grpc.StatusCode.NOT_FOUND
            else section_problem(report)
        )
    elif isinstance(report, BaseException):
        raise report
    else:
        view = reconciliation_view(report.reconciliation)
        if region:
            view["regions"] = [r for r in view["regions"] if r["region"] == region]
        context["report"] = view
        if not region and len(view["regions"]) > 1:
            # The report names the regions the service lets this person see: their queues, each.
            context["per_region"] = await per_region_status(
                service, [r["region"] for r in view["regions"]], metadata, timeout
            )
        try:
            items = await service.ListReconciliationItems(
                pb.ListReconciliationItemsRequest(
                    parent=report.reconciliation.name,
                    region=region,
                    category=pb.ReconciliationCategory.Value(f"RECONCILIATION_CATEGORY_{category.upper()}")
                    if category
                    else pb.RECONCILIATION_CATEGORY_UNSPECIFIED,
                    page_size=PAGE_SIZE,
                    page_token=page_token,
                ),
                metadata=metadata,
                timeout=timeout,
            )
            context["items"] = [
                {
                    "record": i.record,
                    "category": pb.ReconciliationCategory.Name(i.category)
                    .removeprefix("RECONCILIATION_CATEGORY_")
                    .lower(),
                    "local_version": i.local_version,
                    "pnd_version": i.pnd_version,
                    "age": duration_text(i.age),
                }
                for i in items.items
            ]
            context["next_token"] = items.next_page_token
        except grpc.aio.AioRpcError as exc:
            context["items_problem"] = section_problem(exc)
    return console.render(request, "pnd.html", session, status=status, **context)


async def per_region_status(
    service: Any, regions: list[str], metadata: list[tuple[str, str]], deadline: float
) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(STATUS_CALLS)

    async def one(code: str) -> dict[str, Any] | None:
        async with limit:
            try:
                answer = await service.GetSyncStatus(
                    pb.GetSyncStatusRequest(name=f"regions/{code}/syncStatus"),
                    metadata=metadata,
                    timeout=deadline,
                )
            except grpc.aio.AioRpcError:
                return None
            return {"region": code, **status_view(answer)}

    rows = await asyncio.gather(*(one(code) for code in regions))
    return [row for row in rows if row is not None]


def section_problem(exc: grpc.aio.AioRpcError) -> str:
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        return (
            f"The PND service refused: {exc.details()}. Researchers and supervisors read their own "
            "region's PND status, national coordinators every region's; choose your own region, or "
            "ask your supervisor."
        )
    return what_to_do(exc)


def routes() -> list[Route]:
    return [Route("/pnd", status_page, methods=["GET", "POST"])]
