"""What the handlers record is published at commit as the PND's integration events: the
answers in the batch's order under each record's label, a search's answer, one reconciliation
event per region."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from toex.pnd.events.v1 import events_pb2
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope
from toex_common.testing.fakes import principal
from toex_kernel.regions import Region
from toex_pnd.adapters import mapping
from toex_pnd.domain import commands
from toex_pnd.domain.model import Aged, Answer, Outcome, Reason, RegionFigures
from toex_pnd.service_layer import handlers
from toex_pnd.service_layer.ports import SearchAnswer

from .fakes import FakePnd, FakeUow

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
P = {"source_evaluation": "1", "intelligence_assessment": "B", "handling": "P", "handling_conditions": ""}
C = {**P, "handling": "C", "handling_conditions": "handler's consent"}
RES = principal("researcher.emsou", "researcher")
SUP = principal("supervisor.emsou", "supervisor")
JOB = "regions/EMSOU/jobs/j1"


def deps(*ids: str) -> tuple[handlers.Deps, FakeUow, FakePnd]:
    uow, pnd = FakeUow(), FakePnd()
    new_ids = iter(ids)
    return (
        handlers.Deps(uow=lambda: uow, pnd=pnd, clock=lambda: NOW, new_id=lambda: next(new_ids)),
        uow,
        pnd,
    )


def decoded(envelope: EventEnvelope, message: Any) -> Any:
    message.ParseFromString(envelope.payload)
    return message


async def test_every_answer_is_published_in_the_batchs_order_under_its_records_label() -> None:
    # Ids out of alphabetical order: the records are loaded in id order, sent in queue order.
    d, uow, pnd = deps("b", "a", "c")
    for grading in (P, C, P):
        await handlers.submit_intelligence(
            commands.SubmitIntelligence(RES, RES.region, {"phone": {"e164": "+447700900123"}}, grading, []),
            d,
        )
    await handlers.release_intelligence(commands.ReleaseIntelligence(SUP, Region.EMSOU, "a", "consented"), d)
    rejected = Answer("", Outcome.REJECTED, reasons=(Reason("INVALID", "entity.phone", "not on file"),))
    answers = {
        "b": Answer("", Outcome.ACCEPTED, "PND-9", 1),
        "a": rejected,
        "c": Answer("", Outcome.CONFLICT, pnd_version=4),
    }

    def answer(line: dict[str, Any]) -> Answer:
        found = answers[line["source_ref"].rsplit("/", 1)[-1]]
        return Answer(line["submission_id"], found.outcome, found.pnd_id, found.pnd_version, found.reasons)

    pnd.answer = answer
    assert uow.committed_events == []  # nothing recorded before the PND answered
    assert (await handlers.dispatch_once(commands.DispatchOnce(0, 1, 100), d)).answered == 3

    accepted, refused, conflict = uow.committed_events
    assert [e.subject for e in uow.committed_events] == [
        "toex.emsou.pnd.SubmissionAccepted",
        "toex.emsou.pnd.SubmissionRejected",
        "toex.emsou.pnd.SubmissionConflict",
    ]
    assert [e.headers["ce-subject"] for e in uow.committed_events] == [
        "regions/EMSOU/intelligence/b",
        "regions/EMSOU/intelligence/a",
        "regions/EMSOU/intelligence/c",
    ]
    assert [e.headers["toex-handling"] for e in uow.committed_events] == ["P", "C", "P"]
    first = decoded(accepted, events_pb2.SubmissionAccepted())
    assert (first.record, first.record_version, first.pnd_id) == ("regions/EMSOU/intelligence/b", 1, "PND-9")
    assert first.kind == pole_pb2.POLE_KIND_PHONE
    assert first.operation == sync_pb2.SUBMISSION_OPERATION_CREATE
    assert first.occur_time.ToDatetime(UTC) == NOW
    assert first.label.region == Region.EMSOU.to_proto()
    assert first.label.handling == security_pb2.HANDLING_CODE_P
    assert (first.job, first.submitted_by) == ("", RES.username)
    second = decoded(refused, events_pb2.SubmissionRejected())
    assert [(r.code, r.field) for r in second.reasons] == [("INVALID", "entity.phone")]
    assert second.label.handling == security_pb2.HANDLING_CODE_C
    assert decoded(conflict, events_pb2.SubmissionConflict()).pnd_version == 4


async def test_every_answer_names_the_records_job_and_who_made_the_change_it_answers() -> None:
    """What the tasking inbox routes by: the job's assignees, else the one who made the change."""
    d, uow, pnd = deps("j", "n")
    for_job = await handlers.submit_intelligence(
        commands.SubmitIntelligence(RES, RES.region, {"vehicle": {"vrm": "AB12CDE"}}, P, [], purpose=JOB),
        d,
    )
    no_job = await handlers.submit_intelligence(
        commands.SubmitIntelligence(RES, RES.region, {"phone": {"e164": "+447700900123"}}, P, []), d
    )
    assert (for_job.job, no_job.job) == (JOB, "")
    assert mapping.record_to_proto(for_job).job == JOB and mapping.record_to_proto(no_job).job == ""
    await handlers.dispatch_once(commands.DispatchOnce(0, 1, 100), d)  # both accepted
    # A supervisor corrects both (under no job: the record keeps the job it was made for).
    for record, entity in (
        (for_job, {"vehicle": {"vrm": "W0LGM5EF"}}),
        (no_job, {"phone": {"e164": "+447700900124"}}),
    ):
        await handlers.update_intelligence(
            commands.UpdateIntelligence(
                SUP, Region.EMSOU, record.id, entity, None, None, purpose="Op Kestrel"
            ),
            d,
        )
    pnd.answer = lambda line: (
        Answer(line["submission_id"], Outcome.REJECTED, reasons=(Reason("INVALID_VRM", "vehicle.vrm", "x"),))
        if line["source_ref"] == for_job.name
        else Answer(line["submission_id"], Outcome.CONFLICT, pnd_version=7)
    )
    await handlers.dispatch_once(commands.DispatchOnce(0, 1, 100), d)

    by_type: dict[str, list[EventEnvelope]] = {}
    for envelope in uow.committed_events:
        by_type.setdefault(envelope.subject.rsplit(".", 1)[-1], []).append(envelope)
    accepted = [decoded(e, events_pb2.SubmissionAccepted()) for e in by_type["SubmissionAccepted"]]
    assert {(a.record, a.job, a.submitted_by) for a in accepted} == {
        (for_job.name, JOB, RES.username),
        (no_job.name, "", RES.username),
    }
    [rejected] = [decoded(e, events_pb2.SubmissionRejected()) for e in by_type["SubmissionRejected"]]
    [conflict] = [decoded(e, events_pb2.SubmissionConflict()) for e in by_type["SubmissionConflict"]]
    assert (rejected.record, rejected.record_version) == (for_job.name, 2)
    assert (rejected.job, rejected.submitted_by) == (JOB, SUP.username)
    assert (conflict.record, conflict.job, conflict.submitted_by) == (no_job.name, "", SUP.username)


