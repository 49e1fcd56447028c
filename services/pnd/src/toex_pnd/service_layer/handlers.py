"""One handler per command. Handlers decide; the unit of work commits; nothing here knows gRPC."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from toex_common.context import touch
from toex_common.uow import remember, replayed, request_scope
from toex_kernel.accounts import AccountError, parse_account
from toex_kernel.clock import Clock, utcnow
from toex_kernel.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, Violations
from toex_kernel.grants import JobGrant, job_of
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_pnd.domain import commands, events, pole, policy
from toex_pnd.domain.model import (
    Answer,
    IntelligenceRecord,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    backoff_delay,
    record_name,
)
from toex_pnd.service_layer.ports import (
    PndGateway,
    PndUnavailable,
    PndUnitOfWork,
    QueueStatus,
    RecordQuery,
    ReportItem,
    SearchAnswer,
)

log = logging.getLogger(__name__)


@dataclass
class Deps:
    uow: Callable[[], PndUnitOfWork]
    pnd: PndGateway
    clock: Clock = utcnow
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:16]
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 300.0
    jitter: Callable[[], float] = field(default=random.random)


def _scope(method: str, subject: str) -> str:
    return request_scope("pnd", method, subject)


def _checked_content(
    entity: dict | None,
    grading: dict | None,
    links: list[dict] | None,
    name: str,
    problems: Violations,
    *,
    partial: bool,
) -> tuple[dict | None, pole.Grading | None, list[pole.Link] | None]:
    checked_entity = pole.check_entity(entity, problems) if entity is not None else None
    checked_grading = None
    if grading is not None or not partial:
        checked_grading = pole.check_grading(grading, problems)
    checked_links = pole.check_links(links, name, problems) if links is not None else None
    return checked_entity, checked_grading, checked_links


# -- records ---------------------------------------------------------------------------


async def _grant(uow: PndUnitOfWork, actor: Principal, region: Region, purpose: str) -> JobGrant | None:
    """The grant the call may work `region`'s material under: read only for a caller who does not
    see the region and names one of its jobs (the region's own people pay nothing for grants)."""
    if not policy.needs_grant(actor, region, purpose):
        return None
    return await uow.grants.of_job(job_of(purpose, region))


async def submit_intelligence(cmd: commands.SubmitIntelligence, deps: Deps) -> IntelligenceRecord:
    record_id = deps.new_id()
    name = record_name(cmd.region, record_id)
    scope = _scope("SubmitIntelligence", cmd.actor.subject)
    now = deps.clock()
    async with deps.uow() as uow:
        policy.ensure_can_write(cmd.actor, cmd.region, await _grant(uow, cmd.actor, cmd.region, cmd.purpose))
        problems = Violations()
        entity, grading, links = _checked_content(
            cmd.entity, cmd.grading, cmd.links, name, problems, partial=False
        )
        kind = pole.kind_of(cmd.entity)
        problems.raise_if_any()
        assert entity is not None and grading is not None and links is not None and kind is not None
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.records.get)) is not None:
            touch(prior.name)
            return prior
        record, submission = IntelligenceRecord.create(
            record_id=record_id,
            region=cmd.region,
            kind=kind,
            entity=entity,
            grading=grading,
            links=links,
            created_by=cmd.actor.username,
            now=now,
            job=job_of(cmd.purpose, cmd.region),
        )
        touch(record.name)
        await uow.records.add(record)
        await uow.submissions.add(submission)
        await remember(uow, scope, cmd.idempotency, record.name)
        await uow.commit()
        return record


async def _load_for_change(
    uow: PndUnitOfWork, actor: Principal, region: Region, record_id: str, grant: JobGrant | None = None
) -> IntelligenceRecord:
    name = record_name(region, record_id)
    touch(name)
    record = await uow.records.get(record_id, for_update=True)
    if record is not None and record.region is not region:
        record = None
    return policy.ensure_visible(actor, record, name, grant)


def _check_version(record: IntelligenceRecord, expected: int) -> None:
    if expected and expected != record.version:
        raise FailedPrecondition(
            f"{record.name} is at version {record.version}, not {expected}; read it again and retry",
            type="VERSION",
            subject=record.name,
        )


