"""LONDON's installation can neither read nor publish EMSOU's subjects: its services' NATS user
is refused both, its server's unrestricted user sees nothing of EMSOU's work pass through the
federation, and none of its streams holds an EMSOU subject; while its own subjects are its own,
and EMSOU's work does reach the hub."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg
from toex_devstack.federation import Federation

from .conftest import Toex, eventually, run, subject_counts
from .work import create_job


class Errors:
    """The asynchronous errors the server sends a client (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

        async def record(exc: Exception) -> None:
            self.seen.append(str(exc).lower())

        self.callback = record

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if any(text.lower() in seen for seen in self.seen):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no error containing {text!r}; saw {self.seen}")


async def _services_refused(federation: Federation) -> list[str]:
    """As the NATS user LONDON's services connect with: EMSOU's subjects refused, LONDON's not."""
    errors = Errors()
    nc = await nats.connect(
        federation.nats_url("LONDON", "services"), error_cb=errors.callback, max_reconnect_attempts=0
    )
    try:
        await nc.subscribe("toex.emsou.>")
        await errors.wait_for('permissions violation for subscription to "toex.emsou.>"')
        await nc.publish("toex.emsou.tasking.JobCreated", b"forged")
        await errors.wait_for('permissions violation for publish to "toex.emsou.tasking.JobCreated"')
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await nc.jetstream().publish("toex.emsou.tasking.JobCreated", b"forged", timeout=2)
        # What is addressed to EMSOU from the hub is not LONDON's either.
        await nc.subscribe("toex.emsou.hub.>")
        await errors.wait_for('permissions violation for subscription to "toex.emsou.hub.>"')

        # Its own region's subjects it reads and publishes (the rule's other side).
        refusals = len(errors.seen)
        own = await nc.subscribe("toex.london.tasking.>")
        await nc.publish("toex.london.tasking.Probe", b"own")
        message = await own.next_msg(timeout=5)
        assert message.data == b"own"
        await nc.flush()
        await asyncio.sleep(0.3)
        assert len(errors.seen) == refusals, errors.seen
        return errors.seen
    finally:
        await nc.close()


def test_londons_installation_cannot_read_or_publish_emsou_subjects(
    federation: Federation, toex: Toex
) -> None:
    run(_services_refused(federation))

    seen: list[Msg] = []

    async def watch_london_while(work: asyncio.Future[str]) -> str:
        admin = await nats.connect(federation.nats_url("LONDON", "admin"), max_reconnect_attempts=0)
        try:

            async def keep(msg: Msg) -> None:
                seen.append(msg)

            await admin.subscribe(">", cb=keep)
            await admin.flush()
            name = await work
            # EMSOU's report of it has crossed to the hub (the federation carried it) before we look.
            await asyncio.to_thread(
                eventually,
                lambda: run(
                    subject_counts(federation, "hub", "OVERSIGHT", "toex.emsou.oversight.JobCreated")
                ),
                "EMSOU's report of JobCreated at the hub",
            )
            await asyncio.sleep(1.0)
            return name
        finally:
            await admin.close()

    async def scenario() -> str:
        work = asyncio.ensure_future(asyncio.to_thread(create_job, toex, "EMSOU"))
        return await watch_london_while(work)

    job = run(scenario())

    # LONDON's own server, listened to in full by its unrestricted user: nothing of EMSOU's.
    leaked = [m.subject for m in seen if "emsou" in m.subject.lower() or job.encode() in (m.data or b"")]
    assert leaked == []
    # No stream of LONDON's holds an EMSOU subject.
    for stream in ("TASKING", "ENTITY", "PND", "COMMS", "SAFEGUARDING", "HUB", "AUDIT", "DEADLETTER"):
        assert run(subject_counts(federation, "LONDON", stream, "toex.emsou.>")) == {}, stream
