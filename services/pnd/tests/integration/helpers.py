"""Requests and waits shared by the PND integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pole_pb2
from toex.type.v1 import security_pb2

GRADED_P = pole_pb2.Grading(
    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)
GRADED_C = pole_pb2.Grading(
    source_evaluation=pole_pb2.SOURCE_EVALUATION_2,
    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_C,
    handling=security_pb2.HANDLING_CODE_C,
    handling_conditions="Source protection: handler's consent needed",
)


def person(
    family: str, given: str = "Sam", year: int = 1990, postcode: str = "DE1 2AB"
) -> pole_pb2.PoleEntity:
    return pole_pb2.PoleEntity(
        person=pole_pb2.Person(
            names=[pole_pb2.PersonName(given_names=[given], family_name=family)],
            date_of_birth=pole_pb2.PartialDate(year=year),
            addresses=[pole_pb2.Address(lines=["1 High Street"], town="Derby", postcode=postcode)],
        )
    )


def phone(number: str) -> pole_pb2.PoleEntity:
    return pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number))


def vehicle(vrm: str) -> pole_pb2.PoleEntity:
    return pole_pb2.PoleEntity(vehicle=pole_pb2.Vehicle(vrm=vrm))


def submit(
    entity: pole_pb2.PoleEntity, region: str = "EMSOU", grading: pole_pb2.Grading = GRADED_P, links: Any = ()
) -> pb.SubmitIntelligenceRequest:
    return pb.SubmitIntelligenceRequest(
        parent=f"regions/{region}",
        record=pb.IntelligenceRecord(entity=entity, grading=grading, links=list(links)),
    )


def update(name: str, entity: pole_pb2.PoleEntity) -> pb.UpdateIntelligenceRequest:
    request = pb.UpdateIntelligenceRequest(record=pb.IntelligenceRecord(name=name, entity=entity))
    request.update_mask.paths.append("entity")
    return request


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Wait until `check` returns something truthy; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(every)


async def open_submissions(database: str) -> int:
    engine = create_async_engine(database)
    try:
        async with engine.connect() as conn:
            return int(
                (
                    await conn.execute(text("SELECT count(*) FROM submissions WHERE state = 'QUEUED'"))
                ).scalar_one()
            )
    finally:
        await engine.dispose()


def check_exactly_once_in_order(applied: list[dict[str, Any]], expected: dict[str, int]) -> None:
    """Every version 1..n of every record applied exactly once, each record's in order."""
    seen: dict[str, list[int]] = {}
    for row in applied:
        seen.setdefault(row["source_ref"], []).append(row["record_version"])
    for ref, newest in expected.items():
        assert seen.get(ref) == list(range(1, newest + 1)), (ref, seen.get(ref))
    ids = [row["submission_id"] for row in applied]
    assert len(ids) == len(set(ids)), "a submission was applied twice"
