"""The outbound sender with fakes: ordering per record, retries with backoff, answers, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from toex_common.testing.fakes import principal
from toex_pnd.domain import commands
from toex_pnd.domain.model import SubmissionState, SyncState
from toex_pnd.service_layer import handlers

from .fakes import FakePnd, FakeUow

GRADING = {
    "source_evaluation": "1",
    "intelligence_assessment": "B",
    "handling": "P",
    "handling_conditions": "",
}
RES = principal("researcher.emsou", "researcher")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def deps() -> tuple[handlers.Deps, FakeUow, FakePnd, Clock]:
    uow, pnd, clock = FakeUow(), FakePnd(), Clock()
    ids = iter(f"r{i}" for i in range(1000))
    return (
        handlers.Deps(uow=lambda: uow, pnd=pnd, clock=clock, new_id=lambda: next(ids), jitter=lambda: 0.0),
        uow,
        pnd,
        clock,
    )


async def test_versions_of_one_record_go_one_batch_at_a_time_in_order() -> None:
    d, uow, pnd, _ = deps()
    record = await handlers.submit_intelligence(
        commands.SubmitIntelligence(RES, RES.region, {"phone": {"e164": "+447700900123"}}, GRADING, []), d
    )
    for number in ("+447700900124", "+447700900125"):
        await handlers.update_intelligence(
            commands.UpdateIntelligence(RES, RES.region, record.id, {"phone": {"e164": number}}, None, None),
            d,
        )
    send = commands.DispatchOnce(0, 1, 100)
    for _ in range(3):
        assert (await handlers.dispatch_once(send, d)).answered == 1
    assert [b[0]["record_version"] for b in pnd.batches] == [1, 2, 3]
    assert [b[0]["operation"] for b in pnd.batches] == ["CREATE", "UPDATE", "UPDATE"]
    assert (await handlers.dispatch_once(send, d)).sent == 0
    stored = uow.records.rows[record.id]
    assert stored.sync_state is SyncState.SYNCED and stored.pnd_version == 3
    assert [e.event_type for e in uow.committed_events] == ["toex.pnd.events.v1.SubmissionAccepted"] * 3


async def test_an_unavailable_pnd_means_retries_later_with_growing_delays_and_nothing_lost() -> None:
    d, uow, pnd, clock = deps()
    d.retry_base_seconds, d.retry_cap_seconds = 2.0, 60.0
    record = await handlers.submit_intelligence(
        commands.SubmitIntelligence(RES, RES.region, {"phone": {"e164": "+447700900123"}}, GRADING, []), d
    )
    pnd.down = True
    send = commands.DispatchOnce(0, 1, 100)
    delays = []
    for _ in range(4):
        assert (await handlers.dispatch_once(send, d)).failed == 1
        [queued] = uow.submissions.rows.values()
        delays.append(queued.next_attempt_at - clock.now)
        assert (await handlers.dispatch_once(send, d)).sent == 0  # not due yet
        clock.now = queued.next_attempt_at
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    assert queued.attempts == 4 and "connection refused" in queued.last_error
    pnd.down = False
    assert (await handlers.dispatch_once(send, d)).answered == 1
    [done] = uow.submissions.rows.values()
    assert done.state is SubmissionState.ACCEPTED and done.attempts == 5
    assert uow.records.rows[record.id].sync_state is SyncState.SYNCED