async def test_a_search_answer_is_published_with_a_label_its_results_allow() -> None:
    d, uow, pnd = deps("s1", "s2")
    result = {
        "source_record_id": "PND-1",
        "pnd_id": "PND-1",
        "pnd_version": 2,
        "kind": "VEHICLE",
        "entity": {"vehicle": {"vrm": "AB12CDE"}},
        "grading": P,
    }
    search = commands.SearchPnd(RES, RES.region, "VEHICLE", {"vrm": "ab12 cde"}, "Op Kestrel", 10)
    pnd.found = SearchAnswer([result], True)
    row, _ = await handlers.search_pnd(search, d)
    pnd.found = SearchAnswer([result, {**result, "pnd_id": "PND-2", "grading": C}], False)
    await handlers.search_pnd(search, d)

    [all_p, one_c] = uow.committed_events
    assert all_p.subject == "toex.emsou.pnd.PndResultReceived"
    assert all_p.headers["ce-subject"] == f"regions/EMSOU/pndSearches/{row.id}"
    first = decoded(all_p, events_pb2.PndResultReceived())
    assert first.search.vrm == "AB12CDE" and first.search.purpose == "Op Kestrel"
    assert [r.pnd_id for r in first.results] == ["PND-1"] and first.truncated
    assert first.label.handling == security_pb2.HANDLING_CODE_P
    assert first.search.job == "" and mapping.search_to_proto(row).job == ""
    second = decoded(one_c, events_pb2.PndResultReceived())
    assert len(second.results) == 2 and not second.truncated
    assert second.label.handling == security_pb2.HANDLING_CODE_C


async def test_a_reconciliation_publishes_one_event_per_region_in_order() -> None:
    d, uow, pnd = deps("rep1")
    pnd.holding_chunks = [b"regions/EMSOU/intelligence/x\t1\tf\tPND-1\n"]
    uow.reconciliations.figures = [
        RegionFigures(Region.EMSOU, 3, 2, {"MISSING": Aged(1, 30.0, 0)}),
        RegionFigures(Region.ERSOU, 5, 5),
    ]
    report, _ = await handlers.run_reconciliation(commands.RunReconciliation("supervisor.emsou", False), d)

    assert [e.subject for e in uow.committed_events] == [
        "toex.emsou.pnd.ReconciliationCompleted",
        "toex.ersou.pnd.ReconciliationCompleted",
    ]
    emsou, ersou = (decoded(e, events_pb2.ReconciliationCompleted()) for e in uow.committed_events)
    assert emsou.reconciliation == report.name == "reconciliations/rep1" and not emsou.scheduled
    assert (emsou.summary.local_records, emsou.summary.in_sync, emsou.summary.missing.count) == (3, 2, 1)
    assert (ersou.summary.local_records, ersou.summary.missing.count) == (5, 0)
    assert emsou.label.handling == ersou.label.handling == security_pb2.HANDLING_CODE_P
    assert ersou.label.region == Region.ERSOU.to_proto()
    assert emsou.occur_time.ToDatetime(UTC) == report.completed_at


async def test_a_search_made_for_a_job_names_it_in_the_answer_and_the_event() -> None:
    d, uow, pnd = deps("s1")
    pnd.found = SearchAnswer([], False)
    row, _ = await handlers.search_pnd(
        commands.SearchPnd(RES, RES.region, "PHONE", {"phone_e164": "07700 900123"}, JOB, 10), d
    )
    assert row.job == JOB and mapping.search_to_proto(row).job == JOB
    [event] = uow.committed_events
    assert decoded(event, events_pb2.PndResultReceived()).search.job == JOB
