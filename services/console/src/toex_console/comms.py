"""Comms pages of a job: upload a CDR, ANPR or advert file (streamed to the comms service with a
progress bar where script runs), a dataset with its rejected rows by line, and the job's results:
ranked suspects with reasons, common contacts, watchlist contacts, convoys and the contact
network (an interactive chart, and the same GraphML / i2 / SVG / PNG files the CLI's
`toex comms export` writes: both stream the comms service's Export).

Every call carries the signed-in person's token and purpose; the comms service decides what they
may see and audits it. The target numbers a person enters are kept in their server-side session,
never in an address, so they stay out of URLs, logs and the browser's history."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc.aio import EOF  # type: ignore[attr-defined]  # the end of a server stream; not in the stubs
from grpc_status import rpc_status
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as res
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex.type.v1 import region_pb2, security_pb2

from toex_console.app import Console, what_to_do
from toex_console.formats import when
from toex_console.oidc import SignInFailed
from toex_console.sessions import Session

PAGE_SIZE = 25
CHUNK = 1024 * 1024  # the comms service takes chunks of at most 2 MiB
MAX_TARGETS = 1000
MAX_TARGETS_TEXT = 64 * 1024
NETWORK_MAX_EDGES = 500  # the chart stays readable; the exports carry the whole network
WATCHLIST_CONTACTS = 500
KINDS = {
    "cdr": ("call data (CDR)", "ImportCdr", pb.ImportCdrRequest),
    "anpr": ("ANPR reads", "ImportAnpr", pb.ImportAnprRequest),
    "adverts": ("adverts", "ImportAdverts", pb.ImportAdvertsRequest),
}
EXPORTS = {
    "graphml": (pb.EXPORT_FORMAT_GRAPHML, "GraphML"),
    "i2": (pb.EXPORT_FORMAT_I2_LINK_CSV, "i2 link table (CSV)"),
    "svg": (pb.EXPORT_FORMAT_SVG, "SVG picture"),
    "png": (pb.EXPORT_FORMAT_PNG, "PNG picture"),
}
HANDLING = {
    "": security_pb2.HANDLING_CODE_UNSPECIFIED,
    "P": security_pb2.HANDLING_CODE_P,
    "C": security_pb2.HANDLING_CODE_C,
}
ENCODINGS = ("", "utf-8", "utf-16", "cp1252", "latin-1")
STALE = "The form was stale: reload the page and try again."
UPLOAD_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
UPLOAD_GRACE_SECONDS = 30.0  # an ended import's progress stays this long, for the page's last poll
UPLOADS_PER_SESSION = 8
SIGNED_OUT = "Your sign-in has ended. Sign in again."


def comms_service(console: Console) -> Any:
    stub = getattr(console, "_comms", None)
    if stub is None:
        stub = comms_pb2_grpc.CommsAnalysisServiceStub(console.channel_to(console.settings.comms_addr))
        console._comms = stub  # type: ignore[attr-defined]
    return stub


@dataclass
class UploadProgress:
    """How far the comms service has got with one upload: "reading" while the console streams
    the file to it, "indexing" once every byte is sent and its answer is awaited, then "done" or
    "failed"."""

    job: str
    total: int
    sent: int = 0
    phase: str = "reading"
    ended: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "sent": self.sent, "total": self.total}


class Uploads:
    """The progress of each session's uploads, by the id the page chose, kept in memory: an
    entry goes `grace` seconds after its import ends (time for the page's last poll), and a
    session keeps at most `per_session` (a new upload drops its oldest)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        grace: float = UPLOAD_GRACE_SECONDS,
        per_session: int = UPLOADS_PER_SESSION,
    ) -> None:
        self._clock, self._grace, self._per_session = clock, grace, per_session
        self._by_session: dict[str, dict[str, UploadProgress]] = {}

    def start(self, session_id: str, upload_id: str, job: str, total: int) -> UploadProgress:
        """The progress of a new upload; one without a usable id is counted but not kept."""
        progress = UploadProgress(job=job, total=total)
        if not UPLOAD_ID.fullmatch(upload_id):
            return progress
        self._sweep()
        kept = self._by_session.setdefault(session_id, {})
        kept.pop(upload_id, None)
        while len(kept) >= self._per_session:
            del kept[next(iter(kept))]
        kept[upload_id] = progress
        return progress

    def end(self, progress: UploadProgress, phase: str) -> None:
        progress.phase, progress.ended = phase, self._clock()

    def get(self, session_id: str, upload_id: str) -> UploadProgress | None:
        self._sweep()
        return self._by_session.get(session_id, {}).get(upload_id)

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._by_session.values())

    def _sweep(self) -> None:
        # At most per_session entries for each session with uploads: a short walk.
        expired = self._clock() - self._grace
        for session_id, kept in list(self._by_session.items()):
            for upload_id, progress in list(kept.items()):
                if progress.ended is not None and progress.ended < expired:
                    del kept[upload_id]
            if not kept:
                del self._by_session[session_id]


