"""The demo data lets a newcomer see an overdue escalation on a fresh stack without waiting."""

from datetime import datetime

from toex.safeguarding.events.v1 import events_pb2 as ev
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex_common.testing.fakes import principal
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_safeguarding import demo
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.calendar import LONDON
from toex_safeguarding.domain.values import ClockKind, Escalation, State
from toex_safeguarding.service_layer import handlers

from .fakes import FakeSafeguardingUnitOfWork

# A Tuesday after the Christmas and New Year bank holidays: the ten days back cross both.
NOW = datetime(2026, 1, 6, 9, 0, tzinfo=LONDON)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)


async def test_seed_holds_a_referral_already_overdue_at_both_levels() -> None:
    uow = FakeSafeguardingUnitOfWork()
    deps = handlers.Deps(uow=lambda: uow, clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    names = await demo.seed(deps)
    assert len(names) == 2
    assert await demo.seed(deps) == names  # safe to repeat
    assert len(uow.referrals.referrals) == 2

    past_due = uow.referrals.referrals[names[1].rsplit("/", 1)[-1]]
    assert past_due.state is State.SUBMITTED
    [clock] = past_due.clocks
    assert clock.kind is ClockKind.LOCAL_AUTHORITY_DECISION and clock.due_at < NOW

    rows, total, _ = await handlers.list_overdue(commands.ListOverdue(SUP, Region.EMSOU, 10), deps)
    assert total == 1 and rows[0].referral.name == names[1]

    assert await handlers.escalate_overdue(commands.EscalateOverdue(NOW), deps) == 1
    overdue = [e for e in uow.committed_events if e.event_type.endswith("ReferralOverdue")]
    assert len(overdue) == 2
    # Each event says which level it raised, in its own field and in the clock it carries.
    messages = [ev.ReferralOverdue.FromString(e.payload) for e in overdue]
    assert [(m.escalation, m.clock.escalation) for m in messages] == [
        (pb.ESCALATION_SUPERVISOR, pb.ESCALATION_SUPERVISOR),
        (pb.ESCALATION_NATIONAL_COORDINATOR, pb.ESCALATION_NATIONAL_COORDINATOR),
    ]
    stored = uow.referrals.referrals[past_due.id]
    assert stored.clocks[0].escalation is Escalation.NATIONAL_COORDINATOR
