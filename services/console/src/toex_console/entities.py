"""Entity pages: search, an entity with its records (provenance and 3x5x2 grading), relations and
history, the match explanation as a waterfall, and the review queue with confirm/reject, merge,
split and undo. Every call goes to the entity service with the signed-in person's token and
purpose; the service decides who sees and changes what, and its refusals are shown as they come."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import grpc
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex.type.v1 import security_pb2

from toex_console.app import REGION_CODES, Console, what_to_do
from toex_console.charts import Step, waterfall
from toex_console.formats import label, when
from toex_console.oidc import SignInFailed

PAGE_SIZE = 20
REVIEW_PAGE_SIZE = 10
MAX_REASON = 500

REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
}
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SEARCH_FIELDS = ("name", "birth_date", "phone_number", "vrm", "handle", "email")


def entity_service(console: Console) -> Any:
    stub = getattr(console, "_entity", None)
    if stub is None:
        stub = entity_pb2_grpc.EntityResolutionServiceStub(console.channel_to(console.settings.entity_addr))
        console._entity = stub  # type: ignore[attr-defined]
    return stub


# -- views ------------------------------------------------------------------------------------


def region_code(value: Any) -> str:
    return REGION_CODES.get(value) or str(value)


def _grade(enum: Any, prefix: str) -> dict[int, str]:
    return {n: name.removeprefix(prefix) if n else "?" for name, n in enum.items()}


_SOURCE_GRADES = _grade(pb.SourceEvaluation, "SOURCE_EVALUATION_")
_ASSESSMENT_GRADES = _grade(pb.IntelligenceAssessment, "INTELLIGENCE_ASSESSMENT_")


def grading_code(grading: Any) -> str:
    """3x5x2 as people write it: "2BP" (source 1-3, assessment A-E, handling P or C; C when not set);
    "not graded" when nothing was."""
    source, assessment = grading.source_evaluation, grading.intelligence_assessment
    if not source and not assessment:
        return "not graded"
    handling = "P" if grading.handling == security_pb2.HANDLING_CODE_P else "C"
    return _SOURCE_GRADES.get(source, "?") + _ASSESSMENT_GRADES.get(assessment, "?") + handling


def content_lines(record: Any) -> list[str]:
    """What a record says, one line per fact."""
    kind = record.WhichOneof("content")
    if kind == "person":
        p = record.person
        lines = [" ".join(part for part in (p.given_name, p.middle_names, p.surname) if part)]
        if p.birth_date:
            lines.append(f"born {p.birth_date}")
        if p.gender:
            lines.append(label(pb.Gender, p.gender, "GENDER_"))
        lines += [f"also known as {alias}" for alias in p.aliases]
        lines += [", ".join([*a.lines, a.town, a.postcode]).strip(", ") for a in p.addresses]
        lines += [f"{i.scheme} {i.value}" for i in p.identifiers]
        lines += [f"phone {n}" for n in p.phone_numbers]
        lines += [f"email {e}" for e in p.emails]
        lines += [f"vehicle {v}" for v in p.vrms]
        lines += [f"{a.platform} {a.handle}" for a in p.online_accounts]
        return [line for line in lines if line]
    if kind == "phone":
        return [record.phone.e164 or record.phone.number]
    if kind == "vehicle":
        v = record.vehicle
        return [" ".join(part for part in (v.vrm, v.colour, v.make, v.model) if part)]
    if kind == "online_account":
        return [f"{record.online_account.platform} {record.online_account.handle}"]
    if kind == "email":
        return [record.email.address]
    return []


_LINE_BREAK = Markup("<br>")


def record_view(record: Any, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": record.name,
        "region": region_code(record.region),
        "type": label(pb.RecordType, record.ref.record_type, "RECORD_TYPE_"),
        "source": f"{record.ref.source_system} / {record.ref.source_record_id}",
        "grading": grading_code(record.grading),
        "conditions": record.grading.handling_conditions,
        "ingested": when(record, "ingest_time"),
        "ingested_by": record.ingested_by,
        # Cells the page writes as one value each (one escape, not one per part).
        "stored": f"{when(record, 'ingest_time')} by {record.ingested_by}",
        "job": record.job,
        # One line per fact, each escaped, joined here rather than by a loop in the template.
        "content": _LINE_BREAK.join(content_lines(record)),
    }


def entity_view(entity: Any) -> dict[str, Any]:
    ids = entity.identifiers
    identifiers = [*ids.e164_numbers, *ids.vrms, *ids.emails, *ids.handles, *ids.official_ids]
    records = [record_view(r, i) for i, r in enumerate(entity.records, 1)]
    return {
        "name": entity.name,
        "id": entity.name.removeprefix("entities/"),
        "type": label(pb.RecordType, entity.entity_type, "RECORD_TYPE_"),
        "display_name": entity.display_name or entity.name,
        "records": records,
        "regions": sorted({r["region"] for r in records}),
        "identifiers": identifiers,
        "other_regions": [
            {"region": region_code(d.region), "contact": d.contact_role} for d in entity.other_regions
        ],
        "merged_ids": list(entity.merged_ids),
        "requested_name": entity.requested_name,
        "history": [
            {
                "change_id": h.change_id,
                "kind": label(pb.ChangeKind, h.kind, "CHANGE_KIND_"),
                **_undo(h, entity.name),
                "entities": list(h.entities),
                "records": list(h.records),
                "involving": _involving(h),
                "decided_by": h.decided_by,
                "reason": h.reason,
                "when": when(h, "change_time"),
                "undone": h.undone,
            }
            for h in entity.history
        ],
        "relations": [relation_view(r, entity.name) for r in entity.relations],
        "created": when(entity, "create_time"),
        "updated": when(entity, "update_time"),
    }


def comparison(record_a: str, record_b: str) -> dict[str, str]:
    """A link to the match explanation of two records, named by their ids."""
    return {
        "href": f"/entities/explain?record_a={quote(record_a)}&record_b={quote(record_b)}",
        "text": f"{record_b.rsplit('/', 1)[-1]} with {record_a.rsplit('/', 1)[-1]}",
    }


def _undo(change: Any, own: str) -> dict[str, str]:
    """What undoing a history entry would undo ("merge" or "split"; "" when it cannot be), and
    the entity the undo is asked of: a merge at the entity merged into; a split at the entity
    split. On that entity's page the split's entry names none of its records (they left); on the
    page of the entity split off it names the records it took and the entity split, where the
    undo is asked. The entity service decides whether it may be done."""
    if change.undone:
        return {"undo": "", "undo_at": ""}
    if change.kind == pb.CHANGE_KIND_MERGED:
        return {"undo": "merge", "undo_at": own}
    if change.kind == pb.CHANGE_KIND_SPLIT:
        if not change.records:
            return {"undo": "split", "undo_at": own}
        if len(change.entities) == 1:
            return {"undo": "split", "undo_at": change.entities[0]}
    return {"undo": "", "undo_at": ""}


def _involving(change: Any) -> str:
    """A history entry's entities, then how many records: "entities/E9; 2 records"."""
    count = len(change.records)
    records = f"{count} record{'' if count == 1 else 's'}"
    return (
        f"{', '.join(change.entities)}; {records}"
        if change.entities and count
        else (", ".join(change.entities) or records)
    )


