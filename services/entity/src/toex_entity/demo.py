"""Demo data for the local stack: a few person, phone and vehicle records in EMSOU and
ERSOU. The same person in both regions (a typo in the surname, the same phone number) gives
a deconfliction notice; a weaker pair waits in the review queue."""

from __future__ import annotations

from toex_common.db import create_engine, session_factory
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain import commands
from toex_entity.domain.records import (
    Address,
    Grading,
    Handling,
    PersonData,
    PhoneData,
    RecordType,
    VehicleData,
)
from toex_entity.service_layer import handlers

GRADING = Grading(2, "B", Handling.C, "Not to be disseminated outside law enforcement")


def _person(region: Region, source_id: str, **fields: object) -> commands.IncomingRecord:
    return commands.IncomingRecord(
        region,
        f"niche-{region.token}",
        source_id,
        RecordType.PERSON,
        GRADING,
        PersonData(**fields),  # type: ignore[arg-type]
    )


def demo_records() -> list[commands.IncomingRecord]:
    return [
        _person(
            Region.EMSOU,
            "NOM-1001",
            given_name="Daniel",
            surname="Harrington",
            birth_date="1994-03-12",
            gender="M",
            addresses=(Address(("14 Mill Lane",), "Derby", "DE1 2AB"),),
            phone_numbers=("07700 900123",),
            vrms=("AB12 CDE",),
        ),
        _person(
            Region.ERSOU,
            "NOM-77",
            given_name="Danny",
            surname="Harington",
            birth_date="1994-03-21",
            gender="M",
            addresses=(Address(("14 Mill Lane",), "Derby", "DE1 2AB"),),
            phone_numbers=("+44 7700 900123",),
        ),
        _person(
            Region.EMSOU,
            "NOM-1002",
            given_name="Kayleigh",
            surname="Morris",
            birth_date="2007-11-02",
            gender="F",
            addresses=(Address(("3 Station Road",), "Chesterfield", "S40 1AA"),),
        ),
        _person(
            Region.EMSOU,
            "NOM-1003",
            given_name="Kayley",
            surname="Morris",
            birth_date="2007-11-20",
            gender="F",
        ),
        commands.IncomingRecord(
            Region.EMSOU, "comms-emsou", "TEL-1", RecordType.PHONE, GRADING, PhoneData("07700900123")
        ),
        commands.IncomingRecord(
            Region.ERSOU,
            "anpr-ersou",
            "VRM-9",
            RecordType.VEHICLE,
            GRADING,
            VehicleData("ab12cde", "Ford", "Focus", "Grey"),
        ),
    ]


async def seed(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(session_factory(engine)))  # type: ignore[arg-type,return-value]
        actor = Principal(
            "demo:seed",
            "national_coordinator.national",
            Region.NATIONAL,
            frozenset({Role.NATIONAL_COORDINATOR}),
        )
        results = await handlers.resolve_records(
            commands.ResolveRecords(actor, demo_records(), single=False), deps
        )
        return [
            f"{r.region} record {r.record_id}: {r.outcome.value} -> entities/{r.entity_id}" for r in results
        ]
    finally:
        await engine.dispose()


async def seed_demo(settings: Settings) -> list[str]:
    """`seed-demo`: the demo person records, resolved in two regions."""
    return await seed(settings)
