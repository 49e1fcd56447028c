"""One function per use case: project an event into the read model, answer the overview.

The projections run in the consumer's transaction (the unit of work the idempotent consumer
opened, whose inbox has already claimed the event: a redelivered event never gets here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

from toex_oversight.domain import commands, policy
from toex_oversight.domain.model import (
    Figure,
    JobFacts,
    JobRecord,
    Reconciliation,
    ReferralFacts,
    ReferralRecord,
    counted_once,
    day_of,
    difference,
)
from toex_oversight.domain.overview import EARLIEST_DAY, Overview, OverviewQuery, Period, build_overview
from toex_oversight.service_layer.ports import Clock, OversightUnitOfWork, OverviewReader


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    reader: Callable[[], OverviewReader]
    clock: Clock = utcnow


async def project_job(facts: JobFacts, uow: OversightUnitOfWork) -> None:
    """Merge what a tasking event says into its job, and move the counters by what that changed."""
    old = await uow.jobs.get(facts.job, facts.region) or JobRecord(facts.job, facts.region)
    new = old.merge(facts)
    if new is old:  # merge hands back the record itself when the facts change nothing
        return
    uow.counters.add(difference(new.contributions(), old.contributions()))
    uow.deadlines.replace(old.deadlines(), new.deadlines())
    uow.jobs.put(new)


async def project_referral(facts: ReferralFacts, uow: OversightUnitOfWork) -> None:
    old = await uow.referrals.get(facts.referral, facts.region) or ReferralRecord(
        facts.referral, facts.region
    )
    new = old.merge(facts)
    if new is old:
        return
    uow.counters.add(difference(new.contributions(), old.contributions()))
    uow.deadlines.replace(old.deadlines(), new.deadlines())
    uow.referrals.put(new)


def count_event(
    uow: OversightUnitOfWork, region: Region, occurred_at: datetime, figure: Figure, value: str
) -> None:
    """An event that is a count in itself: a PND answer, a deconfliction notice."""
    uow.counters.add(counted_once(region, occurred_at, figure, value))


def keep_reconciliation(uow: OversightUnitOfWork, reconciliation: Reconciliation) -> None:
    uow.reconciliations.offer(reconciliation)


async def get_overview(command: commands.GetOverview, deps: Deps) -> Overview:
    regions = policy.overview_regions(command.actor, command.regions)
    now = deps.clock()
    today = day_of(now)
    last = command.last_day or today
    first = command.first_day
    if first is not None and first > last:
        raise InvalidArgument.field(
            "period.first_day", f"must not be after the last day ({last.isoformat()})"
        )
    query = OverviewQuery(
        regions=regions,
        period=Period(first or EARLIEST_DAY, last),
        force=command.force,
        now=now,
        open_start=first is None,
    )
    tallies = await deps.reader().tallies(query)
    return build_overview(query, tallies)