def relation_view(relation: Any, own: str) -> dict[str, Any]:
    other = relation.target if relation.subject == own else relation.subject
    span = " to ".join(part for part in (relation.valid_from, relation.valid_to) if part)
    kind = label(pb.RelationKind, relation.kind, "RELATION_KIND_")
    direction = "to" if relation.subject == own else "from"
    source = f"{relation.source_system} / {relation.source_record_id}"
    region = relation.region.removeprefix("regions/")
    recorded = when(relation, "record_time")
    return {
        "kind": kind,
        "direction": direction,
        "relation": f"{kind} ({direction})",
        "source_region": f"{source}, {region}",
        "recorded_line": f"{recorded} by {relation.recorded_by}" if relation.recorded_by else recorded,
        "other": other,
        "link": other if other.startswith("entities/") else "",
        "source": source,
        "grading": grading_code(relation.grading),
        "span": span,
        "region": region,
        "recorded": recorded,
        "recorded_by": relation.recorded_by,
    }


def explanation_view(explanation: Any) -> dict[str, Any]:
    steps = [Step(c.comparison.replace("_", " "), c.match_weight, c.level) for c in explanation.contributions]
    decision = label(pb.MatchDecision, explanation.decision, "MATCH_DECISION_")
    chart = waterfall(
        f"Match weight of {explanation.record_a} and {explanation.record_b}: "
        f"{explanation.match_weight:+.2f}, probability {explanation.probability:.3f}, {decision}",
        explanation.prior_match_weight,
        steps,
    )
    return {
        "record_a": explanation.record_a,
        "record_b": explanation.record_b,
        "prior": explanation.prior_match_weight,
        "weight": explanation.match_weight,
        "probability": explanation.probability,
        "decision": decision,
        "shared": list(explanation.shared_identifiers),
        "text": explanation.text,
        "model": explanation.model_version,
        "chart": chart if explanation.contributions else None,
        "rows": [
            {
                "comparison": c.comparison.replace("_", " "),
                "level": c.level,
                "weight": c.match_weight,
                "factor": c.bayes_factor,
                "a": c.value_a,
                "b": c.value_b,
            }
            for c in explanation.contributions
        ],
    }


