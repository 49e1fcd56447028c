"""gRPC servicer: translate requests to commands, call the handler, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import duration_pb2
from grpc import aio
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex_common import pagination
from toex_common.context import current_principal, current_purpose
from toex_common.uow import idempotency_of
from toex_kernel import names
from toex_kernel.errors import InvalidArgument, NotFound, Violations
from toex_kernel.regions import Region
from toex_kernel.timestamps import optional_timestamp

from toex_entity.adapters import exports, mapping
from toex_entity.domain import commands
from toex_entity.domain.model import ChangeKind, Explanation, Outcome, ResolveResult
from toex_entity.service_layer import handlers, learning, mules, relations

RECORD = "regions/{region}/records/{record}"
ENTITY = "entities/{entity}"
REVIEW = "regions/{region}/reviewTasks/{task}"
MAX_STREAM = 50_000

_OUTCOME = {
    Outcome.NEW_ENTITY: pb.RESOLVE_OUTCOME_NEW_ENTITY,
    Outcome.LINKED_DETERMINISTIC: pb.RESOLVE_OUTCOME_LINKED_DETERMINISTIC,
    Outcome.LINKED_PROBABILISTIC: pb.RESOLVE_OUTCOME_LINKED_PROBABILISTIC,
    Outcome.QUEUED_FOR_REVIEW: pb.RESOLVE_OUTCOME_QUEUED_FOR_REVIEW,
    Outcome.UNCHANGED: pb.RESOLVE_OUTCOME_UNCHANGED,
}
_CHANGE = {
    ChangeKind.CREATED: pb.CHANGE_KIND_CREATED,
    ChangeKind.RECORD_LINKED: pb.CHANGE_KIND_RECORD_LINKED,
    ChangeKind.MERGED: pb.CHANGE_KIND_MERGED,
    ChangeKind.SPLIT: pb.CHANGE_KIND_SPLIT,
    ChangeKind.MERGE_UNDONE: pb.CHANGE_KIND_MERGE_UNDONE,
    ChangeKind.SPLIT_UNDONE: pb.CHANGE_KIND_SPLIT_UNDONE,
}


def _region(parent: str, field: str = "parent") -> Region:
    parts = names.parse(parent, "regions/{region}", field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region


def _record_ref(name: str, field: str) -> tuple[Region, str]:
    parts = names.parse(name, RECORD, field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region, parts["record"]


def _entity_id(name: str, field: str = "name") -> str:
    return names.parse(name, ENTITY, field)["entity"]


def incoming(region: Region, record: pb.SourceRecord, prefix: str = "record") -> commands.IncomingRecord:
    """The record as submitted; the handler validates it (grading, content, identifiers)."""
    problems = Violations()
    grading = mapping.grading_from_proto(record.grading, Violations(), f"{prefix}.grading")
    record_type, content = mapping.content_from_proto(record)
    if record.ref.record_type and record_type is not None:
        if mapping.record_type_from_proto(record.ref.record_type) is not record_type:
            problems.add(f"{prefix}.ref.record_type", "does not match the content set")
    problems.raise_if_any()
    return commands.IncomingRecord(
        region=region,
        source_system=record.ref.source_system,
        source_record_id=record.ref.source_record_id,
        record_type=record_type,
        grading=grading,
        content=content,
    )


def entity_to_proto(view: handlers.EntityView, contact_role: object) -> pb.Entity:
    role: object = contact_role
    records = view.records
    ids = records[0].identifiers if records else None
    for record in records[1:]:
        ids = ids.merged(record.identifiers) if ids else record.identifiers
    history: list[pb.EntityChange] = []
    for record in records:
        link = view.links.get(record.id)
        if link is None:
            continue
        history.append(
            pb.EntityChange(
                change_id=f"link-{record.id}",
                kind=pb.CHANGE_KIND_CREATED if link.method == "NEW" else pb.CHANGE_KIND_RECORD_LINKED,  # type: ignore[arg-type]
                entities=[],
                records=[record.name],
                decided_by=link.decided_by,
                # Rendered from the stored comparison, never a stored text: rows written before
                # explanations were stored without values still carry them in their text.
                reason=Explanation.from_json(link.explanation).value_free_text() if link.explanation else "",
                change_time=mapping.ts(link.at),
            )
        )
    visible = {r.id: r for r in records}
    # A caller who sees only part of the entity (or reads it under a job grant) is told what
    # happened and when, never who decided it, why (reasons name records) or which other
    # entities were involved: those may be another region's, or outside the job (deconfliction
    # says only that another region holds records).
    partial = view.partial
    for change in view.history:
        history.append(
            pb.EntityChange(
                change_id=change.id,
                kind=_CHANGE[change.kind],  # type: ignore[arg-type]
                entities=[]
                if partial
                else [
                    f"entities/{e}"
                    for e in (change.others if change.entity_id == view.entity.id else (change.entity_id,))
                ],
                records=[visible[m.record_id].name for m in change.moves if m.record_id in visible],
                decided_by="" if partial else change.decided_by,
                reason="" if partial else change.reason,
                change_time=mapping.ts(change.at),
                undone=bool(change.undone_by),
            )
        )
    history.sort(key=lambda c: (c.change_time.seconds, c.change_time.nanos))
    return pb.Entity(
        name=view.entity.name,
        entity_type=mapping.record_type_to_proto(view.entity.entity_type),  # type: ignore[arg-type]
        display_name=records[0].label() if records else "",
        records=[mapping.record_to_proto(r) for r in records],
        identifiers=mapping.identifiers_to_proto(ids) if ids else None,
        other_regions=[
            pb.Deconfliction(region=r.to_proto(), contact_role=role(r))  # type: ignore[arg-type,operator]
            for r in view.other_regions
        ],
        merged_ids=[] if partial else [f"entities/{e}" for e in view.merged_ids],
        history=history,
        create_time=mapping.ts(view.entity.created_at),
        update_time=mapping.ts(view.entity.updated_at),
        requested_name=f"entities/{view.requested_id}" if view.requested_id != view.entity.id else "",
        relations=[mapping.stored_relation_to_proto(r) for r in view.relations],
    )


class EntityServicer(entity_pb2_grpc.EntityResolutionServiceServicer):
    def __init__(self, deps: handlers.Deps, learner: learning.Learner | None = None) -> None:
        self.deps = deps
        self.learner = learner

    def _entity(self, view: handlers.EntityView) -> pb.Entity:
        return entity_to_proto(view, self.deps.contact_role)

    async def ResolveRecord(
        self, request: pb.ResolveRecordRequest, context: aio.ServicerContext
    ) -> pb.ResolveRecordResponse:
        region = _region(request.parent)
        principal, purpose = current_principal(), current_purpose()
        results = await handlers.resolve_records(
            commands.ResolveRecords(
                principal,
                [incoming(region, request.record)],
                single=True,
                idempotency=idempotency_of(request),
                purpose=purpose,
            ),
            self.deps,
        )
        result = results[0]
        view = await handlers.get_entity(commands.GetEntity(principal, result.entity_id, purpose), self.deps)
        record = next((r for r in view.records if r.id == result.record_id), None)
        return pb.ResolveRecordResponse(
            record=mapping.record_to_proto(record) if record else None,
            entity=self._entity(view),
            outcome=_OUTCOME[result.outcome],  # type: ignore[arg-type]
            explanation=_explanation_for_caller(result),
            review_tasks=result.review_tasks,
            deconflictions=[
                pb.Deconfliction(region=r.to_proto(), contact_role=self.deps.contact_role(r))  # type: ignore[arg-type]
                for r in result.deconflictions
            ],
        )

    async def IngestRecords(
        self, request_iterator: AsyncIterator[pb.IngestRecordsRequest], context: aio.ServicerContext
    ) -> pb.IngestRecordsResponse:
        principal = current_principal()
        items: list[commands.IncomingRecord] = []
        refused: dict[int, str] = {}
        source_ids: list[str] = []
        async for request in request_iterator:
            index = len(source_ids)
            if index >= MAX_STREAM:
                raise InvalidArgument.field("record", f"send at most {MAX_STREAM} records per stream")
            source_ids.append(request.record.ref.source_record_id)
            try:
                items.append(incoming(_region(request.parent), request.record))
            except InvalidArgument as exc:
                refused[index] = exc.message
        results = iter(
            await handlers.resolve_records(
                commands.ResolveRecords(principal, items, single=False, purpose=current_purpose()),
                self.deps,
            )
        )
        response = pb.IngestRecordsResponse(received_count=len(source_ids))
        for index, source_id in enumerate(source_ids):
            if index in refused:
                response.results.append(
                    pb.IngestResult(index=index, source_record_id=source_id, error=refused[index])
                )
                response.error_count += 1
                continue
            result: ResolveResult = next(results)
            item = pb.IngestResult(index=index, source_record_id=source_id)
            if result.error:
                item.error = result.error
                response.error_count += 1
            else:
                item.record = f"regions/{result.region}/records/{result.record_id}"
                item.entity = f"entities/{result.entity_id}"
                item.outcome = _OUTCOME[result.outcome]  # type: ignore[assignment]
                if result.outcome is Outcome.NEW_ENTITY:
                    response.new_entity_count += 1
                elif result.outcome in (Outcome.LINKED_DETERMINISTIC, Outcome.LINKED_PROBABILISTIC):
                    response.linked_count += 1
                elif result.outcome is Outcome.QUEUED_FOR_REVIEW:
                    response.review_count += 1
            response.results.append(item)
        return response

    async def GetEntity(
        self, request: pb.GetEntityRequest, context: aio.ServicerContext
    ) -> pb.GetEntityResponse:
        view = await handlers.get_entity(
            commands.GetEntity(current_principal(), _entity_id(request.name), current_purpose()), self.deps
        )
        return pb.GetEntityResponse(entity=self._entity(view))

    async def SearchEntities(
        self, request: pb.SearchEntitiesRequest, context: aio.ServicerContext
    ) -> pb.SearchEntitiesResponse:
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        size = min(request.page_size or 20, 100)
        principal = current_principal()
        key = pagination.fingerprint(
            principal.subject,
            request.name,
            request.birth_date,
            request.phone_number,
            request.vrm,
            request.handle,
            request.email,
            size,
        )
        offset = pagination.decode_offset(request.page_token, key)
        views, more = await handlers.search_entities(
            commands.SearchEntities(
                principal,
                name=request.name,
                birth_date=request.birth_date,
                phone_number=request.phone_number,
                vrm=request.vrm,
                handle=request.handle,
                email=request.email,
                limit=size,
                offset=offset,
                purpose=current_purpose(),
            ),
            self.deps,
        )
        response = pb.SearchEntitiesResponse(
            matches=[pb.EntityMatch(entity=self._entity(v), score=s) for v, s in views]
        )
        if more:
            response.next_page_token = pagination.encode(str(offset + size), "", key)
        return response

    async def ExplainMatch(
        self, request: pb.ExplainMatchRequest, context: aio.ServicerContext
    ) -> pb.ExplainMatchResponse:
        explanation = await handlers.explain_match(
            commands.ExplainMatch(
                current_principal(),
                _record_ref(request.record_a, "record_a"),
                _record_ref(request.record_b, "record_b"),
                current_purpose(),
            ),
            self.deps,
        )
        return pb.ExplainMatchResponse(explanation=mapping.explanation_to_proto(explanation))

    async def ListReviewTasks(
        self, request: pb.ListReviewTasksRequest, context: aio.ServicerContext
    ) -> pb.ListReviewTasksResponse:
        parts = names.parse(request.parent or "regions/-", "regions/{region}", "parent")
        region = names.parse_region(parts["region"], "parent", allow_all=True)
        size = pagination.page_size(request.page_size)
        state = mapping.review_state_from_proto(request.state)
        principal = current_principal()
        key = pagination.fingerprint(principal.subject, request.parent, state, size)
        after = pagination.decode_after(request.page_token, key)
        tasks, more = await handlers.list_review_tasks(
            commands.ListReviewTasks(principal, region, state, size, after, current_purpose()), self.deps
        )
        response = pb.ListReviewTasksResponse(
            review_tasks=[mapping.review_to_proto(t, a, b) for t, a, b in tasks]
        )
        if more and tasks:
            last = tasks[-1][0]
            response.next_page_token = pagination.encode(last.created_at.isoformat(), last.id, key)
        return response

    async def DecideReview(
        self, request: pb.DecideReviewRequest, context: aio.ServicerContext
    ) -> pb.DecideReviewResponse:
        parts = names.parse(request.name, REVIEW, "name")
        region = names.parse_region(parts["region"], "name")
        assert region is not None
        if request.decision not in (pb.REVIEW_DECISION_CONFIRM, pb.REVIEW_DECISION_REJECT):
            raise InvalidArgument.field("decision", "CONFIRM or REJECT")
        principal = current_principal()
        task, entity_a, entity_b, _ = await handlers.decide_review(
            commands.DecideReview(
                principal,
                region,
                parts["task"],
                request.decision == pb.REVIEW_DECISION_CONFIRM,
                request.reason,
                idempotency_of(request),
                current_purpose(),
            ),
            self.deps,
        )
        view = await handlers.get_entity(
            commands.GetEntity(principal, entity_a, current_purpose()), self.deps
        )
        return pb.DecideReviewResponse(
            review_task=mapping.review_to_proto(task, entity_a, entity_b), entity=self._entity(view)
        )

    async def MergeEntities(
        self, request: pb.MergeEntitiesRequest, context: aio.ServicerContext
    ) -> pb.MergeEntitiesResponse:
        view, change_id = await handlers.merge(
            commands.MergeEntities(
                current_principal(),
                _entity_id(request.name),
                [_entity_id(o, f"others[{i}]") for i, o in enumerate(request.others)],
                request.reason,
                idempotency_of(request),
                current_purpose(),
            ),
            self.deps,
        )
        return pb.MergeEntitiesResponse(entity=self._entity(view), change_id=change_id)

    async def SplitEntity(
        self, request: pb.SplitEntityRequest, context: aio.ServicerContext
    ) -> pb.SplitEntityResponse:
        view, split_off, change_id = await handlers.split(
            commands.SplitEntity(
                current_principal(),
                _entity_id(request.name),
                [_record_ref(r, f"records[{i}]") for i, r in enumerate(request.records)],
                request.undo_change.strip(),
                request.reason,
                idempotency_of(request),
                current_purpose(),
            ),
            self.deps,
        )
        return pb.SplitEntityResponse(
            entity=self._entity(view),
            split_entities=[self._entity(v) for v in split_off],
            change_id=change_id,
        )

    async def RecordRelation(
        self, request: pb.RecordRelationRequest, context: aio.ServicerContext
    ) -> pb.RecordRelationResponse:
        region = _region(request.parent)
        r = request.relation
        problems = Violations()
        grading = mapping.grading_from_proto(r.grading, problems, "relation.grading")
        subject = _entity_id(r.subject, "relation.subject") if r.subject else ""
        target = _entity_id(r.target, "relation.target") if r.target else ""
        problems.raise_if_any()
        item = relations.RelationInput(
            region=region,
            kind=mapping.relation_kind_from_proto(r.kind),
            subject=subject,
            target=target,
            source_system=r.source_system,
            source_record_id=r.source_record_id,
            grading=grading,
            valid_from=r.valid_from,
            valid_to=r.valid_to,
            sort_code=r.account.sort_code,
            account_number=r.account.account_number,
            iban=r.account.iban,
            postcode=r.address.postcode,
            premises=r.address.premises,
        )
        done = await relations.record_relation(current_principal(), item, self.deps.uow, self.deps.clock())
        return pb.RecordRelationResponse(
            relation=mapping.relation_to_proto(done.relation),
            created=done.created,
            account_checked=done.account_checked,
        )

    async def AnalyseMules(
        self, request: pb.AnalyseMulesRequest, context: aio.ServicerContext
    ) -> pb.AnalyseMulesResponse:
        region = _region(request.parent)
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        size = min(request.page_size or 200, 1000)
        report = await mules.analyse_mules(current_principal(), region, self.deps.uow, self.deps.clock())
        return mapping.mule_report_to_proto(report, size)

    async def GetNeighbourhood(
        self, request: pb.GetNeighbourhoodRequest, context: aio.ServicerContext
    ) -> pb.GetNeighbourhoodResponse:
        entity_id = _entity_id(request.name)
        graph = await handlers.get_neighbourhood(
            commands.GetNeighbourhood(
                current_principal(),
                entity_id,
                depth=request.depth or 1,
                max_nodes=request.max_nodes or 100,
                purpose=current_purpose(),
            ),
            self.deps,
        )
        out = mapping.neighbourhood_to_proto(graph)
        if request.format == pb.NEIGHBOURHOOD_FORMAT_GRAPHML:
            out.content, out.filename = (
                exports.neighbourhood_graphml(graph),
                f"neighbourhood-{entity_id}.graphml",
            )
        elif request.format == pb.NEIGHBOURHOOD_FORMAT_I2_LINK_CSV:
            out.content, out.filename = exports.neighbourhood_i2(graph), f"neighbourhood-{entity_id}-i2.csv"
        return out

    async def GetLearningStatus(
        self, request: pb.GetLearningStatusRequest, context: aio.ServicerContext
    ) -> pb.GetLearningStatusResponse:
        if self.learner is None:
            raise NotFound("this installation does not learn its model")
        status = await self.learner.status()
        return pb.GetLearningStatusResponse(
            person_records=status.person_records,
            records_at_estimate=status.records_at_estimate,
            estimate_pending=status.estimate_pending,
            estimating=status.estimating,
            active_model=status.active_model,
            reresolve_model=status.reresolve_model,
            reresolve_scanned=status.reresolve_scanned,
            reresolve_merged=status.reresolve_merged,
            reresolve_split=status.reresolve_split,
            reresolve_done=status.reresolve_done,
            settled=status.settled,
            last_rejected_model=status.last_rejected,
            estimate_trigger=status.estimate_trigger,
            last_estimate_time=optional_timestamp(status.last_estimated_at),
            next_scheduled_estimate_time=optional_timestamp(status.next_scheduled_at),
            schedule=duration_pb2.Duration(seconds=int(status.schedule_seconds)),
        )


def _explanation_for_caller(result: ResolveResult) -> pb.MatchExplanation | None:
    """Explanations name both records and their values; the candidate may be a record the caller
    must not see (the handler says which): then only how each field compared is shown, and the
    candidate stays unnamed."""
    if result.explanation is None:
        return None
    hidden = set(result.hidden)
    explanation = mapping.explanation_to_proto(result.explanation, show_values=not hidden)
    assert explanation is not None
    if result.explanation.record_a in hidden:
        explanation.record_a = ""
    if result.explanation.record_b in hidden:
        explanation.record_b = ""
    return explanation
