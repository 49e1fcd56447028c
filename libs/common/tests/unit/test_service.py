"""ServiceApp's own behaviour (background work, restarts, shutdown order) with fakes."""

from __future__ import annotations

import asyncio
from typing import Any

from toex_common.config import ServiceSettings
from toex_common.service import Background, Platform, ServiceApp


class Recorder:
    def __init__(self, log: list[str], name: str) -> None:
        self._log, self._name = log, name

    async def dispose(self) -> None:
        self._log.append(f"{self._name}.dispose")

    async def drain(self) -> None:
        self._log.append(f"{self._name}.drain")

    async def stop(self) -> None:
        self._log.append(f"{self._name}.stop")


class FlakyConsumer:
    name = "flaky"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs < 3:
            raise RuntimeError("stream not there yet")
        await stop.wait()


class Keys:
    """The token verifier's scheduled key refresh; its first run is a period away."""

    async def refresh_keys(self) -> None:
        raise AssertionError("refreshed within the first period")


def make_app(log: list[str], consumers: list[Any]) -> ServiceApp:
    platform = Platform(
        ServiceSettings(),
        Recorder(log, "engine"),  # type: ignore[arg-type]
        Recorder(log, "nats"),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Recorder(log, "audit"),  # type: ignore[arg-type]
        Keys(),  # type: ignore[arg-type]
    )

    class App(ServiceApp):
        consumer_retry_seconds = 0.01
        runs = 0

        def background(self) -> list[Background]:
            work = super().background()
            for name, coroutine in work:
                if name == "outbox-relay":
                    coroutine.close()  # the relay needs a real database; this test is about the app
            return [(n, w) for n, w in work if n != "outbox-relay"] + [
                ("tick", self.every(0.01, self.tick, "tick"))
            ]

        async def tick(self) -> None:
            self.runs += 1
            if self.runs == 2:
                raise RuntimeError("one bad run")

        async def close(self) -> None:
            log.append("service.close")

    return App(platform, None, (None, 0, None), service_names=["x"], consumers=consumers)  # type: ignore[arg-type]


async def test_background_work_survives_failures_and_shutdown_closes_in_order() -> None:
    log: list[str] = []
    consumer = FlakyConsumer()
    app = make_app(log, [consumer])
    await app.start_background()
    await asyncio.sleep(0.2)
    assert consumer.runs == 3  # restarted twice, then running
    assert app.runs >= 4  # a failed run did not stop the schedule
    await app.shutdown()
    assert all(task.done() for task in app.tasks)
    assert log == ["audit.stop", "service.close", "nats.drain", "engine.dispose"]