def review_view(task: Any) -> dict[str, Any]:
    return {
        "name": task.name,
        "id": task.name.rsplit("/", 1)[-1],
        "record": task.record,
        "candidate_record": task.candidate_record,
        "entity": task.entity,
        "candidate_entity": task.candidate_entity,
        "state": label(pb.ReviewState, task.state, "REVIEW_STATE_"),
        "open": task.state == pb.REVIEW_STATE_OPEN,
        "decided_by": task.decided_by,
        "reason": task.reason,
        "opened": when(task, "create_time"),
        "decided": when(task, "decide_time"),
        "explanation": explanation_view(task.explanation) if task.HasField("explanation") else None,
    }


def refusal_text(exc: grpc.aio.AioRpcError, what: str) -> str:
    details = exc.details() or "the service refused the change"
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return f"Not accepted: {details}. Correct it and try again."
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        return (
            f"Refused: {details}. Nothing was changed; {what} is shown as it stands. "
            "If the change is needed, ask whoever the reason names, or your supervisor."
        )
    return f"Refused: {details}. Nothing was changed; {what} is shown as it stands."


def _reason(form: Any) -> str:
    return " ".join(str(form.get("reason", "")).split())[:MAX_REASON]


def _entity_name(text: str) -> str:
    text = text.strip().strip("/")
    return text if text.startswith("entities/") else f"entities/{text}"


# -- pages ------------------------------------------------------------------------------------


async def _call(console: Console, session: Any, method: str, message: Any) -> Any:
    return await getattr(entity_service(console), method)(
        message, metadata=await console.metadata(session), timeout=console.settings.grpc_timeout_seconds
    )