def uploads(console: Console) -> Uploads:
    found = getattr(console, "_uploads", None)
    if found is None:
        found = Uploads()
        console._uploads = found  # type: ignore[attr-defined]
    return found  # type: ignore[no-any-return]


# -- views ------------------------------------------------------------------------------------


def _region(value: Any) -> str:
    return str(region_pb2.Region.Name(value)).removeprefix("REGION_")


def duration_text(seconds: int) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def dataset_view(d: Any) -> dict[str, Any]:
    return {
        "name": d.name,
        "kind": str(res.DatasetKind.Name(d.kind)).removeprefix("DATASET_KIND_").lower(),
        "display_name": d.display_name or d.source_filename,
        "filename": d.source_filename,
        "region": _region(d.region),
        "handling": "P" if d.handling == security_pb2.HANDLING_CODE_P else "C",
        "rows_read": d.rows_read,
        "rows_accepted": d.rows_accepted,
        "rows_rejected": d.rows_rejected,
        "distinct": d.distinct_identifiers,
        "first": when(d, "first_record_time"),
        "last": when(d, "last_record_time"),
        "created_by": d.created_by,
        "created": when(d, "create_time"),
        "job": d.job,
        "size": d.size_bytes,
    }


def _attributed(items: Any) -> str:
    return ", ".join(a.label or a.entity_id for a in items)


def watchlist_label(ref: Any) -> str:
    """A watchlist as people name it: its id and what it holds ("rso-derby (registered sex offender)")."""
    kind = str(res.WatchlistKind.Name(ref.kind)).removeprefix("WATCHLIST_KIND_").replace("_", " ").lower()
    return f"{ref.name.rsplit('/', 1)[-1]} ({kind})"


def _watchlists(items: Any) -> str:
    return ", ".join(watchlist_label(w) for w in items)


def suspect_view(rank: int, s: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "number": s.number,
        "score": f"{s.score:.1f}",
        "targets": s.target_count,
        "contacts": s.contact_count,
        "call_time": duration_text(s.total_duration_seconds),
        "reason": s.reason,
        "watchlists": _watchlists(s.watchlists),
        "attributed": _attributed(s.attributions),
    }


def common_view(c: Any) -> dict[str, Any]:
    return {
        "number": c.number,
        "target": c.target,
        "targets": c.target_count,
        "contacts": c.contact_count,
        "ties": ", ".join(f"{t.target} ({t.contact_count})" for t in c.ties),
        "attributed": _attributed(c.attributions),
    }


def watchlist_contact_view(c: Any) -> dict[str, Any]:
    return {
        "a": c.number_a,
        "list_a": watchlist_label(c.list_a),
        "b": c.number_b,
        "list_b": watchlist_label(c.list_b),
        "contacts": c.contact_count,
        "calls": c.call_count,
        "texts": c.sms_count,
        "call_time": duration_text(c.total_duration_seconds),
        "first": when(c, "first_contact_time"),
        "last": when(c, "last_contact_time"),
        "dataset": c.dataset,
    }


