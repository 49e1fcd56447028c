"""The safeguarding service end to end over real servers: triggers from the stream, the
workflow and its clocks, escalation, outcomes on the tasking job, access and audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.tasking.v1 import tasking_pb2 as tpb
from toex_common.audit import verify
from toex_common.db import audit_table
from toex_common.events import build_event
from toex_common.events.consumer import Outcome
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region
from toex_safeguarding.adapters.tables import referrals
from toex_safeguarding.domain.commands import Trigger
from toex_safeguarding.domain.model import Evidence
from toex_safeguarding.domain.values import Concern, EvidenceKind
from toex_safeguarding.service_layer import handlers

from .conftest import Running, Tasking, start_tasking

pytestmark = pytest.mark.integration

SO, SUP, NC = "safeguarding_officer.emsou", "supervisor.emsou", "national_coordinator.national"


def md(token: str, purpose: str | None = "Op SANDPIPER") -> tuple[tuple[str, str], ...]:
    pairs = [("authorization", f"Bearer {token}")]
    if purpose is not None:
        pairs.append(("x-toex-purpose", purpose))
    return tuple(pairs)


def stamp(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


async def eventually(
    probe: Callable[[], object], *, timeout: float = 20.0, what: str = "condition"
) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def publish(nats_url: str, envelopes: Sequence[object]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for e in envelopes:
            await js.publish(e.subject, e.payload, headers=e.headers)  # type: ignore[attr-defined]
    finally:
        await nc.close()


def contact_event(job: str, victim_entity: str, *, dataset: str = "regions/EMSOU/datasets/cdr1") -> object:
    message = comms_events.WatchlistContactDetected(
        dataset=dataset,
        job=job,
        list_a=comms.WatchlistRef(
            name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
        ),
        number_a="+447700900001",
        list_b=comms.WatchlistRef(name="regions/EMSOU/watchlists/victims", kind=comms.WATCHLIST_KIND_VICTIM),
        number_b="+447700900002",
        entity_id_b=victim_entity,
        contact_count=12,
        call_count=5,
        sms_count=7,
        total_duration_seconds=640,
        first_contact_time=stamp(datetime(2025, 3, 1, tzinfo=UTC)),
        last_contact_time=stamp(datetime(2025, 3, 20, tzinfo=UTC)),
    )
    return build_event(message, domain="comms", source="toex/comms", region=Region.EMSOU)


async def referrals_of(sg: Running, entity: str) -> list[pb.Referral]:
    found = await sg.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", page_size=500), metadata=md(sg.token(SO))
    )
    return [r for r in found.referrals if r.subject.entity_id == entity]


async def test_watchlist_contact_to_decision_on_the_job(safeguarding: Running, tasking, nats_server) -> None:
    sg = safeguarding
    job = (
        await tasking.stub.CreateJob(
            tpb.CreateJobRequest(
                parent="regions/EMSOU",
                job=tpb.Job(
                    requesting_unit="Derbyshire Constabulary",
                    operation_name="Op SANDPIPER",
                    job_type=tpb.JOB_TYPE_COMMS_ANALYSIS,
                    due_time=stamp(datetime.now(UTC) + timedelta(days=7)),
                    description="comms analysis",
                ),
            ),
            metadata=md(sg.token(NC)),
        )
    ).job
    victim = f"ent-{uuid.uuid4().hex[:8]}"
    first, second = (
        contact_event(job.name, victim),
        contact_event(job.name, victim, dataset="regions/EMSOU/datasets/cdr2"),
    )
    # A duplicate delivery (same event id) and a second, distinct contact for the same subject.
    await publish(nats_server.url, [first, first, second])
    draft = await eventually(
        lambda: _one_with_evidence(sg, victim, 4), what="one draft with the evidence of both contacts"
    )
    assert draft.state == pb.REFERRAL_STATE_DRAFT
    assert list(draft.concerns) == [pb.CONCERN_CHILD_SEXUAL_EXPLOITATION]
    assert draft.risk_level == pb.RISK_LEVEL_HIGH and draft.linked_job == job.name
    assert draft.created_by == "trigger:WatchlistContactDetected"
    refs = {e.ref for e in draft.evidence}
    assert {
        first.event_id,
        second.event_id,
        "regions/EMSOU/datasets/cdr1",
        "regions/EMSOU/datasets/cdr2",
    } <= refs  # type: ignore[attr-defined]
    assert {p.destination for p in draft.proposals} >= {
        pb.DESTINATION_CHILDRENS_SOCIAL_CARE,
        pb.DESTINATION_NRM,
    }

    officer, supervisor = md(sg.token(SO)), md(sg.token(SUP))
    update = pb.UpdateReferralRequest(
        referral=pb.Referral(
            name=draft.name, subject=pb.Subject(age_band=pb.AGE_BAND_CHILD, local_authority="Derby City")
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["subject.age_band", "subject.local_authority"]),
    )
    await sg.stub.UpdateReferral(update, metadata=officer)
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await sg.stub.ApproveReferral(pb.ApproveReferralRequest(name=draft.name), metadata=supervisor)
    assert early.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    await sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=draft.name), metadata=officer)
    with pytest.raises(grpc.aio.AioRpcError) as not_supervisor:
        await sg.stub.ApproveReferral(pb.ApproveReferralRequest(name=draft.name), metadata=officer)
    assert not_supervisor.value.code() is grpc.StatusCode.PERMISSION_DENIED
    approved = (
        await sg.stub.ApproveReferral(pb.ApproveReferralRequest(name=draft.name), metadata=supervisor)
    ).referral
    assert approved.state == pb.REFERRAL_STATE_APPROVED and approved.approved_by == SUP

    sent = (
        await sg.stub.RecordSubmission(
            pb.RecordSubmissionRequest(
                name=draft.name, destination=pb.DESTINATION_CHILDRENS_SOCIAL_CARE, agency_reference="MASH-42"
            ),
            metadata=officer,
        )
    ).referral
    [clock] = sent.clocks
    assert clock.kind == pb.CLOCK_KIND_LOCAL_AUTHORITY_DECISION and not clock.overdue

    # The clock runs: four days later the local authority's decision is overdue.
    sg.clock.offset = timedelta(days=4).total_seconds()
    overdue = await eventually(
        lambda: _overdue_for(sg, draft.name), what="the overdue clock on the national list"
    )
    assert overdue.clock.escalation in (pb.ESCALATION_SUPERVISOR, pb.ESCALATION_NATIONAL_COORDINATOR)
    listed = await sg.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", overdue_only=True), metadata=officer
    )
    assert draft.name in [r.name for r in listed.referrals]

    await sg.stub.RecordAcknowledgement(
        pb.RecordAcknowledgementRequest(name=draft.name, destination=pb.DESTINATION_CHILDRENS_SOCIAL_CARE),
        metadata=officer,
    )
    decided = (
        await sg.stub.RecordDecision(
            pb.RecordDecisionRequest(
                name=draft.name,
                destination=pb.DESTINATION_CHILDRENS_SOCIAL_CARE,
                kind=pb.DECISION_KIND_LOCAL_AUTHORITY,
                outcome=pb.DECISION_OUTCOME_POSITIVE,
                detail="strategy discussion convened",
            ),
            metadata=officer,
        )
    ).referral
    assert decided.state == pb.REFERRAL_STATE_DECIDED and not decided.overdue
    assert decided.clocks[0].HasField("satisfied_time")

    # The decision shows on the job: the referral, its state and its changes, from the
    # referral's own events (no note is written on the job any more).
    async def on_job() -> tpb.Job:
        got = await tasking.stub.GetJob(tpb.GetJobRequest(name=job.name), metadata=md(sg.token(SUP)))
        return got.job

    async def decided_on_job() -> object:
        return [r for r in (await on_job()).linked_referrals if r.state == "DECIDED"]

    [shown] = await eventually(decided_on_job, what="the decided referral on the job")  # type: ignore[misc]
    assert shown.referral == draft.name and list(shown.concerns) == ["CHILD_SEXUAL_EXPLOITATION"]
    change_kinds = [c.kind for c in shown.changes]
    for wanted_kind in (
        tpb.REFERRAL_CHANGE_KIND_DRAFTED,
        tpb.REFERRAL_CHANGE_KIND_APPROVED,
        tpb.REFERRAL_CHANGE_KIND_SUBMITTED,
        tpb.REFERRAL_CHANGE_KIND_OVERDUE,
        tpb.REFERRAL_CHANGE_KIND_DECISION_RECORDED,
    ):
        assert wanted_kind in change_kinds, wanted_kind
    assert "strategy discussion convened" in shown.changes[-1].summary
    assert (await on_job()).notes == []
    assert victim.encode() not in (await on_job()).SerializeToString()

    published = await _events(nats_server.url, "toex.emsou.safeguarding.>", draft.name)
    kinds = [k for k, _ in published]
    for wanted in (
        "ReferralDrafted",
        "ReferralEvidenceAdded",
        "ReferralApproved",
        "ReferralSubmitted",
        "ReferralOverdue",
        "ReferralDecisionRecorded",
    ):
        assert wanted in kinds, wanted
    assert kinds.count("ReferralDrafted") == 1
    assert "JobNoteRequested" not in kinds
    for kind, payload in published:
        assert victim.encode() not in payload  # events name the referral, never its subject
        message = getattr(sg_events, kind).FromString(payload)  # each names the job it is shown on
        assert message.linked_job == job.name and message.state, kind

    await sg.stub.CloseReferral(
        pb.CloseReferralRequest(name=draft.name, reason="child safeguarded"), metadata=officer
    )
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await sg.stub.RecordSubmission(
            pb.RecordSubmissionRequest(name=draft.name, destination=pb.DESTINATION_NRM), metadata=officer
        )
    assert closed.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    async def closed_on_job() -> object:
        return [r for r in (await on_job()).linked_referrals if r.state == "CLOSED"]

    [shown] = await eventually(closed_on_job, what="the closed referral on the job")  # type: ignore[misc]
    assert shown.changes[-1].summary.endswith(": child safeguarded")


async def _one_with_evidence(sg: Running, entity: str, count: int) -> pb.Referral | None:
    found = await referrals_of(sg, entity)
    assert len(found) <= 1, "repeated triggers drafted a second referral"
    return found[0] if found and len(found[0].evidence) >= count else None


async def _overdue_for(sg: Running, name: str) -> pb.OverdueItem | None:
    page = await sg.stub.ListOverdue(pb.ListOverdueRequest(parent="regions/-"), metadata=md(sg.token(NC)))
    return next((i for i in page.items if i.referral == name and i.clock.escalation), None)


async def _events(nats_url: str, subject: str, referral: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, ordered_consumer=True)
        found = []
        while True:
            try:
                message = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            if message.headers and message.headers.get("ce-subject") == referral:
                found.append((message.subject.rsplit(".", 1)[-1], message.data))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


async def test_concurrent_triggers_for_one_subject_draft_one_referral(safeguarding: Running) -> None:
    sg = safeguarding
    subject = f"ent-{uuid.uuid4().hex[:8]}"

    async def one(i: int) -> None:
        trigger = Trigger(
            source_event_id=f"ev-{i}",
            source_type="test.Finding",
            region=Region.EMSOU,
            subject_entity_id=subject,
            concern=Concern.MODERN_SLAVERY,
            evidence=[Evidence(EvidenceKind.EVENT, f"ev-{i}", "finding")],
        )
        async with sg.app.deps.uow() as uow:
            await handlers.draft_from_trigger(trigger, uow, datetime.now(UTC))
            await uow.commit()

    await asyncio.gather(*(one(i) for i in range(12)))
    [referral] = await referrals_of(sg, subject)
    assert sorted(e.ref for e in referral.evidence) == sorted(f"ev-{i}" for i in range(12))


async def test_referral_outcomes_survive_a_tasking_outage(
    safeguarding: Running, nats_server, keycloak
) -> None:
    """A referral's outcomes are its events on the stream: while tasking is down they wait
    there; when it is back the job shows the referral as its latest change says, each change
    once, even one delivered twice."""
    sg = safeguarding
    officer, supervisor = md(sg.token(SO)), md(sg.token(SUP))
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"

    async def add_job(tasking: Tasking) -> None:
        async with tasking.app.engine.begin() as conn:
            from toex_tasking.adapters.tables import jobs

            now = datetime.now(UTC)
            await conn.execute(
                jobs.insert().values(
                    id=job.rsplit("/", 1)[-1],
                    region="EMSOU",
                    requesting_unit="u",
                    requesting_officer="o",
                    operation_name="Op SANDPIPER",
                    job_type="SAFEGUARDING",
                    priority="ROUTINE",
                    due_at=now + timedelta(days=3),
                    description="",
                    handling="C",
                    state="RAISED",
                    subject_entity_ids=[],
                    product="",
                    created_by="test",
                    created_at=now,
                    updated_at=now,
                )
            )

    def start() -> Any:
        return start_tasking(
            sg.tasking_database, nats_server.url, keycloak.issuer, sg.tasking_port, sg.tasking_name
        )

    # The referral links a job its author can see (tasking confirms it), then tasking goes down.
    tasking = await start()
    try:
        await add_job(tasking)
        created = (
            await sg.stub.CreateReferral(
                pb.CreateReferralRequest(
                    parent="regions/EMSOU",
                    referral=pb.Referral(
                        subject=pb.Subject(
                            entity_id=f"ent-{uuid.uuid4().hex[:8]}",
                            age_band=pb.AGE_BAND_CHILD,
                            local_authority="Derby",
                        ),
                        concerns=[pb.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                        linked_job=job,
                    ),
                ),
                metadata=officer,
            )
        ).referral
    finally:
        await tasking.stop()
    await sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=created.name), metadata=officer)
    await sg.stub.ApproveReferral(pb.ApproveReferralRequest(name=created.name), metadata=supervisor)

    # Tasking is down: the referral's events wait on the stream, published from the outbox.
    def of_referral(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.headers.get("ce-subject") == created.name]

    published = of_referral(
        await stream_messages(
            nats_server.url,
            "toex.emsou.safeguarding.>",
            until=lambda found: any(m.subject.endswith(".ReferralApproved") for m in of_referral(found)),
        )
    )
    kinds = [m.subject.rsplit(".", 1)[-1] for m in published]
    assert kinds == ["ReferralDrafted", "ReferralApproved"]  # and no JobNoteRequested
    # One of them delivered again (the same event under another message id, as a peer's retry).
    again = published[-1]
    await publish(
        nats_server.url,
        [
            SimpleNamespace(
                subject=again.subject,
                payload=again.data,
                headers=dict(again.headers, **{"Nats-Msg-Id": f"again-{uuid.uuid4().hex}"}),
            )
        ],
    )

    # Tasking comes back under the same name (its durable consumers): the job shows the
    # referral, approved, with each change once.
    tasking = await start()
    try:

        async def approved_on_job() -> object:
            got = await tasking.stub.GetJob(tpb.GetJobRequest(name=job), metadata=md(sg.token(NC)))
            return [r for r in got.job.linked_referrals if r.state == "APPROVED"]

        [shown] = await eventually(approved_on_job, what="the referral's outcomes after the outage")  # type: ignore[misc]
        [consumer] = [c for c in tasking.app.consumers if c.name.endswith("-referral-outcomes")]
        await eventually(lambda: consumer.counts[Outcome.DUPLICATE] >= 1, what="the repeat seen")
        got = await tasking.stub.GetJob(tpb.GetJobRequest(name=job), metadata=md(sg.token(NC)))
        [shown] = got.job.linked_referrals
        assert shown.referral == created.name
        assert [(c.kind, c.event_id) for c in shown.changes] == [
            (tpb.REFERRAL_CHANGE_KIND_DRAFTED, published[0].headers["ce-id"]),
            (tpb.REFERRAL_CHANGE_KIND_APPROVED, published[1].headers["ce-id"]),
        ]
        assert list(got.job.notes) == []
    finally:
        await tasking.stop()


async def test_safeguarding_job_drafts_a_referral_per_subject(safeguarding: Running, tasking) -> None:
    sg = safeguarding
    subjects = [f"ent-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    job = (
        await tasking.stub.CreateJob(
            tpb.CreateJobRequest(
                parent="regions/EMSOU",
                job=tpb.Job(
                    requesting_unit="Derbyshire Constabulary",
                    operation_name="Op SANDPIPER",
                    job_type=tpb.JOB_TYPE_SAFEGUARDING,
                    priority=tpb.PRIORITY_URGENT,
                    due_time=stamp(datetime.now(UTC) + timedelta(days=2)),
                    description="missing children found",
                    subject_entity_ids=subjects,
                ),
            ),
            metadata=md(sg.token(NC)),
        )
    ).job

    async def drafted() -> object:
        found = [await referrals_of(sg, s) for s in subjects]
        return all(found) and found

    found = await eventually(drafted, what="a draft per subject of the job")
    for [referral] in found:  # type: ignore[union-attr]
        assert referral.linked_job == job.name and referral.risk_level == pb.RISK_LEVEL_HIGH
        assert [e.ref for e in referral.evidence] == [job.name]


async def test_adult_without_consent_gets_an_anonymous_duty_to_notify(safeguarding: Running) -> None:
    sg = safeguarding
    officer, supervisor = md(sg.token(SO)), md(sg.token(SUP))
    entity, dob, la = f"ent-{uuid.uuid4().hex[:8]}", "1990-02-03", "Nottingham City"
    created = (
        await sg.stub.CreateReferral(
            pb.CreateReferralRequest(
                parent="regions/EMSOU",
                referral=pb.Referral(
                    subject=pb.Subject(entity_id=entity, date_of_birth=dob, local_authority=la),
                    concerns=[pb.CONCERN_LABOUR_EXPLOITATION],
                    risk_level=pb.RISK_LEVEL_LOW,
                    evidence=[pb.Evidence(kind=pb.EVIDENCE_KIND_DATASET, ref="regions/EMSOU/datasets/x9")],
                ),
            ),
            metadata=officer,
        )
    ).referral
    assert list(created.destinations) == [pb.DESTINATION_DUTY_TO_NOTIFY]
    with pytest.raises(grpc.aio.AioRpcError) as nrm:
        await sg.stub.UpdateReferral(
            pb.UpdateReferralRequest(
                referral=pb.Referral(name=created.name, destinations=[pb.DESTINATION_NRM]),
                update_mask=field_mask_pb2.FieldMask(paths=["destinations"]),
            ),
            metadata=officer,
        )
        await sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=created.name), metadata=officer)
    assert nrm.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "consent" in (
        nrm.value.details() or ""
    )
    await sg.stub.UpdateReferral(
        pb.UpdateReferralRequest(
            referral=pb.Referral(name=created.name, destinations=[pb.DESTINATION_DUTY_TO_NOTIFY]),
            update_mask=field_mask_pb2.FieldMask(paths=["destinations"]),
        ),
        metadata=officer,
    )
    await sg.stub.SubmitForApproval(pb.SubmitForApprovalRequest(name=created.name), metadata=officer)
    approved = (
        await sg.stub.ApproveReferral(pb.ApproveReferralRequest(name=created.name), metadata=supervisor)
    ).referral
    notice = approved.duty_to_notify
    assert notice.reference.startswith("MS1-") and notice.age_band == pb.AGE_BAND_ADULT
    async with sg.app.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(referrals.c.duty_to_notify).where(referrals.c.id == created.name.rsplit("/", 1)[-1])
            )
        ).scalar_one()
    for secret in (entity, dob, la, "x9", created.name.rsplit("/", 1)[-1]):
        assert secret not in str(stored) and secret.encode() not in notice.SerializeToString()


async def test_access_audit_and_invalid_requests(safeguarding: Running) -> None:
    sg = safeguarding
    officer = md(sg.token(SO))
    created = (
        await sg.stub.CreateReferral(
            pb.CreateReferralRequest(
                parent="regions/EMSOU",
                request_id=str(uuid.uuid4()),
                referral=pb.Referral(
                    subject=pb.Subject(entity_id=f"ent-{uuid.uuid4().hex[:8]}", age_band=pb.AGE_BAND_CHILD),
                    concerns=[pb.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                ),
            ),
            metadata=officer,
        )
    ).referral
    get = pb.GetReferralRequest(name=created.name)
    with pytest.raises(grpc.aio.AioRpcError) as other_region:
        await sg.stub.GetReferral(get, metadata=md(sg.token("safeguarding_officer.ersou")))
    assert other_region.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as researcher:
        await sg.stub.GetReferral(get, metadata=md(sg.token("researcher.emsou")))
    assert researcher.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_purpose:
        await sg.stub.GetReferral(get, metadata=md(sg.token(NC), None))
    assert no_purpose.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (
        await sg.stub.GetReferral(get, metadata=md(sg.token(NC), "national overdue review"))
    ).referral.name == created.name
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await sg.stub.CreateReferral(
            pb.CreateReferralRequest(
                parent="regions/EMSOU",
                referral=pb.Referral(subject=created.subject, concerns=created.concerns),
            ),
            metadata=officer,
        )
    assert duplicate.value.code() is grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await sg.stub.CreateReferral(
            pb.CreateReferralRequest(parent="regions/EMSOU", referral=pb.Referral()), metadata=officer
        )
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as transition:
        await sg.stub.RecordDecision(
            pb.RecordDecisionRequest(
                name=created.name,
                destination=pb.DESTINATION_CHILDRENS_SOCIAL_CARE,
                kind=pb.DECISION_KIND_LOCAL_AUTHORITY,
                outcome=pb.DECISION_OUTCOME_POSITIVE,
            ),
            metadata=officer,
        )
    assert transition.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    async with sg.app.engine.connect() as conn:
        rows = (await conn.execute(select(audit_table).order_by(audit_table.c.seq))).mappings().all()
    seen = {(r["actor_username"], r["action"].rsplit("/", 1)[-1], r["outcome"], r["purpose"]) for r in rows}
    assert ("safeguarding_officer.ersou", "GetReferral", "DENIED_OUT_OF_SCOPE", "Op SANDPIPER") in seen
    assert (NC, "GetReferral", "OK", "national overdue review") in seen
    assert ("researcher.emsou", "GetReferral", "PERMISSION_DENIED", "Op SANDPIPER") in seen
    assert any(r["resources"] == [created.name] and r["outcome"] == "OK" for r in rows)
    assert (await verify(sg.app.engine)).intact
    _ = sg_events  # the events module registers the event types for decoding
