"""The national overview: the hub's oversight figures (OversightService.GetOverview) per region
and per requesting force, as tables and server-drawn charts, for a period. The oversight service
decides who reads which regions (the national team every region, a region's supervisor their
own, everyone else nothing); the page shows what it answers and, when it refuses, what to do."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2
from toex_kernel.forces import FORCES
from toex_kernel.regions import Region

from toex_console.app import Console, what_to_do
from toex_console.charts import IN_STEP, SERIES, bars
from toex_console.formats import minute, when
from toex_console.oidc import SignInFailed

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
REGIONS = [r.value for r in Region]
FORCE_CODES = sorted((info.code, info.display_name, info.region) for info in FORCES.values())
JOB_STATES = ("raised", "assigned", "in_progress", "delivered", "closed", "declined", "cancelled")
REFERRAL_STATES = ("draft", "awaiting_approval", "approved", "submitted", "acknowledged", "decided", "closed")
CLOCKS = ("met_on_time", "met_late", "due", "overdue")
RECONCILIATION = ("in_sync", "held", "stale", "missing", "rejected", "conflict")
# Forces' figures are one call each: at most this many at once.
FORCE_CALLS = 8


def oversight_service(console: Console) -> Any:
    stub = getattr(console, "_oversight", None)
    if stub is None:
        stub = oversight_pb2_grpc.OversightServiceStub(console.channel_to(console.settings.oversight_addr))
        console._oversight = stub  # type: ignore[attr-defined]
    return stub


def _words(name: str) -> str:
    return name.replace("_", " ")


def region_figures(figures: Any) -> dict[str, Any]:
    jobs, referrals, pnd = figures.jobs, figures.referrals, figures.pnd
    rec = pnd.reconciliation
    return {
        "region": str(region_pb2.Region.Name(figures.region)).removeprefix("REGION_")
        if figures.region
        else "All regions",
        "jobs": jobs.raised,
        "job_states": [getattr(jobs.states, s) for s in JOB_STATES],
        "open": jobs.open,
        "overdue": jobs.overdue,
        "on_time": jobs.delivered_on_time,
        "late": jobs.delivered_late,
        "taken_by_others": jobs.taken_by_other_regions,
        "taken_for_others": jobs.taken_for_other_regions,
        "rated": jobs.feedback.rated,
        "rating": jobs.feedback.mean_rating,
        "referrals": referrals.drafted,
        "referral_states": [getattr(referrals.states, s) for s in REFERRAL_STATES],
        "clocks": [getattr(referrals.clocks, c) for c in CLOCKS],
        "pnd_answers": [pnd.accepted, pnd.rejected, pnd.conflicts],
        "reconciliation": [getattr(rec, c) for c in RECONCILIATION] if pnd.HasField("reconciliation") else [],
        "reconciled": minute(rec.complete_time)
        if pnd.HasField("reconciliation") and rec.HasField("complete_time")
        else "",
        "notices": figures.deconfliction.notices,
        "latest": when(figures, "latest_event_time"),
        "events": figures.events_counted,
    }


def charts(rows: list[dict[str, Any]]) -> list[tuple[str, Markup]]:
    def chart(
        title: str, key: str, series: tuple[str, ...] | list[str], colours: tuple[str, ...] = SERIES
    ) -> tuple[str, Markup]:
        values = [(r["region"], r[key] if isinstance(r[key], list) else [r[key]]) for r in rows]
        return title, bars(title, values, [_words(s) for s in series], colours=colours)

    return [
        chart("Jobs raised in the period, by state now", "job_states", JOB_STATES),
        chart("Referrals drafted in the period, by state now", "referral_states", REFERRAL_STATES),
        chart("Statutory clocks of those referrals", "clocks", CLOCKS),
        chart("PND answers in the period", "pnd_answers", ["accepted", "rejected", "conflicts"]),
        chart("Newest PND reconciliation", "reconciliation", RECONCILIATION, IN_STEP),
        chart("Deconfliction notices received", "notices", ["notices"]),
    ]


def period_problem(first_day: str, last_day: str) -> str:
    for label, day in (("From", first_day), ("To", last_day)):
        if day and not DAY.match(day):
            return f"{label}: write the day as YYYY-MM-DD (for example 2026-11-30), or leave it empty."
    if first_day and last_day and first_day > last_day:
        return "The first day comes after the last: swap them, or change one."
    return ""


async def overview(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    first_day = request.query_params.get("first_day", "").strip()
    last_day = request.query_params.get("last_day", "").strip()
    region = request.query_params.get("region", "")
    region = region if region in REGIONS else ""
    force = request.query_params.get("force", "")
    force = force if any(force == code for code, _, _ in FORCE_CODES) else ""
    context: dict[str, Any] = {
        "first_day": first_day,
        "last_day": last_day,
        "region": region,
        "force": force,
        "regions": REGIONS,
        "forces": FORCE_CODES,
        "rows": [],
        "total": None,
        "charts": [],
        "force_chart": None,
        "force_rows": [],
        "notes": [],
        "problem": "",
        "refused": False,
    }
    status = 200
    problem = period_problem(first_day, last_day)
    if problem:
        return console.render(
            request, "national.html", session, status=400, **{**context, "problem": problem}
        )
    if not session.purpose:
        return console.render(request, "national.html", session, **context)
    period = pb.Period(first_day=first_day, last_day=last_day)
    regions = [region_pb2.Region.Value(f"REGION_{region}")] if region else []
    metadata = await _metadata(console, session, request)
    if isinstance(metadata, Response):
        return metadata
    try:
        answer = await oversight_service(console).GetOverview(
            pb.GetOverviewRequest(period=period, regions=regions, force=force),
            metadata=metadata,
            timeout=console.settings.grpc_timeout_seconds,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return console.failed(request, session, exc, back="/national", back_label="the national overview")
        context["refused"] = exc.code() == grpc.StatusCode.PERMISSION_DENIED
        context["problem"] = refusal(exc)
        status = {
            grpc.StatusCode.PERMISSION_DENIED: 403,
            grpc.StatusCode.INVALID_ARGUMENT: 400,
            grpc.StatusCode.UNIMPLEMENTED: 404,
        }.get(exc.code(), 502)
        return console.render(request, "national.html", session, status=status, **context)
    rows = [region_figures(r) for r in answer.regions]
    context.update(
        rows=rows,
        total=region_figures(answer.total),
        charts=charts(rows),
        notes=list(answer.notes),
        answered_period=f"{answer.period.first_day} to {answer.period.last_day}",
        read_time=minute(answer.read_time),
    )
    # Per force: one region's forces (the one chosen, or the caller's only region), one call each.
    answered = [r["region"] for r in rows]
    if not force and len(answered) == 1:
        own = answered[0]
        forces = [(code, name) for code, name, home in FORCE_CODES if home is not None and home.value == own]
        force_rows = await per_force(console, metadata, period, rows_region=own, forces=forces)
        context["force_rows"] = force_rows
        context["force_chart"] = bars(
            f"Jobs raised in the period by {own}'s forces, by state now",
            [(name, r["job_states"]) for name, r in force_rows],
            [_words(s) for s in JOB_STATES],
        )
    return console.render(request, "national.html", session, status=status, **context)


async def per_force(
    console: Console,
    metadata: list[tuple[str, str]],
    period: Any,
    rows_region: str,
    forces: list[tuple[str, str]],
) -> list[tuple[str, dict[str, Any]]]:
    limit = asyncio.Semaphore(FORCE_CALLS)
    region = [region_pb2.Region.Value(f"REGION_{rows_region}")]

    async def one(code: str) -> dict[str, Any] | None:
        async with limit:
            try:
                answer = await oversight_service(console).GetOverview(
                    pb.GetOverviewRequest(period=period, regions=region, force=code),
                    metadata=metadata,
                    timeout=console.settings.grpc_timeout_seconds,
                )
            except grpc.aio.AioRpcError:
                return None
            return region_figures(answer.total)

    answers = await asyncio.gather(*(one(code) for code, _ in forces))
    return [
        (name, figures) for (_, name), figures in zip(forces, answers, strict=True) if figures is not None
    ]


async def _metadata(console: Console, session: Any, request: Request) -> list[tuple[str, str]] | Response:
    try:
        return await console.metadata(session)
    except SignInFailed:
        return console.sign_in_again(request)


def refusal(exc: grpc.aio.AioRpcError) -> str:
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        return (
            f"The oversight service refused: {exc.details()}. The national overview is for the national "
            "team; a region's supervisor sees their own region (choose it under Region). If your work "
            "needs these figures, ask a national coordinator."
        )
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return f"The period or filter was not accepted: {exc.details()}. Correct it and try again."
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        # A region installation's oversight service only reports to the hub.
        return (
            "This installation keeps no national figures: the national overview is in the national "
            "hub's console. Open it there, or ask a national coordinator for the figures."
        )
    return what_to_do(exc)


def routes() -> list[Route]:
    return [Route("/national", overview)]
