"""Review queue, reviewer decisions that stick, merges and splits with their history."""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex_common.testing.streams import stream_messages
from toex_entity.domain.matching import Thresholds
from toex_entity.service_layer import handlers

from .test_entity_service import decode, md, person, unique_person

pytestmark = pytest.mark.integration

ANALYST = "analyst.emsou"
NC = "national_coordinator.national"


async def _review_everything(entity_service) -> None:
    """Nothing links automatically: every candidate above the review threshold is queued."""
    deps = entity_service.app.deps
    async with deps.uow() as uow:
        model = await deps.models.current(uow)
    await handlers.save_model(
        dataclasses.replace(model, thresholds=Thresholds(auto_link=1.01, review=0.5)), deps
    )


async def resolve(stub, token, record, region="EMSOU"):  # type: ignore[no-untyped-def]
    return await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent=f"regions/{region}", record=record), metadata=md(token)
    )


async def test_rejected_pair_is_never_linked_again_and_confirm_merges(entity_service) -> None:
    await _review_everything(entity_service)
    stub, token = entity_service.stub, entity_service.token(ANALYST)
    fields = unique_person()
    a_record = person(uuid.uuid4().hex, **fields)
    a_record.person.identifiers.append(
        pb.OfficialIdentifier(scheme="PNC", value=f"PNC{uuid.uuid4().hex[:8]}")
    )
    a = await resolve(stub, token, a_record)
    dob = str(fields["birth_date"])
    b_record = person(
        uuid.uuid4().hex, "pnd", **dict(fields, given_name="Dan", birth_date=dob[:8] + dob[9] + dob[8])
    )
    b_record.person.identifiers.append(
        pb.OfficialIdentifier(scheme="PND", value=f"PND{uuid.uuid4().hex[:8]}")
    )
    b = await resolve(stub, token, b_record)
    assert b.outcome == pb.RESOLVE_OUTCOME_QUEUED_FOR_REVIEW
    assert b.entity.name != a.entity.name
    assert b.explanation.decision == pb.MATCH_DECISION_REVIEW
    [task_name] = b.review_tasks

    listed = await stub.ListReviewTasks(pb.ListReviewTasksRequest(parent="regions/EMSOU"), metadata=md(token))
    task = next(t for t in listed.review_tasks if t.name == task_name)
    assert task.record == b.record.name and task.candidate_record == a.record.name
    assert task.explanation.contributions and task.state == pb.REVIEW_STATE_OPEN

    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await stub.DecideReview(
            pb.DecideReviewRequest(name=task_name, decision=pb.REVIEW_DECISION_REJECT), metadata=md(token)
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    decided = await stub.DecideReview(
        pb.DecideReviewRequest(
            name=task_name, decision=pb.REVIEW_DECISION_REJECT, reason="different fathers named"
        ),
        metadata=md(token),
    )
    assert decided.review_task.state == pb.REVIEW_STATE_REJECTED
    assert decided.review_task.decided_by == ANALYST

    # A record carrying both official identifiers would join the two deterministically:
    # the rejection holds, the entities stay apart.
    bridge = person(uuid.uuid4().hex, "niche2", **fields)
    bridge.person.identifiers.extend([a_record.person.identifiers[0], b_record.person.identifiers[0]])
    bridged = await resolve(stub, token, bridge)
    assert bridged.outcome == pb.RESOLVE_OUTCOME_LINKED_DETERMINISTIC
    a_now = (await stub.GetEntity(pb.GetEntityRequest(name=a.entity.name), metadata=md(token))).entity
    b_now = (await stub.GetEntity(pb.GetEntityRequest(name=b.entity.name), metadata=md(token))).entity
    assert a_now.name != b_now.name
    # ...and nobody can merge them by hand either.
    with pytest.raises(grpc.aio.AioRpcError) as kept_apart:
        await stub.MergeEntities(
            pb.MergeEntitiesRequest(name=a.entity.name, others=[b.entity.name], reason="looks the same"),
            metadata=md(token),
        )
    assert kept_apart.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    explained = await stub.ExplainMatch(
        pb.ExplainMatchRequest(record_a=a.record.name, record_b=b.record.name), metadata=md(token)
    )
    assert explained.explanation.decision == pb.MATCH_DECISION_REVIEWER_REJECTED

    # Confirming another queued pair links the records, recorded as the reviewer's merge.
    other = unique_person()
    c = await resolve(stub, token, person(uuid.uuid4().hex, **other))
    d = await resolve(stub, token, person(uuid.uuid4().hex, "pnd", **dict(other, given_name="Danny")))
    [confirm_task] = d.review_tasks
    confirmed = await stub.DecideReview(
        pb.DecideReviewRequest(
            name=confirm_task, decision=pb.REVIEW_DECISION_CONFIRM, reason="same custody photo"
        ),
        metadata=md(token),
    )
    assert confirmed.review_task.state == pb.REVIEW_STATE_CONFIRMED
    assert confirmed.entity.name == c.entity.name
    assert {r.name for r in confirmed.entity.records} == {c.record.name, d.record.name}
    merge_entry = [h for h in confirmed.entity.history if h.kind == pb.CHANGE_KIND_MERGED]
    assert merge_entry[0].decided_by == ANALYST and "same custody photo" in merge_entry[0].reason


async def test_merge_redirect_undo_and_split_restore_exactly(entity_service, nats_server) -> None:
    stub, token = entity_service.stub, entity_service.token(ANALYST)
    g = await resolve(stub, token, person(uuid.uuid4().hex, **unique_person("g")))
    h1 = await resolve(stub, token, person(uuid.uuid4().hex, **unique_person("h")))
    h_fields = unique_person("k")
    h2 = await resolve(stub, token, person(uuid.uuid4().hex, **h_fields))
    # h2's entity gets a second record, so the undo has two records to put back.
    h3 = await resolve(stub, token, person(uuid.uuid4().hex, "pnd", **h_fields))
    assert h3.entity.name == h2.entity.name

    merged = await stub.MergeEntities(
        pb.MergeEntitiesRequest(
            name=g.entity.name, others=[h1.entity.name, h2.entity.name], reason="one person, three nominals"
        ),
        metadata=md(token),
    )
    assert {r.name for r in merged.entity.records} == {
        g.record.name,
        h1.record.name,
        h2.record.name,
        h3.record.name,
    }
    assert set(merged.entity.merged_ids) == {h1.entity.name, h2.entity.name}
    redirected = (await stub.GetEntity(pb.GetEntityRequest(name=h2.entity.name), metadata=md(token))).entity
    assert redirected.name == g.entity.name and redirected.requested_name == h2.entity.name

    undone = await stub.SplitEntity(
        pb.SplitEntityRequest(name=g.entity.name, undo_change=merged.change_id, reason="wrong merge"),
        metadata=md(token),
    )
    assert [r.name for r in undone.entity.records] == [g.record.name]
    restored = {e.name: {r.name for r in e.records} for e in undone.split_entities}
    assert restored == {h1.entity.name: {h1.record.name}, h2.entity.name: {h2.record.name, h3.record.name}}
    history = undone.entity.history
    merge_entry = next(c for c in history if c.change_id == merged.change_id)
    assert merge_entry.undone and merge_entry.reason == "one person, three nominals"
    assert any(c.kind == pb.CHANGE_KIND_MERGE_UNDONE and c.reason == "wrong merge" for c in history)
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub.SplitEntity(
            pb.SplitEntityRequest(name=g.entity.name, undo_change=merged.change_id, reason="again"),
            metadata=md(token),
        )
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Split one record out: a new entity, and the two never rejoin automatically.
    split = await stub.SplitEntity(
        pb.SplitEntityRequest(
            name=h2.entity.name, records=[h3.record.name], reason="different DOB on custody record"
        ),
        metadata=md(token),
    )
    assert [r.name for r in split.entity.records] == [h2.record.name]
    [new_entity] = split.split_entities
    assert [r.name for r in new_entity.records] == [h3.record.name]
    explained = await stub.ExplainMatch(
        pb.ExplainMatchRequest(record_a=h2.record.name, record_b=h3.record.name), metadata=md(token)
    )
    assert explained.explanation.decision == pb.MATCH_DECISION_REVIEWER_REJECTED

    def merges_of(events: list) -> list:
        return [m for m in decode(events, ev.EntitiesMerged) if m.change_id == merged.change_id]

    def splits_of(events: list) -> list:
        return [s for s in decode(events, ev.EntitySplit) if s.entity in (g.entity.name, h2.entity.name)]

    events = await stream_messages(
        nats_server.url,
        "toex.emsou.entity.>",
        until=lambda found: bool(merges_of(found)) and len(splits_of(found)) >= 2,
    )
    merges = merges_of(events)
    assert merges and merges[0].decided_by == ANALYST
    splits = splits_of(events)
    assert {s.undone_change for s in splits} == {merged.change_id, ""}


async def test_merge_needs_sight_of_every_record(entity_service) -> None:
    stub = entity_service.stub
    fields = unique_person("m")
    mine = await resolve(stub, entity_service.token(ANALYST), person(uuid.uuid4().hex, **fields))
    theirs = await resolve(
        stub, entity_service.token("analyst.ersou"), person(uuid.uuid4().hex, **unique_person("n")), "ERSOU"
    )
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.MergeEntities(
            pb.MergeEntitiesRequest(name=mine.entity.name, others=[theirs.entity.name], reason="x"),
            metadata=md(entity_service.token(ANALYST)),
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    merged = await stub.MergeEntities(
        pb.MergeEntitiesRequest(
            name=mine.entity.name, others=[theirs.entity.name], reason="national decision"
        ),
        metadata=md(entity_service.token(NC)),
    )
    assert len(merged.entity.records) == 2
    # EMSOU's analyst now sees the entity, their own record, and that ERSOU holds one.
    seen = (
        await stub.GetEntity(
            pb.GetEntityRequest(name=mine.entity.name), metadata=md(entity_service.token(ANALYST))
        )
    ).entity
    assert [r.name for r in seen.records] == [mine.record.name]
    assert [d.contact_role for d in seen.other_regions] and "ERSOU" in seen.other_regions[0].contact_role
