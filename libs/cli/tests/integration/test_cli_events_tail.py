"""`toex events tail` against a real nats-server with JetStream.

The server and its TASKING stream are shared by the whole test session, so every test uses its
own durable consumers and, at the end, deletes them and the events it published.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.js.errors
import pytest
from click.testing import Result
from toex.tasking.events.v1 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex_common.events import EventEnvelope, StreamSpec, build_event, ensure_stream
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

TASKING = StreamSpec.for_domain("TASKING", "tasking")


def job_created(region: Region) -> EventEnvelope:
    message = events_pb2.JobCreated(
        job=pb.Job(
            name=f"regions/{region.value}/jobs/{uuid.uuid4().hex[:12]}",
            operation_name="Op Kestrel",
            job_type=pb.JOB_TYPE_ANPR,
            state=pb.JOB_STATE_RAISED,
        )
    )
    return build_event(
        message,
        domain="tasking",
        source="toex-tasking",
        region=region,
        resource=message.job.name,
        occurred_at=datetime.now(UTC),
    )


class Tasking:
    """The session's TASKING stream, with what this test put into it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sequences: list[int] = []
        self.durables: list[str] = []

    def durable(self) -> str:
        name = f"test-cli-{uuid.uuid4().hex[:10]}"
        self.durables.append(name)
        return name

    async def publish_async(
        self,
        envelopes: list[EventEnvelope],
        *,
        after_consumer: str = "",
        cancelled: threading.Event | None = None,
    ) -> None:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            if after_consumer:  # publish only once the CLI has created its consumer
                deadline = time.monotonic() + 20
                while True:
                    try:
                        await js.consumer_info(TASKING.name, after_consumer)
                        break
                    except nats.js.errors.NotFoundError:
                        if cancelled is not None and cancelled.is_set():
                            return  # the CLI is gone already; its result tells the test why
                        if time.monotonic() > deadline:
                            raise AssertionError(f"the CLI never created consumer {after_consumer}") from None
                        await asyncio.sleep(0.05)
            for envelope in envelopes:
                ack = await js.publish(envelope.subject, envelope.payload, headers=envelope.headers)
                self.sequences.append(ack.seq)
        finally:
            await nc.close()

    def publish(self, envelopes: list[EventEnvelope]) -> None:
        asyncio.run(self.publish_async(envelopes))

    async def setup(self) -> None:
        nc = await nats.connect(self.url)
        try:
            await ensure_stream(nc.jetstream(), TASKING)
        finally:
            await nc.close()

    async def cleanup(self) -> None:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            for name in self.durables:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_consumer(TASKING.name, name)
            for sequence in self.sequences:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_msg(TASKING.name, sequence)
        finally:
            await nc.close()


@pytest.fixture
def stream(nats_server: object) -> Iterator[Tasking]:
    tasking = Tasking(str(nats_server.url))  # type: ignore[attr-defined]
    asyncio.run(tasking.setup())  # the stream exists before any CLI looks for it
    try:
        yield tasking
    finally:
        asyncio.run(tasking.cleanup())


class PublisherThread:
    """Publishes from another thread once the CLI's consumer exists; Ctrl-C's the CLI (so the
    test fails instead of hanging) if publishing fails or the CLI does not finish in time."""

    def __init__(self, stream: Tasking, durable: str, envelopes: list[EventEnvelope]) -> None:
        self.errors: list[BaseException] = []
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stream, durable, envelopes), daemon=True)

    def _run(self, stream: Tasking, durable: str, envelopes: list[EventEnvelope]) -> None:
        try:
            asyncio.run(stream.publish_async(envelopes, after_consumer=durable, cancelled=self.finished))
        except BaseException as exc:
            self.errors.append(exc)
            if not self.finished.is_set():
                _thread.interrupt_main()
            return
        if not self.finished.wait(30):
            self.errors.append(TimeoutError("the CLI did not stop after --count events"))
            _thread.interrupt_main()

    def __enter__(self) -> PublisherThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finished.set()
        self._thread.join(30)
        assert not self._thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def tail(run: Callable[..., Result], stream: Tasking) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        return run("events", "tail", "--stream", "TASKING", *args, env={"TOEX_NATS_URL": stream.url})

    return invoke


