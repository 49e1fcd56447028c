"""One handler per command. Handlers decide; the unit of work commits; nothing here knows gRPC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from toex_common.context import touch
from toex_common.uow import replayed, request_scope
from toex_kernel.clock import Clock, utcnow
from toex_kernel.errors import AlreadyExists, InvalidArgument, NotFound
from toex_kernel.grants import JobGrant
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_safeguarding.domain import commands, policy
from toex_safeguarding.domain.model import Referral, Subject, referral_name
from toex_safeguarding.domain.values import Concern
from toex_safeguarding.service_layer import identity
from toex_safeguarding.service_layer.ports import (
    JobDirectory,
    OpenReferralExists,
    OverdueRow,
    ReferralQuery,
    SafeguardingUnitOfWork,
)

MAX_TEXT = 10_000


@dataclass
class Deps:
    uow: Callable[[], SafeguardingUnitOfWork]
    clock: Clock = utcnow
    # Whether the caller may see a tasking job (asked with the caller's own credentials).
    jobs: JobDirectory | None = None


async def _ensure_linkable(job: str, credentials: tuple[tuple[str, str], ...], deps: Deps) -> None:
    """A referral links only a job its author may see: otherwise its outcomes would be shown on
    any region's job. An invisible job answers as a missing one."""
    if not job:
        return
    if deps.jobs is None or not await deps.jobs.visible(job, credentials):
        raise NotFound(f"job {job} not found")


def _scope(method: str, actor_subject: str) -> str:
    return request_scope("safeguarding", method, actor_subject)


async def _grant(
    uow: SafeguardingUnitOfWork, actor: Principal, referral: Referral | None, purpose: str
) -> JobGrant | None:
    """The grant of the job the call's purpose names, read only when it could decide the call:
    whoever sees the referral's region today never pays for grants."""
    if referral is None or not referral.linked_job or not policy.needs_grant(actor, referral.region):
        return None
    return await uow.grants.for_purpose(purpose)


async def create_referral(cmd: commands.CreateReferral, deps: Deps) -> Referral:
    policy.ensure_can_work(cmd.actor, cmd.region)
    await _ensure_linkable(cmd.linked_job, cmd.credentials, deps)
    now = deps.clock()
    scope = _scope("CreateReferral", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.referrals.get)) is not None:
            touch(prior.name)
            return prior
        # The subject as this region knows it now: one spelling, and a merged id or a number
        # already followed to its entity stands for that entity (one open referral per person).
        subject = replace(
            cmd.subject, entity_id=await identity.resolve(uow, cmd.region, cmd.subject.entity_id)
        )
        referral = Referral.draft(
            region=cmd.region,
            subject=subject,
            concerns=cmd.concerns,
            risk_level=cmd.risk_level,
            evidence=cmd.evidence,
            destinations=cmd.destinations,
            linked_job=cmd.linked_job.strip(),
            handling=cmd.handling,
            created_by=cmd.actor.username,
            now=now,
        )
        touch(referral.name)
        try:
            await uow.referrals.add(referral)
        except OpenReferralExists as exc:
            raise AlreadyExists(
                f"{referral_name(cmd.region, exc.referral_id)} is already open for this subject and "
                f"concern {exc.concern.value}; add evidence to it instead"
            ) from None
        if cmd.idempotency is not None:
            await uow.remember_request(
                scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint, referral.name
            )
        await uow.commit()
        return referral


async def get_referral(cmd: commands.GetReferral, deps: Deps) -> Referral:
    name = referral_name(cmd.region, cmd.referral_id)
    touch(name)
    async with deps.uow() as uow:
        referral = await uow.referrals.get(cmd.referral_id)
        if referral is not None and referral.region is not cmd.region:
            referral = None
        grant = await _grant(uow, cmd.actor, referral, cmd.purpose)
    return policy.ensure_visible(cmd.actor, referral, name, grant)