async def update_intelligence(cmd: commands.UpdateIntelligence, deps: Deps) -> IntelligenceRecord:
    name = record_name(cmd.region, cmd.record_id)
    scope = _scope("UpdateIntelligence", cmd.actor.subject)
    now = deps.clock()
    async with deps.uow() as uow:
        grant = await _grant(uow, cmd.actor, cmd.region, cmd.purpose)
        policy.ensure_can_write(cmd.actor, cmd.region, grant)
        problems = Violations()
        entity, grading, links = _checked_content(
            cmd.entity, cmd.grading, cmd.links, name, problems, partial=True
        )
        problems.raise_if_any()
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.records.get)) is not None:
            touch(prior.name)
            return prior
        record = await _load_for_change(uow, cmd.actor, cmd.region, cmd.record_id, grant)
        if record.deleted:
            raise FailedPrecondition(f"{record.name} was deleted", subject=record.name)
        _check_version(record, cmd.expected_version)
        if entity is not None and pole.kind_of(entity) is not record.kind:
            raise InvalidArgument.field("record.entity", f"a {record.kind.value.lower()} record stays one")
        open_submissions = await uow.submissions.open_for(record.id)
        submission, superseded = record.update(
            entity=entity,
            grading=grading,
            links=links,
            open_submissions=open_submissions,
            now=now,
            by=cmd.actor.username,
        )
        await uow.submissions.save(superseded)
        await uow.submissions.add(submission)
        await uow.records.save(record)
        await remember(uow, scope, cmd.idempotency, record.name)
        await uow.commit()
        return record


async def delete_intelligence(cmd: commands.DeleteIntelligence, deps: Deps) -> IntelligenceRecord:
    policy.ensure_can_write(cmd.actor, cmd.region)
    scope = _scope("DeleteIntelligence", cmd.actor.subject)
    now = deps.clock()
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.records.get)) is not None:
            touch(prior.name)
            return prior
        record = await _load_for_change(uow, cmd.actor, cmd.region, cmd.record_id)
        if record.deleted:
            raise FailedPrecondition(f"{record.name} is already deleted", subject=record.name)
        _check_version(record, cmd.expected_version)
        submission, superseded = record.delete(
            open_submissions=await uow.submissions.open_for(record.id), now=now, by=cmd.actor.username
        )
        await uow.submissions.save(superseded)
        if submission is not None:
            await uow.submissions.add(submission)
        await uow.records.save(record)
        await remember(uow, scope, cmd.idempotency, record.name)
        await uow.commit()
        return record


async def release_intelligence(cmd: commands.ReleaseIntelligence, deps: Deps) -> IntelligenceRecord:
    if not cmd.reason.strip():
        raise InvalidArgument.field("reason", "say why the conditions allow the PND to have it")
    scope = _scope("ReleaseIntelligence", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.records.get)) is not None:
            touch(prior.name)
            return prior
        record = await _load_for_change(uow, cmd.actor, cmd.region, cmd.record_id)
        policy.ensure_can_release(cmd.actor, record)
        released = record.release(await uow.submissions.open_for(record.id), cmd.actor.username)
        if not released:
            raise FailedPrecondition(f"{record.name} has nothing held", subject=record.name)
        log.info("%s released %s (%s)", cmd.actor.username, record.name, cmd.reason.strip()[:200])
        await uow.submissions.save(released)
        await uow.records.save(record)
        await remember(uow, scope, cmd.idempotency, record.name)
        await uow.commit()
        return record


async def get_intelligence(cmd: commands.GetIntelligence, deps: Deps) -> IntelligenceRecord:
    name = record_name(cmd.region, cmd.record_id)
    touch(name)
    grant = None
    async with deps.uow() as uow:
        record = await uow.records.get(cmd.record_id)
        if record is not None and record.region is not cmd.region:
            record = None
        # Only a record made for the job the purpose names can be reached under its grant.
        if record is not None and record.job and record.job == job_of(cmd.purpose, record.region):
            grant = await _grant(uow, cmd.actor, record.region, cmd.purpose)
    return policy.ensure_visible(cmd.actor, record, name, grant)


async def list_intelligence(
    cmd: commands.ListIntelligence, deps: Deps
) -> tuple[list[IntelligenceRecord], bool]:
    async with deps.uow() as uow:
        grant = None if cmd.region is None else await _grant(uow, cmd.actor, cmd.region, cmd.purpose)
        regions, job = policy.listed(cmd.actor, cmd.region, grant)
        if job and cmd.job and cmd.job != job:
            return [], False  # a grant's holder asking for another job: nothing of it is theirs
        query = RecordQuery(regions, cmd.sync_states, cmd.kind, cmd.show_deleted, job or cmd.job)
        found = await uow.records.search(query, cmd.page_size + 1, cmd.after)
    page = found[: cmd.page_size]
    touch(*(r.name for r in page))
    return page, len(found) > cmd.page_size


