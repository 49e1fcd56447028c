"""The message bus: subjects and streams from event types, dispatch by type, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.tasking.events.v1 import events_pb2 as tasking_events
from toex_common.events.bus import MessageBus, subject_of
from toex_common.events.consumer import PermanentError
from toex_common.events.streams import ENTITY_STREAM, TASKING_STREAM
from toex_kernel.events import decode


def _event(message: Any, subject: str) -> Any:
    headers = {"ce-id": "e-1", "ce-type": message.DESCRIPTOR.full_name}
    return decode(subject, message.SerializeToString(), headers)


def test_subjects_and_streams_come_from_the_event_types() -> None:
    bus = MessageBus()

    async def nothing(event: Any, uow: Any) -> None:
        return None

    bus.on("x-jobs", tasking_events.JobAssigned, nothing)
    bus.on("x-jobs", tasking_events.JobReassigned, nothing)
    bus.on("x-entities", entity_events.RecordLinked, nothing)
    assert bus.subjects("x-jobs") == ["toex.*.tasking.JobAssigned", "toex.*.tasking.JobReassigned"]
    assert bus.subjects("x-jobs", scope="emsou") == [
        "toex.emsou.tasking.JobAssigned",
        "toex.emsou.tasking.JobReassigned",
    ]
    assert bus.streams() == [TASKING_STREAM, ENTITY_STREAM]
    assert subject_of(pnd_events.PndResultReceived) == "toex.*.pnd.PndResultReceived"
    built = bus.consumers(lambda **config: config, uow_factory=lambda: None)  # type: ignore[arg-type,return-value]
    assert [(c["name"], c["stream"]) for c in built] == [
        ("x-jobs", TASKING_STREAM),
        ("x-entities", ENTITY_STREAM),
    ]


def test_one_consumer_reads_one_stream_and_one_handler_per_type() -> None:
    bus = MessageBus()

    async def nothing(event: Any, uow: Any) -> None:
        return None

    bus.on("x", tasking_events.JobAssigned, nothing)
    with pytest.raises(ValueError, match="give it a consumer of its own"):
        bus.on("x", entity_events.RecordLinked, nothing)
    with pytest.raises(ValueError, match="already handles"):
        bus.on("x", tasking_events.JobAssigned, nothing)


@pytest.mark.asyncio
async def test_events_go_to_the_handler_of_their_type_and_others_are_refused() -> None:
    bus = MessageBus()
    seen: list[tuple[str, Any]] = []

    async def assigned(event: Any, uow: Any) -> None:
        seen.append(("assigned", event.message.job))

    async def reassigned(event: Any, uow: Any) -> None:
        seen.append(("reassigned", event.message.job))

    bus.on("x", tasking_events.JobAssigned, assigned)
    bus.on("x", tasking_events.JobReassigned, reassigned)
    dispatch = bus.dispatcher("x")
    await dispatch(
        _event(tasking_events.JobReassigned(job="regions/EMSOU/jobs/2"), "toex.emsou.tasking.JobReassigned"),
        None,
    )
    await dispatch(
        _event(tasking_events.JobAssigned(job="regions/EMSOU/jobs/1"), "toex.emsou.tasking.JobAssigned"), None
    )
    assert seen == [("reassigned", "regions/EMSOU/jobs/2"), ("assigned", "regions/EMSOU/jobs/1")]
    with pytest.raises(PermanentError, match=r"got toex\.tasking\.events\.v1\.JobOverdue"):
        await dispatch(_event(tasking_events.JobOverdue(job="j"), "toex.emsou.tasking.JobAssigned"), None)
    untyped = decode("toex.emsou.tasking.JobAssigned", b"", {"ce-id": "e-2"})
    with pytest.raises(PermanentError, match="an untyped event"):
        await dispatch(untyped, None)


@pytest.mark.asyncio
async def test_a_prefetch_gets_the_batchs_events_of_its_type_once() -> None:
    bus = MessageBus()
    fetched: list[tuple[str, list[str]]] = []

    async def nothing(event: Any, uow: Any) -> None:
        return None

    async def assignments(events: Any, uow: Any) -> None:
        fetched.append(("assigned", [e.message.job for e in events]))

    bus.on("x", tasking_events.JobAssigned, nothing, prefetch=assignments)
    bus.on("x", tasking_events.JobReassigned, nothing)
    bus.on("y", tasking_events.JobOverdue, nothing)
    assert bus.prefetcher("y") is None
    prefetch = bus.prefetcher("x")
    assert prefetch is not None
    await prefetch(
        [
            _event(tasking_events.JobAssigned(job="j1"), "toex.emsou.tasking.JobAssigned"),
            _event(tasking_events.JobReassigned(job="j2"), "toex.emsou.tasking.JobReassigned"),
            _event(tasking_events.JobAssigned(job="j3"), "toex.emsou.tasking.JobAssigned"),
        ],
        None,
    )
    assert fetched == [("assigned", ["j1", "j3"])]
    built = {c["name"]: c for c in bus.consumers(lambda **config: config, uow_factory=lambda: None)}  # type: ignore[arg-type,return-value]
    assert callable(built["x"]["prefetch"]) and "prefetch" not in built["y"]
