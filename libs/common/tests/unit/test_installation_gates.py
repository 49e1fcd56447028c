"""The installation applied by the platform: request gates (pure, and behind the standard chain on
a real grpc.aio server on loopback with a fake token verifier), the WRONG_INSTALLATION status,
consumers' subjects and the outbox's guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import create_async_engine
from toex.comms.v1 import comms_pb2
from toex.entity.v1 import entity_pb2
from toex.pnd.v1 import pnd_pb2
from toex.tasking.v1 import tasking_pb2
from toex_common.events.envelope import build_event
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server
from toex_common.grpc.status import to_status, wrong_installation
from toex_common.installation import (
    InstallationError,
    OutsideInstallation,
    bind_publisher,
    ensure_publishable,
    publishable_subjects,
    request_gates,
    scoped_subjects,
)
from toex_common.testing.fakes import FakeAuditSink, principal
from toex_kernel.errors import Unauthenticated, WrongInstallation
from toex_kernel.installation import Installation, Served, served_for
from toex_kernel.policy import MethodPolicy, MethodRule, rules_for
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

LONDON = Installation.of("region", "LONDON")
HUB = Installation.of("hub", "NATIONAL")
SINGLE = Installation.single()

TASKING = "toex.tasking.v1.TaskingService"
COMMS = "toex.comms.v1.CommsAnalysisService"
ENTITY = "toex.entity.v1.EntityResolutionService"
PND = "toex.pnd.v1.PndSyncService"

SERVED = (
    served_for(
        TASKING,
        {
            "CreateJob": Served.by("parent"),
            "GetJob": Served.by("name"),
            "ListJobs": Served.listing_of("parent"),
            "UpdateJob": Served.by("job.name"),
        },
    )
    | served_for(COMMS, {"GetContactNetwork": Served.by("scope.parent", "scope.datasets")})
    | served_for(
        ENTITY,
        {"SplitEntity": Served.by("records"), "GetEntity": Served.nowhere("entity ids carry no region")},
    )
    | served_for(
        PND,
        {
            "GetSyncStatus": Served.listing_of("name", empty="regions/-/syncStatus"),
            "ListReconciliationItems": Served.filtered_by("region"),
        },
    )
)


def gates(installation: Installation) -> dict[str, Any]:
    return request_gates(installation, SERVED, SERVED)


def refused(gate: Any, request: Any) -> WrongInstallation:
    with pytest.raises(WrongInstallation) as caught:
        gate(request)
    return caught.value


def test_a_region_installation_refuses_another_regions_resource_wherever_the_request_names_it() -> None:
    g = gates(LONDON)
    create, get = g[f"/{TASKING}/CreateJob"], g[f"/{TASKING}/GetJob"]
    assert refused(create, tasking_pb2.CreateJobRequest(parent="regions/EMSOU")).installation == "EMSOU"
    assert refused(get, tasking_pb2.GetJobRequest(name="regions/NATIONAL/jobs/1")).installation == "hub"
    update = tasking_pb2.UpdateJobRequest(job=tasking_pb2.Job(name="regions/ERSOU/jobs/1"))
    assert refused(g[f"/{TASKING}/UpdateJob"], update).region == "ERSOU"
    # in a nested message, and in any item of a repeated field
    network = g[f"/{COMMS}/GetContactNetwork"]
    scope = comms_pb2.AnalysisScope(parent="regions/LONDON", datasets=["regions/EMSOU/datasets/d1"])
    assert refused(network, comms_pb2.GetContactNetworkRequest(scope=scope)).region == "EMSOU"
    split = entity_pb2.SplitEntityRequest(
        name="entities/e1", records=["regions/LONDON/records/a", "regions/YH/records/b"]
    )
    assert refused(g[f"/{ENTITY}/SplitEntity"], split).installation == "YH"


def test_a_region_installation_serves_its_own_and_leaves_malformed_names_to_the_method() -> None:
    g = gates(LONDON)
    request = tasking_pb2.GetJobRequest(name="regions/LONDON/jobs/1")
    assert g[f"/{TASKING}/GetJob"](request) is request
    # not a region it could route: the servicer answers INVALID_ARGUMENT naming the field
    g[f"/{TASKING}/GetJob"](tasking_pb2.GetJobRequest(name="regions/ATLANTIS/jobs/1"))
    g[f"/{TASKING}/CreateJob"](tasking_pb2.CreateJobRequest(parent=""))
    g[f"/{ENTITY}/GetEntity"](entity_pb2.GetEntityRequest(name="entities/e1"))
    scope = comms_pb2.AnalysisScope(parent="regions/LONDON", datasets=["regions/LONDON/datasets/d1"])
    g[f"/{COMMS}/GetContactNetwork"](comms_pb2.GetContactNetworkRequest(scope=scope))


def test_every_region_is_read_as_the_served_one() -> None:
    for installation, code in ((LONDON, "LONDON"), (HUB, "NATIONAL")):
        listing = gates(installation)[f"/{TASKING}/ListJobs"]
        assert listing(tasking_pb2.ListJobsRequest(parent="regions/-")).parent == f"regions/{code}"
        assert listing(tasking_pb2.ListJobsRequest()).parent == f"regions/{code}"
        status = gates(installation)[f"/{PND}/GetSyncStatus"]
        assert status(pnd_pb2.GetSyncStatusRequest()).name == f"regions/{code}/syncStatus"
        items = gates(installation)[f"/{PND}/ListReconciliationItems"]
        assert items(pnd_pb2.ListReconciliationItemsRequest(parent="reconciliations/r1")).region == code
    listing = gates(LONDON)[f"/{TASKING}/ListJobs"]
    assert refused(listing, tasking_pb2.ListJobsRequest(parent="regions/EMSOU")).installation == "EMSOU"
    items = gates(LONDON)[f"/{PND}/ListReconciliationItems"]
    assert refused(items, pnd_pb2.ListReconciliationItemsRequest(region="emsou")).region == "EMSOU"
    assert (
        refused(gates(HUB)[f"/{TASKING}/ListJobs"], tasking_pb2.ListJobsRequest(parent="regions/SW")).region
        == "SW"
    )


def test_a_single_installation_checks_nothing_but_every_method_must_declare() -> None:
    assert gates(SINGLE) == {}
    with pytest.raises(InstallationError, match=f"/{TASKING}/AssignJob"):
        request_gates(SINGLE, SERVED, [*SERVED, f"/{TASKING}/AssignJob"])
    with pytest.raises(InstallationError, match="has no field 'nmae'"):
        request_gates(SINGLE, served_for(TASKING, {"GetJob": Served.by("nmae")}), [])
    with pytest.raises(InstallationError, match="is not a string field"):
        request_gates(SINGLE, served_for(TASKING, {"CreateJob": Served.by("job")}), [])
    with pytest.raises(InstallationError, match="names one region, not many"):
        request_gates(SINGLE, served_for(ENTITY, {"SplitEntity": Served.listing_of("records")}), [])


def test_the_refusal_carries_where_to_go_as_error_info() -> None:
    with pytest.raises(WrongInstallation) as caught:
        LONDON.ensure_serves(Region.EMSOU)
    status = to_status(caught.value)
    assert status.code == code_pb2.FAILED_PRECONDITION
    assert wrong_installation(status) == {"region": "EMSOU", "installation": "EMSOU"}
    kinds = [d.type_url.rsplit("/", 1)[-1] for d in status.details]
    assert kinds == ["google.rpc.ErrorInfo", "google.rpc.PreconditionFailure"]
    # any other failed precondition is not a routing answer
    from toex_kernel.errors import FailedPrecondition

    assert wrong_installation(to_status(FailedPrecondition("job is closed"))) is None


# ---------------------------------------------------------------- behind the standard chain

USERS = {"tok-coordinator": principal("coordinator.national", Role.NATIONAL_COORDINATOR, Region.NATIONAL)}


class FakeVerifier:
    async def verify(self, token: str) -> Principal:
        if token not in USERS:
            raise Unauthenticated("token rejected")
        return USERS[token]


async def get_job(
    request: tasking_pb2.GetJobRequest, context: grpc.aio.ServicerContext
) -> tasking_pb2.GetJobResponse:
    return tasking_pb2.GetJobResponse(job=tasking_pb2.Job(name=request.name))


async def list_jobs(
    request: tasking_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
) -> tasking_pb2.ListJobsResponse:
    return tasking_pb2.ListJobsResponse(jobs=[tasking_pb2.Job(name=f"{request.parent}/jobs/seen")])


@pytest.fixture
async def london() -> AsyncIterator[tuple[grpc.aio.Channel, FakeAuditSink]]:
    methods = {
        "GetJob": grpc.unary_unary_rpc_method_handler(
            get_job,
            request_deserializer=tasking_pb2.GetJobRequest.FromString,
            response_serializer=tasking_pb2.GetJobResponse.SerializeToString,
        ),
        "ListJobs": grpc.unary_unary_rpc_method_handler(
            list_jobs,
            request_deserializer=tasking_pb2.ListJobsRequest.FromString,
            response_serializer=tasking_pb2.ListJobsResponse.SerializeToString,
        ),
    }
    rules = rules_for(
        TASKING,
        {
            "GetJob": MethodRule.read(Role.NATIONAL_COORDINATOR),
            "ListJobs": MethodRule.read(Role.NATIONAL_COORDINATOR),
        },
    )
    audit = FakeAuditSink()
    srv, port, _ = await create_server(
        register=lambda s: s.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(TASKING, methods),)
        ),
        service_names=[TASKING],
        interceptors=standard_interceptors(
            service="test",
            verifier=FakeVerifier(),
            policy=MethodPolicy(rules),
            audit=audit,  # type: ignore[arg-type]
        ),
        gates=request_gates(LONDON, SERVED, rules),
    )
    await srv.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, audit
    finally:
        await channel.close()
        await srv.stop(0)


METADATA = (("authorization", "Bearer tok-coordinator"), ("x-toex-purpose", "Op TEST"))


async def test_behind_the_chain_a_call_for_another_region_is_refused_and_audited(london) -> None:
    channel, audit = london
    stub = channel.unary_unary(
        f"/{TASKING}/GetJob",
        request_serializer=tasking_pb2.GetJobRequest.SerializeToString,
        response_deserializer=tasking_pb2.GetJobResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(tasking_pb2.GetJobRequest(name="regions/EMSOU/jobs/j1"), metadata=METADATA)
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "EMSOU's resources are served by the EMSOU installation; this is the LONDON installation"
    )
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and wrong_installation(status) == {"region": "EMSOU", "installation": "EMSOU"}
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("WRONG_INSTALLATION", "toex")
    assert audit.entries[-1].outcome == "FAILED_PRECONDITION"
    assert audit.entries[-1].actor_username == "coordinator.national"

    # its own region's is served; unauthenticated calls are refused before any gate
    answer = await stub(tasking_pb2.GetJobRequest(name="regions/LONDON/jobs/j1"), metadata=METADATA)
    assert answer.job.name == "regions/LONDON/jobs/j1"
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub(tasking_pb2.GetJobRequest(name="regions/EMSOU/jobs/j1"))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_behind_the_chain_every_region_lists_the_served_one(london) -> None:
    channel, _ = london
    stub = channel.unary_unary(
        f"/{TASKING}/ListJobs",
        request_serializer=tasking_pb2.ListJobsRequest.SerializeToString,
        response_deserializer=tasking_pb2.ListJobsResponse.FromString,
    )
    answer = await stub(tasking_pb2.ListJobsRequest(parent="regions/-"), metadata=METADATA)
    assert [j.name for j in answer.jobs] == ["regions/LONDON/jobs/seen"]


# ---------------------------------------------------------------- consumers and publishing


def test_consumers_read_the_installations_subjects_only() -> None:
    subjects = ["toex.*.tasking.JobCreated", "toex.*.tasking.JobAssigned"]
    assert scoped_subjects(SINGLE, subjects) == subjects
    assert scoped_subjects(LONDON, subjects) == [
        "toex.london.tasking.JobCreated",
        "toex.london.tasking.JobAssigned",
    ]
    assert scoped_subjects(HUB, subjects[:1]) == ["toex.national.tasking.JobCreated"]
    assert scoped_subjects(LONDON, ["toex.london.tasking.JobCreated"]) == ["toex.london.tasking.JobCreated"]
    with pytest.raises(InstallationError, match="another region's"):
        scoped_subjects(LONDON, ["toex.emsou.tasking.JobCreated"])


def test_a_region_installations_units_of_work_publish_its_own_region_only() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    other = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    bind_publisher(engine, LONDON)
    bind_publisher(other, SINGLE)
    from toex.tasking.events.v2 import events_pb2 as tasking_events

    own = build_event(tasking_events.JobCreated(), domain="tasking", source="t", region=Region.LONDON)
    emsou = build_event(tasking_events.JobCreated(), domain="tasking", source="t", region=Region.EMSOU)
    ensure_publishable(engine, [own.subject])
    with pytest.raises(OutsideInstallation, match=r"LONDON installation publishes only on toex\.london\."):
        ensure_publishable(engine, [own.subject, emsou.subject])
    # a single installation's (and an unbound engine's) units publish for every region
    ensure_publishable(other, [emsou.subject])
    ensure_publishable(None, [emsou.subject])


def test_the_outbox_relays_the_subjects_the_installation_publishes() -> None:
    assert publishable_subjects(LONDON) == ["toex.london.>"]
    assert publishable_subjects(Installation.of("hub", "NATIONAL")) == ["toex.national.>", "toex.*.hub.>"]
    assert publishable_subjects(SINGLE) is None
