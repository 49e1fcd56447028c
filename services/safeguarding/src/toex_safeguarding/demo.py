"""Demo data for the local stack: one child referral drafted by the EMSOU safeguarding officer."""

from __future__ import annotations

from toex_common.principal import Principal, Role
from toex_common.regions import Region

from toex_safeguarding.domain import commands
from toex_safeguarding.domain.model import Subject
from toex_safeguarding.domain.values import AgeBand, Concern, RiskLevel
from toex_safeguarding.service_layer import handlers


async def seed(deps: handlers.Deps) -> list[str]:
    officer = Principal(
        subject="demo:safeguarding_officer.emsou",
        username="safeguarding_officer.emsou",
        region=Region.EMSOU,
        roles=frozenset({Role.SAFEGUARDING_OFFICER}),
    )
    referral = await handlers.create_referral(
        commands.CreateReferral(
            actor=officer,
            region=Region.EMSOU,
            subject=Subject("demo-person-0001", age_band=AgeBand.CHILD, local_authority="Derby City"),
            concerns=[Concern.CHILD_CRIMINAL_EXPLOITATION],
            risk_level=RiskLevel.HIGH,
            idempotency=commands.Idempotency("demo-seed-0", "demo"),
        ),
        deps,
    )
    return [referral.name]