async def search(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    criteria = {key: " ".join(request.query_params.get(key, "").split()) for key in SEARCH_FIELDS}
    page_token = request.query_params.get("page_token", "")
    matches: list[dict[str, Any]] = []
    next_token = problem = ""
    searched = any(criteria.values())
    status = 200
    if session.purpose and searched:
        try:
            answer = await _call(
                console,
                session,
                "SearchEntities",
                pb.SearchEntitiesRequest(**criteria, page_size=PAGE_SIZE, page_token=page_token),
            )
            matches = [{**entity_view(m.entity), "score": m.score} for m in answer.matches]
            next_token = answer.next_page_token
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            problem = what_to_do(exc)
            status = 400 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 200
    query = urlencode({k: v for k, v in criteria.items() if v})
    return console.render(
        request,
        "entities.html",
        session,
        status=status,
        criteria=criteria,
        searched=searched,
        matches=matches,
        next_token=next_token,
        query=query,
        problem=problem,
    )


async def entity(request: Request) -> Response:
    """An entity's page; POST is one of its changes (merge, split, undo a merge)."""
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    name = f"entities/{request.path_params['entity_id']}"
    if not session.purpose:
        return console.render(request, "entity.html", session, entity=None, name=name, refusal="")
    refusal, status = "", 200
    if request.method == "POST":
        form = await request.form()
        if not console.csrf_ok(session, form):
            return PlainTextResponse("The form was stale: reload the page and try again.", status_code=403)
        action, reason, request_id = (
            str(form.get("action", "")),
            _reason(form),
            str(form.get("request_id", "")),
        )
        method: str
        message: Any
        if action == "merge":
            others = [_entity_name(o) for o in str(form.get("others", "")).replace(",", " ").split() if o]
            method, message = (
                "MergeEntities",
                pb.MergeEntitiesRequest(name=name, others=others, reason=reason, request_id=request_id),
            )
        elif action == "split":
            method, message = (
                "SplitEntity",
                pb.SplitEntityRequest(
                    name=name,
                    records=[str(r) for r in form.getlist("records")],
                    reason=reason,
                    request_id=request_id,
                ),
            )
        elif action == "undo":
            method, message = (
                "SplitEntity",
                pb.SplitEntityRequest(
                    name=name,
                    undo_change=str(form.get("change_id", "")),
                    reason=reason,
                    request_id=request_id,
                ),
            )
        else:
            return console.render(
                request,
                "error.html",
                session,
                status=400,
                title="That action is not known",
                advice="Use the buttons on the entity's page.",
                back=request.url.path,
                back_label="the entity",
            )
        try:
            answer = await _call(console, session, method, message)
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            refusals = {**REFUSALS, grpc.StatusCode.NOT_FOUND: 404}
            if exc.code() not in refusals:
                return console.failed(request, session, exc, back="/entities", back_label="entity search")
            # Shown with the entity as it stands (NOT_FOUND: an entity named to merge in); if the
            # caller cannot read this one, the read below answers NOT_FOUND and the refusal is
            # never shown.
            refusal, status = refusal_text(exc, "the entity"), refusals[exc.code()]
        else:
            target = answer.entity.name or name
            return RedirectResponse(f"/{target}", status_code=303)
    try:
        answer = await _call(console, session, "GetEntity", pb.GetEntityRequest(name=name))
    except SignInFailed:
        return console.sign_in_again(request)
    except grpc.aio.AioRpcError as exc:
        return console.failed(request, session, exc, back="/entities", back_label="entity search")
    view = entity_view(answer.entity)
    comparisons = (
        [comparison(view["records"][0]["name"], r["name"]) for r in view["records"][1:]]
        if view["type"] == "person"
        else []
    )
    return console.render(
        request,
        "entity.html",
        session,
        status=status,
        entity=view,
        name=name,
        # A merged id answers with the entity it was merged into, and says so.
        redirected_from=answer.entity.requested_name if answer.entity.name != name else "",
        comparisons=comparisons,
        refusal=refusal,
        request_id=uuid.uuid4().hex,
    )


async def explain(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    record_a = request.query_params.get("record_a", "").strip()
    record_b = request.query_params.get("record_b", "").strip()
    explanation = None
    if session.purpose and record_a and record_b:
        try:
            answer = await _call(
                console, session, "ExplainMatch", pb.ExplainMatchRequest(record_a=record_a, record_b=record_b)
            )
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            return console.failed(request, session, exc, back="/entities", back_label="entity search")
        explanation = explanation_view(answer.explanation)
    return console.render(
        request,
        "explain.html",
        session,
        record_a=record_a,
        record_b=record_b,
        explanation=explanation,
    )


async def review(request: Request) -> Response:
    """The review queue; POST confirms or rejects one task (the service decides who may)."""
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not session.signed_in:
        return console.sign_in_again(request)
    refusal, status, decided = "", 200, ""
    if request.method == "POST" and session.purpose:
        form = await request.form()
        if not console.csrf_ok(session, form):
            return PlainTextResponse("The form was stale: reload the page and try again.", status_code=403)
        decision = {"confirm": pb.REVIEW_DECISION_CONFIRM, "reject": pb.REVIEW_DECISION_REJECT}.get(
            str(form.get("decision", ""))
        )
        task = str(form.get("task", ""))
        if decision is None or not task.startswith("regions/"):
            return console.render(
                request,
                "error.html",
                session,
                status=400,
                title="That decision is not known",
                advice="Use the Confirm or Reject buttons of a task in the review queue.",
                back="/entities/review",
                back_label="the review queue",
            )
        try:
            answer = await _call(
                console,
                session,
                "DecideReview",
                pb.DecideReviewRequest(
                    name=task,
                    decision=decision,
                    reason=_reason(form),
                    request_id=str(form.get("request_id", "")),
                ),
            )
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in REFUSALS:
                return console.failed(
                    request, session, exc, back="/entities/review", back_label="the review queue"
                )
            refusal, status = f"{task}: " + refusal_text(exc, "the queue"), REFUSALS[exc.code()]
        else:
            outcome = label(pb.ReviewState, answer.review_task.state, "REVIEW_STATE_")
            target = answer.entity.name
            return RedirectResponse(
                f"/entities/review?decided={task.rsplit('/', 1)[-1]}&outcome={outcome}"
                + (f"&entity={target.removeprefix('entities/')}" if target else ""),
                status_code=303,
            )
    state_name = request.query_params.get("state", "")
    state = (
        pb.ReviewState.Value(state_name)
        if state_name in pb.ReviewState.keys()
        else pb.REVIEW_STATE_UNSPECIFIED
    )
    page_token = request.query_params.get("page_token", "")
    tasks: list[dict[str, Any]] = []
    next_token = problem = ""
    if session.purpose:
        try:
            answer = await _call(
                console,
                session,
                "ListReviewTasks",
                pb.ListReviewTasksRequest(
                    parent="regions/-", state=state, page_size=REVIEW_PAGE_SIZE, page_token=page_token
                ),
            )
            tasks = [review_view(t) for t in answer.review_tasks]
            next_token = answer.next_page_token
        except SignInFailed:
            return console.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            problem = what_to_do(exc)
    # What the last decision did, from this page's own redirect (checked: a crafted link shows nothing).
    task_id, outcome = request.query_params.get("decided", ""), request.query_params.get("outcome", "")
    decided_entity = request.query_params.get("entity", "")
    if SAFE_ID.match(task_id) and outcome in ("confirmed", "rejected", "superseded"):
        decided = f"Task {task_id} {outcome}."
    if not SAFE_ID.match(decided_entity):
        decided_entity = ""
    return console.render(
        request,
        "review.html",
        session,
        status=status,
        tasks=tasks,
        next_token=next_token,
        problem=problem,
        refusal=refusal,
        decided=decided,
        decided_entity=decided_entity,
        state=state_name,
        states=[n for n in pb.ReviewState.keys() if n != "REVIEW_STATE_UNSPECIFIED"],
        request_id=uuid.uuid4().hex,
    )


def routes() -> list[Route]:
    return [
        Route("/entities", search),
        Route("/entities/review", review, methods=["GET", "POST"]),
        Route("/entities/explain", explain),
        Route("/entities/{entity_id:str}", entity, methods=["GET", "POST"]),
    ]
