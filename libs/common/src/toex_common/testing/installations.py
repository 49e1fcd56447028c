"""What the services' installation tests share: the WRONG_INSTALLATION answer as a client reads
it, who may work a job as tasking publishes it, a service's job grants and durable consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_status import rpc_status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_kernel.regions import Region

from toex_common.events import build_event
from toex_common.events.nats import connect
from toex_common.grants import job_grants_table
from toex_common.grpc.status import wrong_installation

# A region installation's settings (what the chart sets from `role` and `region`), and the hub's.
LONDON_INSTALLATION = {"installation": "region", "region": "LONDON"}
EMSOU_INSTALLATION = {"installation": "region", "region": "EMSOU"}
HUB_INSTALLATION = {"installation": "hub", "region": "NATIONAL"}


async def refused_for(call: Awaitable[Any], region: str) -> str:
    """Await a call that must be refused as another installation's; check that the answer names
    the installation serving `region` (FAILED_PRECONDITION, ErrorInfo WRONG_INSTALLATION with
    `region` and `installation`) and return the message the caller reads."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None, "no google.rpc.Status details"
        installation = "hub" if region == "NATIONAL" else region
        assert wrong_installation(status) == {"region": region, "installation": installation}
        message = str(error.details())
        served_by = "the national hub" if region == "NATIONAL" else f"the {region} installation"
        assert message.startswith(f"{region}'s resources are served by {served_by}; this is "), message
        return message
    raise AssertionError(f"a call for {region}'s resource was served")


async def publish_job_access(
    nats_url: str, job: str, holders: Iterable[str], *, revision: int = 1, region: Region | None = None
) -> None:
    """JobAssigned with who may work `job` now, as tasking publishes it: on the job's region's
    subject (or `region`'s)."""
    owner = region or Region.parse(job.split("/")[1])
    message = tasking_events.JobAssigned(
        job=job,
        access=tasking_events.JobAccess(
            revision=revision,
            state=tasking_events.JOB_STATE_ASSIGNED,
            assignees=[tasking_events.Assignee(username=h) for h in holders],
        ),
    )
    envelope = build_event(message, domain="tasking", source="toex/tasking", region=owner)
    nc = await connect(nats_url, "test-tasking")
    try:
        await nc.jetstream().publish(envelope.subject, envelope.payload, headers=dict(envelope.headers))
    finally:
        await nc.close()


async def grants_held(engine: AsyncEngine, jobs: Iterable[str]) -> set[str]:
    """Which of `jobs` the service's job_grants read model holds."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(job_grants_table.c.job).where(job_grants_table.c.job.in_(list(jobs)))
        )
        return {row.job for row in rows}


async def consumer_subjects(app: Any) -> dict[str, list[str]]:
    """The filter subjects of each durable consumer of a running service, as NATS holds them."""
    js = app.platform.js
    found = {}
    for consumer in app.consumers:
        info = await js.consumer_info(consumer._stream, consumer.name)
        found[consumer.name] = sorted(info.config.filter_subjects or [info.config.filter_subject])
    return found


async def eventually(check: Callable[[], Awaitable[Any]], wait: float = 30.0) -> Any:
    """Wait until `check()` answers something truthy (at most `wait` seconds); its last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        value = await check()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.1)
