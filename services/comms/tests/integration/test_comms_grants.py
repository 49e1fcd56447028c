"""Work under a job grant against the real service: tasking's events (published to the real
nats-server) give London's researcher an EMSOU job; with the job as purpose they import into
EMSOU and analyse the job's data, and reach nothing else of EMSOU; ERSOU's researcher, who does
not hold the job, reaches nothing; once the job is closed London reaches nothing either. Every
call is in the audit log with the job as its purpose."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import grpc
import polars as pl
import pytest
from sqlalchemy import text
from toex.comms.v1 import comms_pb2 as pb
from toex.tasking.events.v2 import events_pb2 as tasking
from toex_common.events import build_event
from toex_common.events.nats import connect
from toex_comms import demo
from toex_kernel.grants import JobGrant
from toex_kernel.regions import Region

from .conftest import Running, upload

pytestmark = pytest.mark.integration

OWNER = "analyst.emsou"
LONDON = "researcher.london"
ERSOU = "researcher.ersou"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


def access(revision: int, state: int, *holders: str) -> tasking.JobAccess:
    return tasking.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[tasking.Assignee(username=h) for h in holders],
    )


async def publish(nats_url: str, message: Any) -> None:
    """Publish as tasking does, on EMSOU's subject; the stream appears when the service's grant
    consumer declares it at start-up, so try until it is there."""
    envelope = build_event(message, domain="tasking", source="test", region=Region.EMSOU)
    nc = await connect(nats_url, "test")
    try:
        for _ in range(100):
            try:
                await nc.jetstream().publish(
                    envelope.subject, envelope.payload, headers=dict(envelope.headers)
                )
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError("the TASKING stream never appeared")
    finally:
        await nc.close()


async def grant_of(comms: Running, job: str) -> JobGrant | None:
    async with comms.app.deps.uow() as uow:
        return await uow.grants.of_job(job)


async def until(comms: Running, job: str, wanted: Any) -> None:
    for _ in range(150):
        if wanted(await grant_of(comms, job)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the grant of {job} never reached the state wanted: {await grant_of(comms, job)}")


async def import_cdr(
    comms: Running, user: str, data: bytes, job: str, purpose: str | None
) -> pb.ImportCdrResponse:
    return await comms.stub.ImportCdr(
        upload(pb.ImportCdrRequest, "regions/EMSOU", data, job=job), metadata=comms.md(user, purpose)
    )


async def not_found(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_london_researcher_works_an_emsou_job_while_they_hold_it(comms_consuming: Running) -> None:
    comms = comms_consuming
    nats_url = comms.app.settings.nats_url
    job_id = uuid.uuid4().hex[:12]
    job, other_job = f"regions/EMSOU/jobs/{job_id}", f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    data = csv_bytes(demo.demo_cdr_rows())
    job_data = (await import_cdr(comms, OWNER, data, job, None)).dataset
    other = (await import_cdr(comms, OWNER, data, other_job, None)).dataset

    # Before any grant: NOT_FOUND for regions/EMSOU, the failure London's researcher met.
    await not_found(import_cdr(comms, LONDON, b"x", job, f"EMSOU/{job_id}"))
    await not_found(
        comms.stub.GetDataset(pb.GetDatasetRequest(name=job_data.name), metadata=comms.md(LONDON, job))
    )

    await publish(nats_url, tasking.JobCreated(job=job, access=access(1, tasking.JOB_STATE_RAISED)))
    await publish(
        nats_url, tasking.JobAssigned(job=job, access=access(2, tasking.JOB_STATE_ASSIGNED, LONDON))
    )
    await until(comms, job, lambda g: g is not None and g.open and LONDON in g.holders)

    # London, with the job as purpose (either spelling): the job's material, and new material for it.
    seen = await comms.stub.GetDataset(
        pb.GetDatasetRequest(name=job_data.name), metadata=comms.md(LONDON, job)
    )
    assert seen.dataset.name == job_data.name
    common = await comms.stub.FindCommonContacts(
        pb.FindCommonContactsRequest(
            scope=pb.AnalysisScope(parent="regions/EMSOU"), targets=demo.DEMO_TARGETS
        ),
        metadata=comms.md(LONDON, job),
    )
    assert common.contacts[0].number == "+447700900100"
    listed = await comms.stub.ListDatasets(
        pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md(LONDON, job)
    )
    assert [d.name for d in listed.datasets] == [job_data.name]
    mine = csv_bytes(demo.demo_cdr_rows()[:5])
    imported = await import_cdr(comms, LONDON, mine, job, f"EMSOU/{job_id}")
    assert imported.dataset.name.startswith("regions/EMSOU/datasets/") and imported.dataset.job == job

    # London: the region's other material, the job's material without the job as purpose.
    await not_found(
        comms.stub.GetDataset(pb.GetDatasetRequest(name=other.name), metadata=comms.md(LONDON, job))
    )
    await not_found(
        comms.stub.FindCommonContacts(
            pb.FindCommonContactsRequest(
                scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[job_data.name, other.name]),
                targets=demo.DEMO_TARGETS,
            ),
            metadata=comms.md(LONDON, job),
        )
    )
    await not_found(
        comms.stub.ListWatchlists(
            pb.ListWatchlistsRequest(parent="regions/EMSOU"), metadata=comms.md(LONDON, job)
        )
    )
    await not_found(
        comms.stub.GetDataset(
            pb.GetDatasetRequest(name=job_data.name), metadata=comms.md(LONDON, "Op Kestrel")
        )
    )
    # A dataset that does not exist, asked for under the grant: NOT_FOUND, as for anyone.
    await not_found(
        comms.stub.GetDataset(
            pb.GetDatasetRequest(name=f"regions/EMSOU/datasets/{uuid.uuid4().hex}"),
            metadata=comms.md(LONDON, job),
        )
    )
    # ERSOU's researcher does not hold the job.
    await not_found(
        comms.stub.GetDataset(pb.GetDatasetRequest(name=job_data.name), metadata=comms.md(ERSOU, job))
    )
    await not_found(import_cdr(comms, ERSOU, mine, job, job))

    await publish(
        nats_url, tasking.JobStatusChanged(job=job, access=access(3, tasking.JOB_STATE_CLOSED, LONDON))
    )
    await until(comms, job, lambda g: g is not None and not g.open)
    await not_found(
        comms.stub.GetDataset(pb.GetDatasetRequest(name=job_data.name), metadata=comms.md(LONDON, job))
    )
    await not_found(import_cdr(comms, LONDON, csv_bytes(demo.demo_cdr_rows()[:6]), job, job))
    # EMSOU's own analyst is untouched by any of it.
    own = await comms.stub.ListDatasets(
        pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md(OWNER)
    )
    assert {d.name for d in own.datasets} == {job_data.name, other.name, imported.dataset.name}

    async with comms.app.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT action, outcome, purpose, resources FROM audit_log "
                    "WHERE actor_username = :user AND action LIKE '%/GetDataset' ORDER BY seq"
                ),
                {"user": LONDON},
            )
        ).all()
    assert [(r.outcome, r.purpose) for r in rows] == [
        ("DENIED_OUT_OF_SCOPE", job),
        ("OK", job),
        ("DENIED_OUT_OF_SCOPE", job),
        ("DENIED_OUT_OF_SCOPE", "Op Kestrel"),
        ("NOT_FOUND", job),
        ("DENIED_OUT_OF_SCOPE", job),
    ]
    assert list(rows[1].resources) == [job_data.name]
