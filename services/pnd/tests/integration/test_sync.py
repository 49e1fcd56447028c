"""Submitting, syncing, answers, holds, searches and reconciliation, end to end."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from sqlalchemy import select
from toex.pnd.events.v1 import events_pb2
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex_common.db import audit_table
from toex_common.testing.streams import stream_messages

from .helpers import GRADED_C, eventually, person, phone, submit, update, vehicle

pytestmark = pytest.mark.integration

RES, SUP, NC = "researcher.emsou", "supervisor.emsou", "national_coordinator.national"


async def get(pnd, name: str, user: str = RES) -> pb.IntelligenceRecord:
    return (
        await pnd.stub.GetIntelligence(pb.GetIntelligenceRequest(name=name), metadata=pnd.md(user))
    ).record


async def wait_state(pnd, name: str, state: int) -> pb.IntelligenceRecord:
    async def check():
        record = await get(pnd, name)
        return record if record.sync_state == state else None

    found = await eventually(check)
    assert found, f"{name} never reached {sync_pb2.SyncState.Name(state)}"
    return found


async def test_records_reach_the_pnd_with_answers_holds_and_scope(pnd, nats_server) -> None:
    stub = pnd.stub
    # Accepted: a phone written any way is stored as E.164 and reaches the PND.
    created = (await stub.SubmitIntelligence(submit(phone("07700 900321")), metadata=pnd.md(RES))).record
    assert created.name.startswith("regions/EMSOU/intelligence/")
    assert created.entity.phone.e164 == "+447700900321"
    assert created.version == 1 and created.sync_state == sync_pb2.SYNC_STATE_PENDING
    synced = await wait_state(pnd, created.name, sync_pb2.SYNC_STATE_SYNCED)
    assert synced.pnd_id.startswith("PND-") and synced.pnd_version == 1
    assert synced.job == ""  # made for no job (its purpose named none)

    # Rejected by the PND's own rules (a foreign plate), with reasons; a correction syncs. The
    # plate is recorded for a job of the region (the purpose names it), which it keeps.
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    plate = (await stub.SubmitIntelligence(submit(vehicle("W0LGM5EF")), metadata=pnd.md(RES, job))).record
    assert plate.job == job
    rejected = await wait_state(pnd, plate.name, sync_pb2.SYNC_STATE_REJECTED)
    assert [r.code for r in rejected.rejection_reasons] == ["INVALID_VRM"] and rejected.job == job
    fixed = (
        await stub.UpdateIntelligence(update(plate.name, vehicle("AB12 CDE")), metadata=pnd.md(RES))
    ).record
    assert fixed.version == 2
    assert (await wait_state(pnd, plate.name, sync_pb2.SYNC_STATE_SYNCED)).pnd_version == 2

    # Held: code C waits for a supervisor; a researcher may not release it.
    held = (
        await stub.SubmitIntelligence(submit(person("Hale"), grading=GRADED_C), metadata=pnd.md(RES))
    ).record
    assert held.sync_state == sync_pb2.SYNC_STATE_HELD
    await asyncio.sleep(0.5)
    assert pnd.simulator.applied() and held.name not in {a["source_ref"] for a in pnd.simulator.applied()}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReleaseIntelligence(
            pb.ReleaseIntelligenceRequest(name=held.name, reason="ok"), metadata=pnd.md(RES)
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    released = (
        await stub.ReleaseIntelligence(
            pb.ReleaseIntelligenceRequest(name=held.name, reason="handler consented"), metadata=pnd.md(SUP)
        )
    ).record
    assert released.released_by == SUP and released.sync_state == sync_pb2.SYNC_STATE_PENDING
    await wait_state(pnd, held.name, sync_pb2.SYNC_STATE_SYNCED)

    # Conflict: another organisation changed the record on the PND to a newer version.
    pnd.simulator.bump(created.name, 5)
    await stub.UpdateIntelligence(update(created.name, phone("+447700900322")), metadata=pnd.md(RES))
    conflict = await wait_state(pnd, created.name, sync_pb2.SYNC_STATE_CONFLICT)
    history = (
        await stub.ListSubmissions(pb.ListSubmissionsRequest(parent=created.name), metadata=pnd.md(RES))
    ).submissions
    assert [s.state for s in history] == [pb.SUBMISSION_STATE_ACCEPTED, pb.SUBMISSION_STATE_CONFLICT]
    assert history[1].pnd_version == 5 and conflict.pnd_version == 1

    # Delete: the PND is asked to withdraw it.
    deleted = (
        await stub.DeleteIntelligence(pb.DeleteIntelligenceRequest(name=plate.name), metadata=pnd.md(RES))
    ).record
    assert deleted.HasField("delete_time") and deleted.version == 3
    await wait_state(pnd, plate.name, sync_pb2.SYNC_STATE_SYNCED)
    assert [a["operation"] for a in pnd.simulator.applied() if a["source_ref"] == plate.name] == [
        "UPDATE",
        "DELETE",
    ]

    # Scope: another region's researcher is told it does not exist.
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await get(pnd, created.name, "researcher.ersou")
    assert hidden.value.code() is grpc.StatusCode.NOT_FOUND
    listed = (
        await stub.ListIntelligence(
            pb.ListIntelligenceRequest(parent="regions/-"), metadata=pnd.md("researcher.ersou")
        )
    ).records
    assert listed == []

    # Events: one per answer, labelled with the record's region.
    def accepted_records(messages: list) -> set[str]:
        return {events_pb2.SubmissionAccepted.FromString(m.data).record for m in messages}

    def rejections_of_plate(messages: list) -> list:
        return [m for m in messages if events_pb2.SubmissionRejected.FromString(m.data).record == plate.name]

    accepted = await stream_messages(
        nats_server.url,
        "toex.emsou.pnd.SubmissionAccepted",
        until=lambda found: {created.name, plate.name} <= accepted_records(found),
    )
    assert {created.name, plate.name} <= accepted_records(accepted)
    [reject_msg] = rejections_of_plate(
        await stream_messages(
            nats_server.url,
            "toex.emsou.pnd.SubmissionRejected",
            until=lambda found: bool(rejections_of_plate(found)),
        )
    )
    refusal = events_pb2.SubmissionRejected.FromString(reject_msg.data)
    assert refusal.reasons[0].code == "INVALID_VRM" and refusal.record_version == 1
    # Whom the refusal concerns, for the tasking inbox: the job's people, and who made the change.
    assert (refusal.job, refusal.submitted_by) == (job, RES)

    # Every read and submission is audited.
    async with pnd.app.engine.connect() as conn:
        rows = (await conn.execute(select(audit_table))).mappings().all()
    actions = {(r["actor_username"], r["action"].rsplit("/", 1)[-1], r["outcome"]) for r in rows}
    assert (RES, "SubmitIntelligence", "OK") in actions
    assert (RES, "GetIntelligence", "OK") in actions
    assert ("researcher.ersou", "GetIntelligence", "DENIED_OUT_OF_SCOPE") in actions
    assert (SUP, "ReleaseIntelligence", "OK") in actions


async def test_search_results_are_published_as_source_records(pnd, nats_server) -> None:
    stub = pnd.stub
    owner = (
        await stub.SubmitIntelligence(
            submit(person("Quinlan", "Ava", 1994, "DE22 1AB")), metadata=pnd.md(RES)
        )
    ).record
    number = (await stub.SubmitIntelligence(submit(phone("+447700900555")), metadata=pnd.md(RES))).record
    await stub.UpdateIntelligence(
        pb.UpdateIntelligenceRequest(
            record=pb.IntelligenceRecord(
                name=owner.name, links=[pole_pb2.PoleLink(target=number.name, type=pole_pb2.LINK_TYPE_USES)]
            ),
            update_mask={"paths": ["links"]},
        ),
        metadata=pnd.md(RES),
    )
    await wait_state(pnd, owner.name, sync_pb2.SYNC_STATE_SYNCED)
    await wait_state(pnd, number.name, sync_pb2.SYNC_STATE_SYNCED)

    request = pb.SearchPndRequest(
        parent="regions/EMSOU",
        search=sync_pb2.PndSearch(kind=sync_pb2.PND_SEARCH_KIND_PHONE, phone_e164="07700 900555"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as no_purpose:
        await stub.SearchPnd(request, metadata=pnd.md(RES, None))
    assert no_purpose.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    answer = await stub.SearchPnd(request, metadata=pnd.md("analyst.emsou", "Op HERON"))
    kinds = sorted(pole_pb2.PoleKind.Name(r.kind) for r in answer.results)
    assert kinds == ["POLE_KIND_PERSON", "POLE_KIND_PHONE"]
    found_person = next(r for r in answer.results if r.kind == pole_pb2.POLE_KIND_PERSON)
    assert found_person.entity.person.names[0].family_name == "Quinlan"
    assert found_person.entity.person.addresses[0].postcode == "DE22 1AB"
    assert found_person.source_record_id == f"pnd/{found_person.pnd_id}@{found_person.pnd_version}"
    assert found_person.links[0].type == pole_pb2.LINK_TYPE_USES
    assert found_person.grading.source_evaluation == pole_pb2.SOURCE_EVALUATION_1

    def results_of_search(messages: list) -> list:
        events = [events_pb2.PndResultReceived.FromString(m.data) for m in messages]
        return [e for e in events if e.search.name == answer.search.name]

    messages = await stream_messages(
        nats_server.url,
        "toex.emsou.pnd.PndResultReceived",
        until=lambda found: bool(results_of_search(found)),
    )
    [event] = results_of_search(messages)
    assert event.search.phone_e164 == "+447700900555" and event.search.purpose == "Op HERON"
    assert event.search.requested_by == "analyst.emsou"
    assert event.search.job == answer.search.job == ""  # "Op HERON" names no job
    assert {r.source_record_id for r in event.results} == {r.source_record_id for r in answer.results}


async def test_reconciliation_reports_missing_held_and_rejected_per_region(pnd, nats_server) -> None:
    stub = pnd.stub
    synced = (await stub.SubmitIntelligence(submit(phone("+447700900601")), metadata=pnd.md(RES))).record
    rejected = (await stub.SubmitIntelligence(submit(vehicle("ZZZZZZZZ")), metadata=pnd.md(RES))).record
    held = (
        await stub.SubmitIntelligence(submit(person("Moss"), grading=GRADED_C), metadata=pnd.md(RES))
    ).record
    await wait_state(pnd, synced.name, sync_pb2.SYNC_STATE_SYNCED)
    await wait_state(pnd, rejected.name, sync_pb2.SYNC_STATE_REJECTED)
    pnd.simulator.control(bulk_unavailable=True)
    missing = (
        await stub.SubmitIntelligence(submit(phone("+447700900602"), region="ERSOU"), metadata=pnd.md(NC))
    ).record

    report = (await stub.RunReconciliation(pb.RunReconciliationRequest(), metadata=pnd.md(NC))).reconciliation
    pnd.simulator.control(bulk_unavailable=False)
    regions = {
        sync_pb2.RegionReconciliation.DESCRIPTOR.fields_by_name["region"]
        .enum_type.values_by_number[r.region]
        .name: r
        for r in report.regions
    }
    emsou, ersou = regions["REGION_EMSOU"], regions["REGION_ERSOU"]
    assert (
        emsou.local_records,
        emsou.in_sync,
        emsou.rejected.count,
        emsou.held.count,
        emsou.missing.count,
    ) == (3, 1, 1, 1, 0)
    assert (ersou.local_records, ersou.missing.count) == (1, 1)
    assert ersou.missing.oldest_age.ToTimedelta().total_seconds() >= 0
    assert report.pnd_records == 1  # only the accepted phone reached the PND

    # A region's researcher sees only the region's figures and items.
    own = (
        await stub.GetReconciliation(
            pb.GetReconciliationRequest(name="reconciliations/latest"), metadata=pnd.md(RES)
        )
    ).reconciliation
    assert [r.local_records for r in own.regions] == [3]
    items = (
        await stub.ListReconciliationItems(
            pb.ListReconciliationItemsRequest(parent=report.name), metadata=pnd.md(RES)
        )
    ).items
    assert {(i.record, pb.ReconciliationCategory.Name(i.category)) for i in items} == {
        (rejected.name, "RECONCILIATION_CATEGORY_REJECTED"),
        (held.name, "RECONCILIATION_CATEGORY_HELD"),
    }
    everything = (
        await stub.ListReconciliationItems(
            pb.ListReconciliationItemsRequest(
                parent=report.name, category=pb.RECONCILIATION_CATEGORY_MISSING
            ),
            metadata=pnd.md(NC),
        )
    ).items
    assert [i.record for i in everything] == [missing.name]

    def of_report(messages: list) -> list:
        return [
            m
            for m in messages
            if events_pb2.ReconciliationCompleted.FromString(m.data).reconciliation == report.name
        ]

    messages = await stream_messages(
        nats_server.url, "toex.*.pnd.ReconciliationCompleted", until=lambda found: len(of_report(found)) >= 2
    )
    mine = [events_pb2.ReconciliationCompleted.FromString(m.data) for m in messages]
    mine = [e for e in mine if e.reconciliation == report.name]
    assert sorted(
        m.subject
        for m in messages
        if events_pb2.ReconciliationCompleted.FromString(m.data).reconciliation == report.name
    ) == [
        "toex.emsou.pnd.ReconciliationCompleted",
        "toex.ersou.pnd.ReconciliationCompleted",
    ]
    assert {e.summary.missing.count for e in mine} == {0, 1}
