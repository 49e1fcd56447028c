"""Work under a job grant against the real service: tasking's v2 events (published to NATS as
tasking publishes them) give a London researcher job J of EMSOU; under J as the purpose they
resolve records into EMSOU and read what J touched, and nothing else of EMSOU; an ERSOU
researcher not holding J reaches nothing; once J is closed the same reads answer NOT_FOUND; the
audit log records London's reads with J as their purpose. ERSOU named as a collaborating region:
its supervisor reads what London reads and changes nothing, until ERSOU is taken off J."""

from __future__ import annotations

import uuid

import grpc
import pytest
from sqlalchemy import select, text
from toex.entity.v1 import entity_pb2 as pb
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import region_pb2
from toex_common.db import audit_table
from toex_common.events import build_event
from toex_kernel.regions import Region

from .test_consumers import eventually, publish
from .test_entity_service import md, person, unique_person

pytestmark = pytest.mark.integration

RES_EMSOU = "researcher.emsou"
RES_LONDON = "researcher.london"
RES_ERSOU = "researcher.ersou"
SUP_ERSOU = "supervisor.ersou"


def access(
    revision: int, state: int, *holders: str, collaborators: tuple[Region, ...] = ()
) -> tasking_events.JobAccess:
    return tasking_events.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[tasking_events.Assignee(username=h) for h in holders],
        collaborating_regions=[r.to_proto() for r in collaborators],  # type: ignore[misc]
    )


async def tasking_says(nats_url: str, message: object) -> None:
    await publish(nats_url, build_event(message, domain="tasking", source="test", region=Region.EMSOU))  # type: ignore[arg-type]


async def grant_of(service, job: str) -> tuple[bool, list[str]] | None:  # type: ignore[no-untyped-def]
    async with service.app.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT open, holders FROM job_grants WHERE job = :job"), {"job": job})
        ).first()
    return (bool(row.open), list(row.holders)) if row else None


async def not_found(call, request, token: str, purpose: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=md(token, purpose))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()


async def test_a_job_grant_opens_the_jobs_material_and_nothing_else_until_closed(
    entity_service, nats_server
) -> None:
    stub, token = entity_service.stub, entity_service.token
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    # EMSOU's own material: a person J names as its subject, and one J has nothing to do with.
    subject = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())),
        metadata=md(token(RES_EMSOU)),
    )
    elsewhere_fields = unique_person()
    elsewhere = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **elsewhere_fields)),
        metadata=md(token(RES_EMSOU)),
    )

    await tasking_says(
        nats_server.url,
        tasking_events.JobCreated(
            job=job,
            subject_entity_ids=[subject.entity.name.split("/")[1]],
            access=access(1, tasking_events.JOB_STATE_RAISED),
        ),
    )
    await tasking_says(
        nats_server.url,
        tasking_events.JobAssigned(job=job, access=access(2, tasking_events.JOB_STATE_ASSIGNED, RES_LONDON)),
    )

    async def granted() -> bool:
        return await grant_of(entity_service, job) == (True, [RES_LONDON])

    assert await eventually(granted), "the grant never reached the entity service"

    # London resolves a record into EMSOU under J, and reads the result.
    fields = unique_person()
    made = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **fields)),
        metadata=md(token(RES_LONDON), job),
    )
    assert made.record.name.startswith("regions/EMSOU/records/")
    assert made.record.region == region_pb2.REGION_EMSOU
    got = (
        await stub.GetEntity(pb.GetEntityRequest(name=made.entity.name), metadata=md(token(RES_LONDON), job))
    ).entity
    assert [r.name for r in got.records] == [made.record.name]
    found = await stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Daniel {fields['surname']}"), metadata=md(token(RES_LONDON), job)
    )
    assert [m.entity.name for m in found.matches] == [made.entity.name]

    # The subject J names: readable, none of EMSOU's records shown, EMSOU named for deconfliction.
    async def subject_recorded() -> pb.Entity | None:
        try:
            answer = await stub.GetEntity(
                pb.GetEntityRequest(name=subject.entity.name), metadata=md(token(RES_LONDON), job)
            )
        except grpc.aio.AioRpcError:
            return None
        return answer.entity

    seen = await eventually(subject_recorded)
    assert seen is not None, "the job's subject never became readable under the grant"
    assert not seen.records and not seen.display_name and not seen.identifiers.official_ids
    assert [d.region for d in seen.other_regions] == [region_pb2.REGION_EMSOU]

    # EMSOU's other material: not found to London under J, nor found by a search.
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=elsewhere.entity.name), token(RES_LONDON), job)
    await not_found(
        stub.ExplainMatch,
        pb.ExplainMatchRequest(record_a=made.record.name, record_b=elsewhere.record.name),
        token(RES_LONDON),
        job,
    )
    hidden = await stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Daniel {elsewhere_fields['surname']}"),
        metadata=md(token(RES_LONDON), job),
    )
    assert not hidden.matches
    # London without J as the purpose, and ERSOU with it but not holding J: not found.
    await not_found(
        stub.GetEntity, pb.GetEntityRequest(name=made.entity.name), token(RES_LONDON), "Op SANDPIPER"
    )
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=made.entity.name), token(RES_ERSOU), job)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ResolveRecord(
            pb.ResolveRecordRequest(
                parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())
            ),
            metadata=md(token(RES_ERSOU), job),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # J closed (a later revision): London's same read is not found.
    await tasking_says(
        nats_server.url,
        tasking_events.JobStatusChanged(
            job=job, access=access(3, tasking_events.JOB_STATE_CLOSED, RES_LONDON)
        ),
    )

    async def closed() -> bool:
        return await grant_of(entity_service, job) == (False, [RES_LONDON])

    assert await eventually(closed), "the closing never reached the entity service"
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=made.entity.name), token(RES_LONDON), job)

    # The audit log has London's reads under J, with J as their purpose.
    async def london_reads() -> list:
        async with entity_service.app.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(audit_table)
                        .where(audit_table.c.actor_username == RES_LONDON)
                        .order_by(audit_table.c.seq)
                    )
                )
                .mappings()
                .all()
            )
        mine = [
            r for r in rows if made.entity.name in r["resources"] or elsewhere.entity.name in r["resources"]
        ]
        return mine if len([r for r in mine if r["action"].endswith("/GetEntity")]) >= 4 else []

    reads = await eventually(london_reads)
    outcomes = [
        (r["action"].rsplit("/", 1)[-1], r["purpose"], r["outcome"], made.entity.name in r["resources"])
        for r in reads
    ]
    assert ("GetEntity", job, "OK", True) in outcomes
    assert ("GetEntity", job, "DENIED_OUT_OF_SCOPE", False) in outcomes  # EMSOU's other entity
    assert ("GetEntity", "Op SANDPIPER", "DENIED_OUT_OF_SCOPE", True) in outcomes
    # After closing: the same read, denied, still under J.
    assert outcomes[-1] == ("GetEntity", job, "DENIED_OUT_OF_SCOPE", True)