def convoy_view(c: Any) -> dict[str, Any]:
    return {
        "a": c.vrm_a,
        "b": c.vrm_b,
        "occasions": c.occasion_count,
        "days": c.day_count,
        "cameras": ", ".join(c.cameras),
        "gap": duration_text(c.median_gap_seconds),
        "first": when(c, "first_seen_time"),
        "last": when(c, "last_seen_time"),
    }


def flag_view(f: Any) -> dict[str, Any]:
    return {
        "number": f.number,
        "adverts": f.advert_count,
        "reasons": ", ".join(
            str(res.AdvertFlagReason.Name(r)).removeprefix("ADVERT_FLAG_REASON_").replace("_", " ").lower()
            for r in f.reasons
        ),
        "locations": ", ".join(f.locations),
    }


def network_json(answer: Any) -> dict[str, Any]:
    """The contact network in the shape the chart script draws (cytoscape elements)."""
    nodes = [
        {
            "data": {
                "id": n.number,
                "label": n.number,
                "target": n.target,
                "watchlist": bool(n.watchlists),
                "events": n.event_count,
                "size": round(18 + 6 * math.log1p(n.event_count), 1),
            }
        }
        for n in answer.nodes
    ]
    edges = [
        {
            "data": {
                "id": f"{e.number_a}|{e.number_b}",
                "source": e.number_a,
                "target": e.number_b,
                "contacts": e.contact_count,
                "calls": e.call_count,
                "texts": e.sms_count,
                "width": round(1 + 2 * math.log1p(e.contact_count), 1),
            }
        }
        for e in answer.edges
    ]
    return {"nodes": nodes, "edges": edges, "targets": list(answer.targets)}


def parse_targets(text: str) -> list[str]:
    """Numbers one a line or separated by commas or semicolons; `#` starts a comment."""
    found: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in line.replace(";", ",").split(","):
            if part.strip():
                found.append(" ".join(part.split()))
    return list(dict.fromkeys(found))


def field_problems(exc: grpc.aio.AioRpcError) -> list[str]:
    """The field violations a refusal carries, one sentence each (empty when it has none)."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except Exception:
        return []
    problems: list[str] = []
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            problems.extend(f"{v.field}: {v.description}" for v in bad.field_violations)
    return problems


def problem_text(exc: grpc.aio.AioRpcError, what: str) -> str:
    """A failed section as a sentence that says what to do next."""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        fields = field_problems(exc)
        told = "; ".join(fields) if fields else exc.details()
        return f"The {what} could not be worked out: {told}. Correct it and try again."
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return f"The {what} could not be worked out: {exc.details()}."
    return what_to_do(exc)


# -- plumbing ---------------------------------------------------------------------------------


def _console(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def _job_name(request: Request) -> str:
    return f"regions/{request.path_params['region']}/jobs/{request.path_params['job_id']}"


def _parent(request: Request) -> str:
    return f"regions/{request.path_params['region']}"


def _targets_key(job: str) -> str:
    return f"comms-targets:{job}"


def _page(request: Request, name: str) -> int:
    value = request.query_params.get(name, "1")
    return int(value) if value.isdigit() and 0 < int(value) < 10_000 else 1


async def _signed_in(request: Request) -> tuple[Console, Session | None]:
    console = _console(request)
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console, None
    return console, session


async def _call(console: Console, session: Session, method: str, message: Any) -> Any:
    return await getattr(comms_service(console), method)(
        message, metadata=await console.metadata(session), timeout=console.settings.grpc_timeout_seconds
    )


class Section:
    """One part of the results page: its rows, or what went wrong and what to do about it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.problem = ""
        self.more = False
        self.page = 1

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "problem": self.problem, "more": self.more, "page": self.page}


# -- pages ------------------------------------------------------------------------------------


