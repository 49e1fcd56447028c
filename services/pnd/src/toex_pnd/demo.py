"""Demo intelligence for the local stack: a person with a phone and a vehicle (handling P, sent
to the PND at once), and one record graded C (held until a supervisor releases it)."""

from __future__ import annotations

import uuid

from toex_common.db import create_engine, session_factory
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_pnd.adapters.pnd_http import HttpPndGateway
from toex_pnd.adapters.uow import SqlPndUnitOfWork
from toex_pnd.config import Settings
from toex_pnd.domain import commands
from toex_pnd.service_layer import handlers

SEEDER = Principal(
    subject=str(uuid.uuid5(uuid.NAMESPACE_URL, "toex-pnd-seed-demo")),
    username="seed-demo",
    region=Region.NATIONAL,
    roles=frozenset({Role.SERVICE}),
)
P = {"source_evaluation": "1", "intelligence_assessment": "B", "handling": "P", "handling_conditions": ""}
C = {
    "source_evaluation": "2",
    "intelligence_assessment": "C",
    "handling": "C",
    "handling_conditions": "Source protection: not for dissemination without the handler's consent",
}


def _idem(key: str) -> commands.Idempotency:
    return commands.Idempotency(f"demo-{key}", f"demo-{key}")


async def seed(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url, pool_size=2)
    sessions = session_factory(engine)
    gateway = HttpPndGateway(settings.pnd_url, settings.pnd_organisation)
    deps = handlers.Deps(uow=lambda: SqlPndUnitOfWork(sessions), pnd=gateway)  # type: ignore[arg-type,return-value]
    try:
        phone = await handlers.submit_intelligence(
            commands.SubmitIntelligence(
                SEEDER,
                Region.EMSOU,
                {"phone": {"e164": "07700 900789", "line_type": "mobile"}},
                P,
                [],
                _idem("phone"),
            ),
            deps,
        )
        vehicle = await handlers.submit_intelligence(
            commands.SubmitIntelligence(
                SEEDER,
                Region.EMSOU,
                {"vehicle": {"vrm": "FD19 XKR", "make": "Vauxhall", "model": "Corsa", "colour": "black"}},
                P,
                [],
                _idem("vehicle"),
            ),
            deps,
        )
        person = await handlers.submit_intelligence(
            commands.SubmitIntelligence(
                SEEDER,
                Region.EMSOU,
                {
                    "person": {
                        "names": [{"given_names": ["Liam"], "family_name": "Hargreaves"}],
                        "date_of_birth": {"year": 1998, "month": 7, "day": 2},
                        "addresses": [{"lines": ["31 Canal Street"], "town": "Derby", "postcode": "de1 3ld"}],
                    }
                },
                P,
                [
                    {"target": phone.name, "type": "USES", "description": ""},
                    {"target": vehicle.name, "type": "OWNS", "description": "seen driving it daily"},
                ],
                _idem("person"),
            ),
            deps,
        )
        held = await handlers.submit_intelligence(
            commands.SubmitIntelligence(
                SEEDER,
                Region.EMSOU,
                {"online_account": {"platform": "instagram", "handle": "ldn_liam98"}},
                C,
                [],
                _idem("account"),
            ),
            deps,
        )
        return [phone.name, vehicle.name, person.name, held.name]
    finally:
        await gateway.close()
        await engine.dispose()


async def seed_demo(settings: Settings) -> list[str]:
    """`seed-demo`: the demo records, submitted to the PND at TOEX_PND_URL."""
    return [f"demo record {name}" for name in await seed(settings)]