def test_tail_prints_only_the_regions_events(tail: Callable[..., Result], stream: Tasking) -> None:
    durable = stream.durable()
    ersou, emsou = job_created(Region.ERSOU), job_created(Region.EMSOU)

    # The ERSOU event goes first: were the filter wrong, it would be the one printed.
    with PublisherThread(stream, durable, [ersou, emsou]):
        result = tail("--region", "emsou", "--durable", durable, "--new", "--count", "1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "toex.tasking.events.v1.JobCreated"
    assert event["id"] == emsou.event_id
    assert event["region"] == "EMSOU"
    assert event["handling"] == "C"
    assert event["subject"] == "toex.emsou.tasking.JobCreated"
    assert event["time"] == emsou.headers["ce-time"]
    assert event["data"]["event_id"] == emsou.event_id
    assert event["data"]["job"]["name"].startswith("regions/EMSOU/jobs/")
    assert event["data"]["job"]["job_type"] == "JOB_TYPE_ANPR"
    assert event["data"]["label"] == {"region": "REGION_EMSOU", "handling": "HANDLING_CODE_C"}
    assert f"durable {durable}" in result.stderr


def test_a_durable_resumes_after_what_it_acknowledged(tail: Callable[..., Result], stream: Tasking) -> None:
    durable = stream.durable()
    with PublisherThread(stream, durable, [job_created(Region.EMSOU)]):
        assert tail("--region", "EMSOU", "--durable", durable, "--new", "--count", "1").exit_code == 0

    second, third = job_created(Region.EMSOU), job_created(Region.EMSOU)
    stream.publish([job_created(Region.ERSOU), second, third])

    seen = []
    for _ in range(2):
        result = tail("--region", "EMSOU", "--durable", durable, "--count", "1")
        assert result.exit_code == 0, result.output
        seen.append(json.loads(result.stdout)["id"])
    assert seen == [second.event_id, third.event_id]

    # --from-start replaces the durable and replays the region's events from the beginning.
    replay = tail("--region", "EMSOU", "--durable", durable, "--from-start", "--count", "3")
    assert replay.exit_code == 0, replay.output
    lines = [json.loads(line) for line in replay.stdout.splitlines()]
    assert len(lines) == 3
    assert all(line["region"] == "EMSOU" for line in lines)


def test_a_durable_cannot_silently_change_region(tail: Callable[..., Result], stream: Tasking) -> None:
    durable = stream.durable()
    with PublisherThread(stream, durable, [job_created(Region.EMSOU)]):
        assert tail("--region", "EMSOU", "--durable", durable, "--new", "--count", "1").exit_code == 0
    result = tail("--region", "ERSOU", "--durable", durable, "--count", "1")
    assert result.exit_code == 1
    assert "follows toex.emsou.>" in result.stderr
    assert "Hint: choose another --durable" in result.stderr


def test_an_unknown_stream_lists_the_streams_there(run: Callable[..., Result], stream: Tasking) -> None:
    result = run(
        "events", "tail", "--stream", "NO_SUCH_STREAM", "--count", "1", env={"TOEX_NATS_URL": stream.url}
    )
    assert result.exit_code == 1
    assert "there is no stream 'NO_SUCH_STREAM'" in result.stderr
    assert "TASKING" in result.stderr


def test_an_unreachable_nats_says_what_to_do(run: Callable[..., Result]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("events", "tail", "--stream", "TASKING", "--nats-url", f"nats://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"cannot connect to NATS at nats://127.0.0.1:{port}" in result.stderr
    assert "--nats-url" in result.stderr


@pytest.fixture
def tail_process(stream: Tasking, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "TOEX_CONFIG_DIR": str(tmp_path), "TOEX_NATS_URL": stream.url}
    env.pop("TOEX_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "toex_cli", "events", "tail", "--stream", "TASKING", "--durable",
         stream.durable(), "--new"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_ctrl_c_stops_following_cleanly(tail_process: subprocess.Popen[str]) -> None:
    assert tail_process.stderr is not None
    ready = tail_process.stderr.readline()  # written once the consumer is set up
    assert "Following stream TASKING" in ready, ready
    tail_process.send_signal(signal.SIGINT)
    stdout, stderr = tail_process.communicate(timeout=20)
    assert tail_process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