async def job_comms(request: Request) -> Response:
    """The job's comms page: upload, datasets, targets, suspects, common contacts, watchlist
    contacts, convoys, the network chart and its exports."""
    console, session = await _signed_in(request)
    if session is None:
        return console.sign_in_again(request)
    job_name = _job_name(request)
    if not session.purpose:
        return console.render(request, "comms.html", session, job=None, name=job_name, title="Comms")
    timeout = console.settings.grpc_timeout_seconds
    try:
        metadata = await console.metadata(session)
        job = (
            await console.tasking().GetJob(
                tasking_pb.GetJobRequest(name=job_name), metadata=metadata, timeout=timeout
            )
        ).job
    except SignInFailed:
        return console.sign_in_again(request)
    except grpc.aio.AioRpcError as exc:
        return console.failed(request, session, exc)
    return await _render_results(request, console, session, job, metadata)


async def _render_results(
    request: Request,
    console: Console,
    session: Session,
    job: Any,
    metadata: list[tuple[str, str]],
    status: int = 200,
    upload_problem: str = "",
    upload_fields: list[str] | None = None,
) -> Response:
    stub = comms_service(console)
    timeout = console.settings.grpc_timeout_seconds
    job_name = job.name
    parent = job_name.rsplit("/jobs/", 1)[0]
    targets: list[str] = list(session.kept.get(_targets_key(job_name), []))
    datasets, suspects, common, contacts, convoys = Section(), Section(), Section(), Section(), Section()
    datasets_token = request.query_params.get("datasets_page_token", "")
    next_datasets = ""
    suspects.page, common.page = _page(request, "suspects_page"), _page(request, "common_page")
    scope = pb.AnalysisScope(parent=parent, job=job_name)

    async def load_datasets() -> None:
        nonlocal next_datasets
        try:
            answer = await stub.ListDatasets(
                pb.ListDatasetsRequest(
                    parent=parent, job=job_name, page_size=PAGE_SIZE, page_token=datasets_token
                ),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            datasets.problem = problem_text(exc, "list of datasets")
            return
        datasets.rows = [dataset_view(d) for d in answer.datasets]
        next_datasets = answer.next_page_token

    async def load_suspects() -> None:
        # The service ranks; the console pages through the ranking (one more than the page
        # tells whether another page follows).
        want = suspects.page * PAGE_SIZE
        try:
            answer = await stub.RankSuspects(
                pb.RankSuspectsRequest(scope=scope, targets=targets, limit=want + 1),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            suspects.problem = problem_text(exc, "ranked suspects")
            return
        start = want - PAGE_SIZE
        suspects.rows = [suspect_view(start + i + 1, s) for i, s in enumerate(answer.suspects[start:want])]
        suspects.more = len(answer.suspects) > want

    async def load_common() -> None:
        want = common.page * PAGE_SIZE
        try:
            answer = await stub.FindCommonContacts(
                pb.FindCommonContactsRequest(scope=scope, targets=targets, limit=want + 1),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            common.problem = problem_text(exc, "common contacts")
            return
        common.rows = [common_view(c) for c in answer.contacts[want - PAGE_SIZE : want]]
        common.more = len(answer.contacts) > want

    async def load_contacts() -> None:
        # Watchlist contacts are kept per region; this page shows those found in the job's
        # datasets (a grant holder's answer already holds only those).
        try:
            job_sets, found = await asyncio.gather(
                stub.ListDatasets(
                    pb.ListDatasetsRequest(parent=parent, job=job_name, page_size=500),
                    metadata=metadata,
                    timeout=timeout,
                ),
                stub.ListWatchlistContacts(
                    pb.ListWatchlistContactsRequest(parent=parent, limit=WATCHLIST_CONTACTS),
                    metadata=metadata,
                    timeout=timeout,
                ),
            )
        except grpc.aio.AioRpcError as exc:
            contacts.problem = problem_text(exc, "watchlist contacts")
            return
        of_job = {d.name for d in job_sets.datasets}
        contacts.rows = [watchlist_contact_view(c) for c in found.contacts if c.dataset in of_job]

    async def load_convoys() -> None:
        try:
            answer = await stub.FindConvoys(
                pb.FindConvoysRequest(scope=pb.AnprScope(parent=parent, job=job_name), limit=100),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            convoys.problem = problem_text(exc, "convoys")
            return
        convoys.rows = [convoy_view(c) for c in answer.convoys]

    work = [load_datasets(), load_contacts(), load_convoys()]
    if targets:
        work += [load_suspects(), load_common()]
    await asyncio.gather(*work)
    return console.render(
        request,
        "comms.html",
        session,
        status=status,
        title="Comms",
        name=job_name,
        job={
            "name": job_name,
            "operation": job.operation_name,
            "region": _region(job.owning_region),
        },
        targets=targets,
        datasets=datasets.as_dict(),
        next_datasets=next_datasets,
        suspects=suspects.as_dict(),
        common=common.as_dict(),
        contacts=contacts.as_dict(),
        convoys=convoys.as_dict(),
        exports=[(key, label) for key, (_, label) in EXPORTS.items()],
        kinds=[(key, label) for key, (label, _, _) in KINDS.items()],
        encodings=ENCODINGS,
        upload_problem=upload_problem,
        upload_fields=upload_fields or [],
        page_size=PAGE_SIZE,
    )


async def set_targets(request: Request) -> Response:
    """Keep the job's target numbers in the session (a form with the CSRF token)."""
    console, session = await _signed_in(request)
    if session is None:
        return console.sign_in_again(request)
    form = await request.form()
    if not console.csrf_ok(session, form):
        return PlainTextResponse(STALE, status_code=403)
    job_name = _job_name(request)
    text = str(form.get("targets", ""))[:MAX_TARGETS_TEXT]
    targets = parse_targets(text)[:MAX_TARGETS]
    if targets:
        session.kept[_targets_key(job_name)] = targets
    else:
        session.kept.pop(_targets_key(job_name), None)
    return RedirectResponse(f"/{job_name}/comms#results", status_code=303)


async def _upload_chunks(
    request_type: Any, header: pb.ImportHeader, file: UploadFile, progress: UploadProgress
) -> AsyncIterator[Any]:
    # gRPC asks for the next message once the last is written, and flow control holds a write
    # until the service reads: the bytes handed over track what the service has read.
    yield request_type(header=header)
    while chunk := await file.read(CHUNK):
        yield request_type(chunk=chunk)
        progress.sent += len(chunk)
    progress.phase = "indexing"


async def _import(
    console: Console, method: str, chunks: AsyncIterator[Any], metadata: Any, progress: UploadProgress
) -> Any:
    """The import call; its progress says how it ended before any page is made of the answer."""
    phase = "failed"
    try:
        answer = await getattr(comms_service(console), method)(
            chunks, metadata=metadata, timeout=console.settings.comms_import_timeout_seconds
        )
        phase = "done"
        return answer
    finally:
        uploads(console).end(progress, phase)


async def upload(request: Request) -> Response:
    """A file streamed to the comms service's import with the person's token and purpose; then
    the dataset's page (rows stored, rejections by line). A refusal is shown on the job's comms
    page with what to correct."""
    console, session = await _signed_in(request)
    if session is None:
        return console.sign_in_again(request)
    job_name = _job_name(request)
    async with request.form(max_files=1, max_fields=20) as form:
        if not console.csrf_ok(session, form):
            return PlainTextResponse(STALE, status_code=403)
        if not session.purpose:
            return RedirectResponse(f"/{job_name}/comms", status_code=303)
        try:
            metadata = await console.metadata(session)
            job = (
                await console.tasking().GetJob(
                    tasking_pb.GetJobRequest(name=job_name),
                    metadata=metadata,
                    timeout=console.settings.grpc_timeout_seconds,
                )
            ).job
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            return console.failed(request, session, exc)
        kind = str(form.get("kind", ""))
        file = form.get("file")
        encoding = str(form.get("encoding", ""))
        handling = str(form.get("handling", ""))
        problem = ""
        if kind not in KINDS:
            problem = "Choose what the file holds: call data (CDR), ANPR reads or adverts."
        elif not isinstance(file, UploadFile) or not file.filename or not file.size:
            problem = "Choose a file to upload: a CSV file with a header row."
        elif encoding not in ENCODINGS or handling not in HANDLING:
            problem = "Choose the encoding and handling code from the lists."
        if problem:
            return await _render_results(
                request, console, session, job, metadata, status=400, upload_problem=problem
            )
        assert isinstance(file, UploadFile)
        _, method, request_type = KINDS[kind]
        header = pb.ImportHeader(
            parent=job_name.rsplit("/jobs/", 1)[0],
            job=job_name,
            display_name=" ".join(str(form.get("display_name", "")).split())[:200],
            filename=(file.filename or "")[-255:],
            profile=str(form.get("profile", "")).strip() if kind == "cdr" else "",
            encoding=encoding,
            handling=HANDLING[handling],
            size_bytes=int(file.size or 0),
        )
        progress = uploads(console).start(
            session.id, str(form.get("upload_id", "")), job_name, header.size_bytes
        )
        try:
            answer = await _import(
                console, method, _upload_chunks(request_type, header, file, progress), metadata, progress
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return console.failed(request, session, exc)
            status = {grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.INVALID_ARGUMENT: 400}.get(
                exc.code(), 409 if exc.code() == grpc.StatusCode.FAILED_PRECONDITION else 502
            )
            return await _render_results(
                request,
                console,
                session,
                job,
                metadata,
                status=status,
                upload_problem=f"The file was not imported; nothing was stored. {problem_text(exc, 'file')}",
                upload_fields=field_problems(exc),
            )
    outcome = "again" if answer.already_imported else "new"
    return RedirectResponse(f"/{answer.dataset.name}?imported={outcome}", status_code=303)


async def upload_progress(request: Request) -> Response:
    """How far the comms service has got with one of this session's uploads, as JSON for the
    upload page's script; any other session's upload, or an unknown one, is not found."""
    console, session = await _signed_in(request)
    if session is None:
        return JSONResponse({"error": SIGNED_OUT}, status_code=401)
    progress = uploads(console).get(session.id, request.path_params["upload_id"])
    if progress is None or progress.job != _job_name(request):
        return JSONResponse({"error": "No such upload."}, status_code=404)
    return JSONResponse(progress.as_json())


async def dataset(request: Request) -> Response:
    """One dataset: what was stored, its rejected rows by line (paged), and what its import found
    (convoys of ANPR reads, flagged advert numbers)."""
    console, session = await _signed_in(request)
    if session is None:
        return console.sign_in_again(request)
    name = f"regions/{request.path_params['region']}/datasets/{request.path_params['dataset_id']}"
    if not session.purpose:
        return console.render(
            request, "comms_dataset.html", session, dataset=None, name=name, title="Dataset"
        )
    token = request.query_params.get("page_token", "")
    try:
        found = (await _call(console, session, "GetDataset", pb.GetDatasetRequest(name=name))).dataset
        rejected = await _call(
            console,
            session,
            "ListRejections",
            pb.ListRejectionsRequest(parent=name, page_size=PAGE_SIZE * 2, page_token=token),
        )
    except SignInFailed:
        return console.sign_in_again(request)
    except grpc.aio.AioRpcError as exc:
        back = "/jobs"
        return console.failed(request, session, exc, back=back, back_label="the jobs board")
    view = dataset_view(found)
    extra: dict[str, Any] = {"convoys": [], "flags": [], "problem": ""}
    parent = name.rsplit("/datasets/", 1)[0]
    try:
        if view["kind"] == "anpr":
            answer = await _call(
                console,
                session,
                "FindConvoys",
                pb.FindConvoysRequest(scope=pb.AnprScope(parent=parent, datasets=[name]), limit=100),
            )
            extra["convoys"] = [convoy_view(c) for c in answer.convoys]
        elif view["kind"] == "adverts":
            answer = await _call(
                console, session, "ListAdvertFlags", pb.ListAdvertFlagsRequest(parent=parent, dataset=name)
            )
            extra["flags"] = [flag_view(f) for f in answer.flags]
    except grpc.aio.AioRpcError as exc:
        extra["problem"] = problem_text(exc, "findings")
    return console.render(
        request,
        "comms_dataset.html",
        session,
        title="Dataset",
        name=name,
        dataset=view,
        rejections=[{"line": r.line, "reason": r.reason, "raw": r.raw} for r in rejected.rejections],
        total_rejections=rejected.total_size,
        next_token=rejected.next_page_token,
        imported=request.query_params.get("imported", ""),
        **extra,
    )


async def network(request: Request) -> Response:
    """The job's contact network for the chart script, as JSON (same origin, same session)."""
    console, session = await _signed_in(request)
    if session is None:
        return JSONResponse({"error": SIGNED_OUT}, status_code=401)
    job_name = _job_name(request)
    targets = list(session.kept.get(_targets_key(job_name), []))
    if not session.purpose or not targets:
        return JSONResponse(
            {"error": "Choose a purpose and enter the target numbers first."}, status_code=400
        )
    try:
        answer = await _call(
            console,
            session,
            "GetContactNetwork",
            pb.GetContactNetworkRequest(
                scope=pb.AnalysisScope(parent=_parent(request), job=job_name),
                targets=targets,
                max_edges=NETWORK_MAX_EDGES,
            ),
        )
    except SignInFailed:
        return JSONResponse({"error": SIGNED_OUT}, status_code=401)
    except grpc.aio.AioRpcError as exc:
        status = 404 if exc.code() == grpc.StatusCode.NOT_FOUND else 400
        return JSONResponse({"error": problem_text(exc, "network")}, status_code=status)
    return JSONResponse(network_json(answer))


async def export(request: Request) -> Response:
    """The network as the CLI's `toex comms export` writes it: the comms service's Export,
    streamed through as a download."""
    console, session = await _signed_in(request)
    if session is None:
        return console.sign_in_again(request)
    job_name = _job_name(request)
    kind = request.path_params["kind"]
    targets = list(session.kept.get(_targets_key(job_name), []))
    if kind not in EXPORTS:
        return console.render(
            request,
            "error.html",
            session,
            status=404,
            title="Not found",
            advice="There is no such export. Choose GraphML, i2, SVG or PNG on the job's comms page.",
            back=f"/{job_name}/comms",
            back_label="the job's comms page",
        )
    if not session.purpose or not targets:
        return RedirectResponse(f"/{job_name}/comms", status_code=303)
    # The first chunk names the file; a refusal comes before it, so it is shown as a page.
    try:
        chunks = comms_service(console).Export(
            pb.ExportRequest(
                format=EXPORTS[kind][0],
                scope=pb.AnalysisScope(parent=_parent(request), job=job_name),
                targets=targets,
            ),
            metadata=await console.metadata(session),
            timeout=console.settings.comms_import_timeout_seconds,
        )
        first = await chunks.read()
    except SignInFailed:
        return console.sign_in_again(request)
    except grpc.aio.AioRpcError as exc:
        return console.failed(
            request, session, exc, back=f"/{job_name}/comms", back_label="the job's comms page"
        )
    if first is EOF:
        return PlainTextResponse("", status_code=204)
    filename = first.filename.rsplit("/", 1)[-1] or f"network-{kind}"
    safe = "".join(ch for ch in filename if ch.isalnum() or ch in "-_.") or f"network-{kind}"

    async def body() -> AsyncIterator[bytes]:
        yield first.chunk
        while (part := await chunks.read()) is not EOF:
            yield part.chunk

    return StreamingResponse(
        body(),
        media_type=first.content_type or "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


def routes() -> list[Route]:
    return [
        Route("/regions/{region:str}/jobs/{job_id:str}/comms", job_comms),
        Route("/regions/{region:str}/jobs/{job_id:str}/comms/upload", upload, methods=["POST"]),
        Route("/regions/{region:str}/jobs/{job_id:str}/comms/uploads/{upload_id:str}", upload_progress),
        Route("/regions/{region:str}/jobs/{job_id:str}/comms/targets", set_targets, methods=["POST"]),
        Route("/regions/{region:str}/jobs/{job_id:str}/comms/network.json", network),
        Route("/regions/{region:str}/jobs/{job_id:str}/comms/export/{kind:str}", export),
        Route("/regions/{region:str}/datasets/{dataset_id:str}", dataset),
    ]