async def list_referrals(cmd: commands.ListReferrals, deps: Deps) -> tuple[list[Referral], bool]:
    async with deps.uow() as uow:
        grant = None
        if cmd.region is not None and policy.needs_grant(cmd.actor, cmd.region):
            grant = await uow.grants.for_purpose(cmd.purpose)
        scope = policy.listing(cmd.actor, cmd.region, grant)
        if scope.job and cmd.job and cmd.job != scope.job:
            return [], False  # a grant's holder asking for another job: nothing of it is theirs
        query = ReferralQuery(
            scope.regions, cmd.states, deps.clock() if cmd.overdue_only else None, scope.job or cmd.job
        )
        found = await uow.referrals.search(query, cmd.page_size + 1, cmd.after)
    page = found[: cmd.page_size]
    touch(*(r.name for r in page))
    return page, len(found) > cmd.page_size


async def list_overdue(cmd: commands.ListOverdue, deps: Deps) -> tuple[list[OverdueRow], int, bool]:
    regions = policy.visible_regions(cmd.actor, cmd.region)
    async with deps.uow() as uow:
        rows, total = await uow.referrals.overdue(regions, deps.clock(), cmd.page_size + 1, cmd.after)
    page = rows[: cmd.page_size]
    touch(*dict.fromkeys(row.referral.name for row in page))
    return page, total, len(rows) > cmd.page_size


async def _change(
    deps: Deps,
    *,
    method: str,
    actor: Principal,
    region: Region,
    referral_id: str,
    idempotency: commands.Idempotency | None,
    change: Callable[[Referral, datetime], None],
    grant_purpose: str = "",
) -> Referral:
    """Load, decide, change, save, commit. `grant_purpose` is the call's purpose when the
    change is one a job grant's holder may make (adding evidence); otherwise only the region's
    own officers may."""
    name = referral_name(region, referral_id)
    touch(name)
    scope = _scope(method, actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, idempotency, uow.referrals.get)) is not None:
            # A repeat is answered only while the caller may still see the referral: a grant
            # that has ended does not live on in a remembered request id.
            grant = await _grant(uow, actor, prior, grant_purpose) if grant_purpose else None
            prior = policy.ensure_visible(actor, prior, name, grant)
            if grant_purpose:
                # Reading it is not enough: a holder now only a collaborating reader is refused.
                policy.ensure_can_add_evidence(actor, prior, grant)
            return prior
        referral = await uow.referrals.get(referral_id, for_update=True)
        if referral is not None and referral.region is not region:
            referral = None
        grant = await _grant(uow, actor, referral, grant_purpose) if grant_purpose else None
        referral = policy.ensure_visible(actor, referral, name, grant)
        if grant_purpose:
            policy.ensure_can_add_evidence(actor, referral, grant)
        else:
            policy.ensure_can_work(actor, referral.region)
        change(referral, deps.clock())
        try:
            await uow.referrals.save(referral)
        except OpenReferralExists as exc:
            raise AlreadyExists(
                f"{referral_name(region, exc.referral_id)} is already open for this subject and "
                f"concern {exc.concern.value}"
            ) from None
        if idempotency is not None:
            await uow.remember_request(scope, idempotency.request_id, idempotency.fingerprint, referral.name)
        await uow.commit()
        return referral


async def update_referral(cmd: commands.UpdateReferral, deps: Deps) -> Referral:
    rev = cmd.revision
    by = cmd.actor.username
    if rev.linked_job:
        await _ensure_linkable(rev.linked_job, cmd.credentials, deps)

    def change(referral: Referral, now: datetime) -> None:
        referral.revise(
            now=now,
            by=by,
            date_of_birth=rev.date_of_birth,
            age_band=rev.age_band,
            local_authority=rev.local_authority,
            consent=rev.consent,
            concerns=rev.concerns,
            risk_level=rev.risk_level,
            destinations=rev.destinations,
            linked_job=rev.linked_job,
            handling=rev.handling,
        )
        if rev.evidence:
            referral.add_evidence(rev.evidence, by=by, now=now)

    return await _change(
        deps,
        method="UpdateReferral",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=change,
        grant_purpose=cmd.purpose if rev.adds_evidence_only else "",
    )


async def submit_for_approval(cmd: commands.Transition, deps: Deps) -> Referral:
    return await _change(
        deps,
        method="SubmitForApproval",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=lambda r, now: r.submit_for_approval(by=cmd.actor.username, now=now),
    )


async def approve_referral(cmd: commands.Transition, deps: Deps) -> Referral:
    policy.ensure_supervisor(cmd.actor, cmd.region)
    return await _change(
        deps,
        method="ApproveReferral",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=lambda r, now: r.approve(by=cmd.actor.username, now=now),
    )


