"""Demo data for the local stack (EMSOU, safe to repeat: every step carries a request id).

- a child referral drafted by the safeguarding officer;
- a child referral sent to children's social care ten days ago with no decision recorded, so
  its local-authority clock is already past due: the overdue scan escalates it to the region's
  supervisors and to the national coordinator within TOEX_OVERDUE_SCAN_SECONDS of the service
  starting, and nobody has to wait a working day to see an escalation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_safeguarding.config import Settings
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.model import Subject
from toex_safeguarding.domain.values import AgeBand, Concern, Destination, RiskLevel
from toex_safeguarding.service_layer import handlers

# Long enough for the decision (1 working day) and the national escalation (one more working
# day) to have passed even across a bank-holiday weekend or Christmas.
PAST_DUE_DAYS = 10


def _actor(username: str, role: Role) -> Principal:
    return Principal(
        subject=f"demo:{username}", username=username, region=Region.EMSOU, roles=frozenset({role})
    )


def _idem(index: int) -> commands.Idempotency:
    return commands.Idempotency(f"demo-seed-{index}", "demo")


async def seed(deps: handlers.Deps) -> list[str]:
    officer = _actor("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)
    supervisor = _actor("supervisor.emsou", Role.SUPERVISOR)
    referral = await handlers.create_referral(
        commands.CreateReferral(
            actor=officer,
            region=Region.EMSOU,
            subject=Subject("demo-person-0001", age_band=AgeBand.CHILD, local_authority="Derby City"),
            concerns=[Concern.CHILD_CRIMINAL_EXPLOITATION],
            risk_level=RiskLevel.HIGH,
            idempotency=_idem(0),
        ),
        deps,
    )
    return [referral.name, await _seed_past_due(deps, officer, supervisor)]


async def _seed_past_due(deps: handlers.Deps, officer: Principal, supervisor: Principal) -> str:
    """Drafted, approved and sent PAST_DUE_DAYS ago, as the officers would have done then."""
    start = deps.clock() - timedelta(days=PAST_DUE_DAYS)

    def at(minutes: int) -> handlers.Deps:
        moment: datetime = start + timedelta(minutes=minutes)
        return handlers.Deps(uow=deps.uow, clock=lambda: moment)

    referral = await handlers.create_referral(
        commands.CreateReferral(
            actor=officer,
            region=Region.EMSOU,
            subject=Subject("demo-person-0002", age_band=AgeBand.CHILD, local_authority="Nottingham City"),
            concerns=[Concern.CHILD_SEXUAL_EXPLOITATION],
            risk_level=RiskLevel.HIGH,
            destinations=[Destination.CHILDRENS_SOCIAL_CARE],
            idempotency=_idem(1),
        ),
        at(0),
    )
    await handlers.submit_for_approval(
        commands.Transition(officer, Region.EMSOU, referral.id, idempotency=_idem(2)), at(10)
    )
    await handlers.approve_referral(
        commands.Transition(supervisor, Region.EMSOU, referral.id, idempotency=_idem(3)), at(30)
    )
    await handlers.record_submission(
        commands.RecordSubmission(
            officer,
            Region.EMSOU,
            referral.id,
            Destination.CHILDRENS_SOCIAL_CARE,
            agency_reference="MASH-DEMO-7",
            idempotency=_idem(4),
        ),
        at(45),
    )
    return referral.name


async def seed_demo(settings: Settings) -> list[str]:
    """`seed-demo`: the demo referral, drafted through the service's own handlers and database."""
    from toex_common.db import create_engine, session_factory

    from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork

    engine = create_engine(settings.database_url, pool_size=2)
    sessions = session_factory(engine)
    try:
        deps = handlers.Deps(uow=lambda: SqlSafeguardingUnitOfWork(sessions))  # type: ignore[arg-type,return-value]
        return [f"demo referral {name}" for name in await seed(deps)]
    finally:
        await engine.dispose()