async def list_submissions(cmd: commands.GetIntelligence, deps: Deps) -> list[Submission]:
    await get_intelligence(cmd, deps)
    async with deps.uow() as uow:
        return await uow.submissions.history(cmd.record_id)


async def sync_status(actor: object, region: object, deps: Deps) -> tuple[QueueStatus, dict]:
    regions = policy.visible_regions(actor, region)  # type: ignore[arg-type]
    async with deps.uow() as uow:
        return await uow.submissions.status(regions, deps.clock()), await uow.records.state_counts(regions)


# -- outbound: the sender ----------------------------------------------------------------


@dataclass(frozen=True)
class DispatchResult:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    skipped: bool = False  # another process holds this sender


async def dispatch_once(cmd: commands.DispatchOnce, deps: Deps) -> DispatchResult:
    """Send one bulk batch of due submissions and store the answers, in one transaction.

    The transaction holds this sender's advisory lock, so two replicas never send the same
    records at once. If the process dies after the PND applied the batch but before the
    answers are committed, the submissions are still queued and are sent again with the same
    submission ids: the PND recognises them and answers as before, so nothing is applied twice.
    """
    now = deps.clock()
    async with deps.uow() as uow:
        if not await uow.submissions.lock_sender(cmd.sender):
            return DispatchResult(skipped=True)
        due = await uow.submissions.due(cmd.sender, cmd.senders, cmd.batch_size, now)
        if not due:
            return DispatchResult()
        try:
            answers = await deps.pnd.submit([s.payload for s in due])
        except PndUnavailable as exc:
            for submission in due:
                submission.failed_attempt(str(exc), deps.clock(), _delay(deps, submission.attempts + 1))
            await uow.submissions.save(due)
            await uow.commit()
            log.warning("PND unavailable for %d submissions: %s", len(due), exc)
            return DispatchResult(failed=len(due))
        answered_at = deps.clock()
        by_id: dict[str, Answer] = {a.submission_id: a for a in answers}
        records = await uow.records.get_many(sorted({s.record_id for s in due}), for_update=True)
        answered = failed = 0
        for submission in due:
            record = records[submission.record_id]
            record.mark_sent()
            answer = by_id.get(submission.submission_id)
            if answer is None:
                submission.failed_attempt(
                    "the acknowledgement had no answer for it",
                    answered_at,
                    _delay(deps, submission.attempts + 1),
                )
                failed += 1
                continue
            submission.attempts += 1
            submission.last_error = ""
            record.apply_answer(submission, answer, answered_at)  # recorded, published at commit
            answered += 1
        await uow.submissions.save(due)
        # In the batch's order: the order the answers' events are published in.
        await uow.records.save_many(list({s.record_id: records[s.record_id] for s in due}.values()))
        await uow.commit()
        return DispatchResult(sent=len(due), answered=answered, failed=failed)


def _delay(deps: Deps, attempts: int) -> timedelta:
    return backoff_delay(
        attempts, base=deps.retry_base_seconds, cap=deps.retry_cap_seconds, rand=deps.jitter()
    )


# -- inbound: searches ---------------------------------------------------------------------

SEARCH_KINDS = ("PERSON", "PHONE", "VEHICLE", "ONLINE_ACCOUNT")