async def return_referral(cmd: commands.Transition, deps: Deps) -> Referral:
    policy.ensure_supervisor(cmd.actor, cmd.region)
    return await _change(
        deps,
        method="ReturnReferral",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=lambda r, now: r.return_to_draft(by=cmd.actor.username, reason=cmd.reason, now=now),
    )


async def record_submission(cmd: commands.RecordSubmission, deps: Deps) -> Referral:
    def change(referral: Referral, now: datetime) -> None:
        referral.record_submission(
            cmd.destination,
            reference=cmd.agency_reference,
            submitted_at=cmd.submitted_at or now,
            now=now,
        )

    return await _change(
        deps,
        method="RecordSubmission",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=change,
    )


async def record_acknowledgement(cmd: commands.RecordAcknowledgement, deps: Deps) -> Referral:
    return await _change(
        deps,
        method="RecordAcknowledgement",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=lambda r, now: r.record_acknowledgement(
            cmd.destination, acknowledged_at=cmd.acknowledged_at or now, now=now
        ),
    )


async def record_decision(cmd: commands.RecordDecision, deps: Deps) -> Referral:
    if len(cmd.detail) > MAX_TEXT:
        raise InvalidArgument.field("detail", f"at most {MAX_TEXT} characters")

    def change(referral: Referral, now: datetime) -> None:
        referral.record_decision(
            cmd.destination,
            cmd.kind,
            cmd.outcome,
            detail=cmd.detail,
            decided_at=cmd.decided_at or now,
            by=cmd.actor.username,
            now=now,
        )

    return await _change(
        deps,
        method="RecordDecision",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=change,
    )


async def close_referral(cmd: commands.Transition, deps: Deps) -> Referral:
    return await _change(
        deps,
        method="CloseReferral",
        actor=cmd.actor,
        region=cmd.region,
        referral_id=cmd.referral_id,
        idempotency=cmd.idempotency,
        change=lambda r, now: r.close(by=cmd.actor.username, reason=cmd.reason, now=now),
    )


async def draft_from_trigger(
    trigger: commands.Trigger, uow: SafeguardingUnitOfWork, now: datetime
) -> Referral:
    """Inside the consumer's transaction (it commits): add the trigger's evidence to the open
    referral for the same region, subject and concern, or draft one.

    Safe under concurrent consumers: the open-referral key is claimed with a unique index, so
    of two triggers racing for the same subject and concern one drafts and the other waits for
    it to commit, then finds it and adds its evidence."""
    by = f"trigger:{trigger.source_type.rsplit('.', 1)[-1] or 'event'}"
    # A finding computed before an identity change may name the subject as it was then.
    subject = await identity.resolve(uow, trigger.region, trigger.subject_entity_id)
    for _ in range(3):
        existing = await uow.referrals.find_open(trigger.region, subject, trigger.concern)
        if existing is not None:
            existing.add_evidence(trigger.evidence, by=by, now=now)
            existing.link_job(trigger.linked_job, now)
            await uow.referrals.save(existing)
            return existing
        referral = Referral.draft(
            region=trigger.region,
            subject=Subject(subject, age_band=trigger.age_band),
            concerns=[trigger.concern or Concern.OTHER],
            risk_level=trigger.risk_level,
            evidence=trigger.evidence,
            destinations=[],
            linked_job=trigger.linked_job,
            handling=trigger.handling,
            created_by=by,
            now=now,
        )
        try:
            await uow.referrals.add(referral)
        except OpenReferralExists:
            continue  # drafted by a concurrent trigger a moment ago: join it
        return referral
    raise RuntimeError(f"could not draft or find the open referral for {subject}")


async def escalate_overdue(cmd: commands.EscalateOverdue, deps: Deps) -> int:
    """Publish ReferralOverdue for each overdue clock whose escalation is due. Safe on every replica."""
    async with deps.uow() as uow:
        referrals = await uow.referrals.to_escalate(cmd.now, cmd.limit)
        raised = 0
        for referral in referrals:
            clocks = referral.escalate_overdue(cmd.now)
            if clocks:
                await uow.referrals.save(referral)
                raised += len(clocks)
        await uow.commit()
        return raised
