"""Finding 6: one request must not freeze a service.

Each attack sends a hostile input with a deadline of a few seconds. Before the fixes the
comms target list was de-duplicated in quadratic time on the event loop before its cap was
checked, the entity email pattern backtracked quadratically, and analysis sizes had no upper
bound; each answer now comes at once, as INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import grpc
import pytest
from toex.comms.v1 import comms_pb2 as cpb
from toex.entity.v1 import entity_pb2 as epb

NC = "national_coordinator.national"
RES = "researcher.emsou"
DEADLINE = 3.0


async def invalid_field(call, request, metadata) -> str:  # type: ignore[no-untyped-def]
    """The field an INVALID_ARGUMENT names; fails on any other answer, a timeout included."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(request, metadata=metadata, timeout=DEADLINE)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    return error.value.details() or ""


async def test_a_hundred_thousand_targets(comms) -> None:
    targets = [f"+4477009{n:05d}" for n in range(100_000)]
    scope = cpb.AnalysisScope(parent="regions/EMSOU", datasets=["regions/EMSOU/datasets/none"])
    details = await invalid_field(
        comms.stub.GetContactNetwork,
        cpb.GetContactNetworkRequest(scope=scope, targets=targets),
        comms.md(RES),
    )
    assert "targets" in details
    # One very long "number" is refused without being parsed.
    details = await invalid_field(
        comms.stub.GetContactNetwork,
        cpb.GetContactNetworkRequest(scope=scope, targets=["7" * 1_000_000]),
        comms.md(RES),
    )
    assert "targets[0]" in details


@pytest.mark.parametrize(
    ("rpc", "request_factory", "field"),
    [
        (
            "GetContactNetwork",
            lambda s: cpb.GetContactNetworkRequest(scope=s, targets=["+447700900001"], max_edges=10**9),
            "max_edges",
        ),
        (
            "FindColocations",
            lambda s: cpb.FindColocationsRequest(scope=s, targets=["+447700900001"], window_seconds=10**9),
            "window_seconds",
        ),
        (
            "FindConvoys",
            lambda s: cpb.FindConvoysRequest(
                scope=cpb.AnprScope(parent=s.parent, datasets=s.datasets), window_seconds=2_000_000_000
            ),
            "window_seconds",
        ),
        (
            "FindCommonContacts",
            lambda s: cpb.FindCommonContactsRequest(scope=s, targets=["+447700900001"], limit=10**9),
            "limit",
        ),
    ],
)
async def test_analysis_sizes_are_bounded_before_work(comms, rpc, request_factory, field) -> None:  # type: ignore[no-untyped-def]
    scope = cpb.AnalysisScope(parent="regions/EMSOU", datasets=["regions/EMSOU/datasets/none"])
    details = await invalid_field(getattr(comms.stub, rpc), request_factory(scope), comms.md(RES))
    assert field in details


async def test_a_crafted_email_is_refused_at_once(entity) -> None:
    hostile = "a@" + "b." * 200_000 + "@"
    details = await invalid_field(
        entity.stub.SearchEntities, epb.SearchEntitiesRequest(email=hostile), entity.md(NC)
    )
    assert "email" in details
    assert hostile[:300] not in details  # the answer does not echo a megabyte back


async def test_an_upload_beyond_the_limit_is_refused_and_nothing_is_kept(launch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from toex.comms.v1 import comms_pb2_grpc

    data = tmp_path / "bounded"
    comms = await launch(
        "toex_comms",
        comms_pb2_grpc.CommsAnalysisServiceStub,
        data_dir=data,
        consume_events=False,
        max_upload_bytes=64 * 1024,
    )

    def header(size: int) -> cpb.ImportCdrRequest:
        return cpb.ImportCdrRequest(
            header=cpb.ImportHeader(parent="regions/EMSOU", filename="calls.csv", size_bytes=size)
        )

    async def declared_too_big():  # type: ignore[no-untyped-def]
        yield header(10**12)
        yield cpb.ImportCdrRequest(chunk=b"caller,callee,start\n")

    details = await invalid_field(comms.stub.ImportCdr, declared_too_big(), comms.md(RES))
    assert "header.size_bytes" in details

    async def lies_about_its_size():  # type: ignore[no-untyped-def]
        yield header(100)
        for _ in range(64):  # 512 KiB against a 64 KiB limit
            yield cpb.ImportCdrRequest(chunk=b"+447700900001,+447700900002,2026-01-01T00:00:00Z\n" * 160)

    details = await invalid_field(comms.stub.ImportCdr, lies_about_its_size(), comms.md(RES))
    assert "chunk" in details
    listed = await comms.stub.ListDatasets(
        cpb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md(RES), timeout=DEADLINE
    )
    assert not listed.datasets
    # Neither upload left a partial file behind (uploads/<id>.csv while it streams).
    assert not [p for p in data.rglob("*") if p.is_file()], list(data.rglob("*"))


async def test_a_huge_page_size_answers_at_once(comms) -> None:  # type: ignore[no-untyped-def]
    answer = await comms.stub.ListDatasets(
        cpb.ListDatasetsRequest(parent="regions/EMSOU", page_size=2**31 - 1),
        metadata=comms.md(RES),
        timeout=DEADLINE,
    )
    assert not answer.next_page_token


async def test_a_long_analysis_leaves_the_service_answering(comms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Analyses run off the event loop: while one works through two million ANPR reads, the
    same service answers other calls at once (here its health check, every 20 ms)."""
    import asyncio
    import itertools
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from toex_comms.demo import write_bench_anpr

    path = write_bench_anpr(tmp_path / "anpr.csv", 2_000_000)

    async def upload():  # type: ignore[no-untyped-def]
        yield cpb.ImportAnprRequest(header=cpb.ImportHeader(parent="regions/EMSOU", filename="anpr.csv"))
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                yield cpb.ImportAnprRequest(chunk=chunk)

    imported = await comms.stub.ImportAnpr(upload(), metadata=comms.md(RES), timeout=120)
    scope = cpb.AnprScope(parent="regions/EMSOU", datasets=[imported.dataset.name])
    health = health_pb2_grpc.HealthStub(comms.channel)

    async def analyse() -> float:
        started = time.perf_counter()
        await comms.stub.FindConvoys(
            cpb.FindConvoysRequest(scope=scope, window_seconds=180, min_occasions=3),
            metadata=comms.md(RES),
            timeout=120,
        )
        return time.perf_counter() - started

    # The service runs in this process, on this event loop: had the analysis run on the loop,
    # no health check would be answered (and no iteration here would run) until it finished.
    analysis = asyncio.create_task(analyse())
    answered = [time.perf_counter()]
    while not analysis.done():
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        answered.append(time.perf_counter())
        await asyncio.sleep(0.02)
    took = await analysis
    gaps = [later - earlier for earlier, later in itertools.pairwise(answered)]
    assert took > 0.25, f"the analysis took {took:.2f} s: too short to show anything"
    # On the loop, one wait would last the whole analysis.
    assert len(gaps) > 3 and max(gaps) < took / 2, (
        f"the longest wait for an answer was {max(gaps):.2f} s during a {took:.2f} s analysis"
    )