async def search_pnd(cmd: commands.SearchPnd, deps: Deps) -> tuple[SearchRow, SearchAnswer]:
    grant = None
    if policy.needs_grant(cmd.actor, cmd.region, cmd.purpose):
        async with deps.uow() as uow:  # not held open while the PND answers
            grant = await _grant(uow, cmd.actor, cmd.region, cmd.purpose)
    policy.ensure_can_search(cmd.actor, cmd.region, grant)
    criteria = dict(cmd.criteria)
    if cmd.kind not in SEARCH_KINDS:
        raise InvalidArgument.field("search.kind", "PERSON, PHONE, VEHICLE or ONLINE_ACCOUNT")
    if cmd.kind == "PERSON":
        if not str(criteria.get("family_name", "")).strip():
            raise InvalidArgument.field("search.person.family_name", "a person search needs a family name")
        if criteria.get("postcode"):
            postcode = pole.normalise_postcode(str(criteria["postcode"]))
            if postcode is None:
                raise InvalidArgument.field("search.person.postcode", "not a UK postcode")
            criteria["postcode"] = postcode
    elif cmd.kind == "PHONE":
        e164 = pole.normalise_phone(str(criteria.get("phone_e164", "")))
        if e164 is None:
            raise InvalidArgument.field("search.phone_e164", "not a valid phone number")
        criteria = {"phone_e164": e164}
    elif cmd.kind == "ONLINE_ACCOUNT":
        try:
            account = parse_account(str(criteria.get("online_account", "")))
        except AccountError as exc:
            raise InvalidArgument.field("search.online_account", str(exc)) from None
        criteria = {"online_account": account.key}
    else:
        vrm = pole.normalise_vrm(str(criteria.get("vrm", "")))
        if vrm is None:
            raise InvalidArgument.field("search.vrm", "a VRM is 1-8 letters and digits")
        criteria = {"vrm": vrm}
    max_results = min(100, cmd.max_results or 20)
    try:
        answer = await deps.pnd.search(cmd.kind, criteria, max_results)
    except PndUnavailable as exc:
        raise Unavailable(f"the PND cannot be searched now: {exc}") from None
    row = SearchRow(
        id=deps.new_id(),
        region=cmd.region,
        kind=cmd.kind,
        criteria=criteria,
        requested_by=cmd.actor.username,
        purpose=cmd.purpose,
        searched_at=deps.clock(),
        result_count=len(answer.results),
        truncated=answer.truncated,
        job=job_of(cmd.purpose, cmd.region),
    )
    touch(f"regions/{row.region.value}/pndSearches/{row.id}")
    async with deps.uow() as uow:
        await uow.searches.add(row)
        uow.record(events.SearchAnswered(row, answer.results))
        await uow.commit()
    return row, answer


# -- reconciliation ------------------------------------------------------------------------


async def run_reconciliation(
    cmd: commands.RunReconciliation, deps: Deps
) -> tuple[Report, list[RegionFigures]]:
    """Load what the PND holds for the platform, compare it with every local record, store the
    report and its out-of-step items, and record one ReconciliationCompleted per region."""
    started = deps.clock()
    report_id = deps.new_id()
    async with deps.uow() as uow:
        try:
            pnd_records = await uow.reconciliations.load_holdings(deps.pnd.holdings())
        except PndUnavailable as exc:
            raise Unavailable(f"the PND's holdings cannot be read now: {exc}") from None
        figures = await uow.reconciliations.classify(report_id, started)
        report = Report(
            id=report_id,
            scheduled=cmd.scheduled,
            requested_by=cmd.requested_by,
            started_at=started,
            completed_at=deps.clock(),
            pnd_records=pnd_records,
            regions=figures,
        )
        await uow.reconciliations.add(report)
        for region_figures in figures:
            uow.record(events.ReconciliationCompleted(report, region_figures))
        await uow.commit()
    touch(report.name)
    return report, figures


def visible_figures(actor: object, report: Report) -> list[RegionFigures]:
    if policy.everywhere(actor):  # type: ignore[arg-type]
        return report.regions
    return [f for f in report.regions if f.region is actor.region]  # type: ignore[attr-defined]


async def get_reconciliation(
    actor: object, report_id: str | None, deps: Deps
) -> tuple[Report, list[RegionFigures]]:
    async with deps.uow() as uow:
        report = await uow.reconciliations.get(report_id)
    if report is None:
        raise NotFound("no such reconciliation" if report_id else "no reconciliation has run yet")
    touch(report.name)
    return report, visible_figures(actor, report)


async def list_reconciliation_items(
    actor: object,
    report_id: str | None,
    region: object,
    category: str | None,
    page_size: int,
    after: tuple[datetime, str] | None,
    deps: Deps,
) -> tuple[Report, list[ReportItem], bool]:
    regions = policy.visible_regions(actor, region)  # type: ignore[arg-type]
    async with deps.uow() as uow:
        report = await uow.reconciliations.get(report_id)
        if report is None:
            raise NotFound("no such reconciliation" if report_id else "no reconciliation has run yet")
        items = await uow.reconciliations.items(report.id, regions, category, page_size + 1, after)
    touch(report.name)
    return report, items[:page_size], len(items) > page_size