async def test_a_collaborating_regions_supervisor_reads_under_the_job_and_changes_nothing(
    entity_service, nats_server
) -> None:
    stub, token = entity_service.stub, entity_service.token
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    await tasking_says(
        nats_server.url,
        tasking_events.JobCreated(
            job=job,
            access=access(1, tasking_events.JOB_STATE_ASSIGNED, RES_LONDON, collaborators=(Region.ERSOU,)),
        ),
    )

    async def granted() -> bool:
        async with entity_service.app.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT collaborators FROM job_grants WHERE job = :job"), {"job": job}
                )
            ).first()
        return row is not None and list(row.collaborators) == ["ERSOU"]

    assert await eventually(granted), "the grant never reached the entity service"
    fields = unique_person()
    made = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **fields)),
        metadata=md(token(RES_LONDON), job),
    )
    other = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())),
        metadata=md(token(RES_LONDON), job),
    )
    elsewhere = await stub.ResolveRecord(
        pb.ResolveRecordRequest(parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())),
        metadata=md(token(RES_EMSOU)),
    )
    assert made.record.job == job and not elsewhere.record.job

    # ERSOU's supervisor, under J: J's records, found by a search, as London reads them.
    got = (
        await stub.GetEntity(pb.GetEntityRequest(name=made.entity.name), metadata=md(token(SUP_ERSOU), job))
    ).entity
    assert [(r.name, r.job) for r in got.records] == [(made.record.name, job)]
    found = await stub.SearchEntities(
        pb.SearchEntitiesRequest(name=f"Daniel {fields['surname']}"), metadata=md(token(SUP_ERSOU), job)
    )
    assert [m.entity.name for m in found.matches] == [made.entity.name]
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=elsewhere.entity.name), token(SUP_ERSOU), job)

    # ...and changes nothing, not even what is all J's.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ResolveRecord(
            pb.ResolveRecordRequest(
                parent="regions/EMSOU", record=person(uuid.uuid4().hex, **unique_person())
            ),
            metadata=md(token(SUP_ERSOU), job),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.MergeEntities(
            pb.MergeEntitiesRequest(name=made.entity.name, others=[other.entity.name], reason="same"),
            metadata=md(token(SUP_ERSOU), job),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # ERSOU's researcher, with J as the purpose: nothing.
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=made.entity.name), token(RES_ERSOU), job)

    # ERSOU taken off J: its supervisor's same read is not found.
    await tasking_says(
        nats_server.url,
        tasking_events.JobUpdated(
            job=job,
            changed_fields=["collaborating_regions"],
            access=access(2, tasking_events.JOB_STATE_ASSIGNED, RES_LONDON),
        ),
    )

    async def withdrawn() -> bool:
        return not await granted()

    assert await eventually(withdrawn), "the change never reached the entity service"
    await not_found(stub.GetEntity, pb.GetEntityRequest(name=made.entity.name), token(SUP_ERSOU), job)
