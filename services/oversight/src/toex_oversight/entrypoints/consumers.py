"""The aggregator, at the hub and in a single installation: every region's reported events
(`toex.*.oversight.<Event>`, the value-free copies each installation's reporter publishes:
`entrypoints/reporter.py`) counted into the read model. One durable consumer per producer's
events, on the OVERSIGHT stream, each event once (the platform's inbox drops a redelivered or
replayed one), each batch in one transaction with the inbox claim.

At the hub the OVERSIGHT stream sources every region's (deploy/nats/hub_streams.py), and in a
single installation every region's reporter publishes to it: either way the consumers read every
region's subjects. The region an event counts for is its subject's, which the NATS permissions
vouch for; an event naming a job or referral of another region is dead-lettered, never counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toex_common.events.bus import MessageBus
from toex_common.events.consumer import region_of
from toex_common.events.envelope import IncomingEvent
from toex_kernel.grants import is_job_of

from toex_oversight.adapters import events
from toex_oversight.domain.model import Figure
from toex_oversight.entrypoints.reporter import DOMAIN
from toex_oversight.service_layer import handlers


def _saw(event: IncomingEvent, uow: Any) -> None:
    # The producer's domain is its type's package: `toex.<domain>.events.vN.<Name>` (the subject
    # is oversight's, `toex.<region>.oversight.<Name>`).
    uow.activity.saw(region_of(event), event.event_type.split(".")[1], events.occurred_at(event))


async def on_job_event(event: IncomingEvent, uow: Any) -> None:
    facts = events.job_facts(event)
    _saw(event, uow)
    await handlers.project_job(facts, uow)


async def load_jobs(batch: Sequence[IncomingEvent], uow: Any) -> None:
    """Read (and lock) every job of the batch at once, rather than one at a time."""
    wanted = []
    for event in batch:
        region, job = event.region, getattr(event.message, "job", "")
        if region is not None and is_job_of(job, region):
            wanted.append((job, region))
    await uow.jobs.load(wanted)


async def on_referral_event(event: IncomingEvent, uow: Any) -> None:
    facts = events.referral_facts(event)
    _saw(event, uow)
    await handlers.project_referral(facts, uow)


async def load_referrals(batch: Sequence[IncomingEvent], uow: Any) -> None:
    wanted = []
    for event in batch:
        region, referral = event.region, getattr(event.message, "referral", "")
        if region is not None and referral.startswith(f"regions/{region.value}/referrals/"):
            wanted.append((referral, region))
    await uow.referrals.load(wanted)


async def on_pnd_result(event: IncomingEvent, uow: Any) -> None:
    value = events.pnd_result(event)
    _saw(event, uow)
    handlers.count_event(uow, region_of(event), events.occurred_at(event), Figure.PND_RESULT, value)


async def on_reconciliation(event: IncomingEvent, uow: Any) -> None:
    reconciliation = events.reconciliation(event)
    _saw(event, uow)
    handlers.keep_reconciliation(uow, reconciliation)


async def on_deconfliction_notice(event: IncomingEvent, uow: Any) -> None:
    other = events.deconfliction_with(event)
    _saw(event, uow)
    handlers.count_event(uow, region_of(event), events.occurred_at(event), Figure.DECONFLICTION, other)


def subscribe(bus: MessageBus, service: str, *, batch: int = 256, fetch_wait_seconds: float = 0.1) -> None:
    """The consumers `<service>-tasking`, `-safeguarding`, `-pnd` and `-entity`, each on the
    OVERSIGHT stream's subjects of its producer's events. A backlog (a region catching up) is
    taken `batch` events a transaction; an idle consumer takes what has arrived after at most
    `fetch_wait_seconds`, not when a batch has filled."""
    options: dict[str, Any] = {"batch": batch, "fetch_wait_seconds": fetch_wait_seconds, "domain": DOMAIN}
    for event_type in events.JOB_EVENTS:
        bus.on(f"{service}-tasking", event_type, on_job_event, prefetch=load_jobs, **options)
    for event_type in events.REFERRAL_EVENTS:
        bus.on(f"{service}-safeguarding", event_type, on_referral_event, prefetch=load_referrals, **options)
    for event_type in events.PND_RESULTS:
        bus.on(f"{service}-pnd", event_type, on_pnd_result, **options)
    bus.on(f"{service}-pnd", events.RECONCILIATION_COMPLETED, on_reconciliation, **options)
    bus.on(f"{service}-entity", events.DECONFLICTION_NOTICE, on_deconfliction_notice, **options)
