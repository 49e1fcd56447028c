"""Batcher: concurrent requests answered by one batch call."""

from __future__ import annotations

import asyncio

import pytest
from toex_common.batching import Batcher


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [item.upper() for item in items]


async def test_concurrent_requests_share_a_batch_and_get_their_own_answers() -> None:
    run = Recorder()
    batcher = Batcher(run)
    answers = await asyncio.gather(*(batcher.submit(f"job{i}") for i in range(10)))
    assert answers == [f"JOB{i}" for i in range(10)]
    assert run.batches == [[f"job{i}" for i in range(10)]]


async def test_requests_made_while_a_batch_runs_form_the_next_one() -> None:
    run = Recorder()
    run.release.clear()
    batcher = Batcher(run, max_batch=3)
    first = [asyncio.create_task(batcher.submit(f"a{i}")) for i in range(2)]
    await asyncio.sleep(0.01)
    assert run.batches == [["a0", "a1"]]
    later = [asyncio.create_task(batcher.submit(f"b{i}")) for i in range(5)]
    await asyncio.sleep(0.01)
    run.release.set()
    assert await asyncio.gather(*first, *later) == ["A0", "A1", "B0", "B1", "B2", "B3", "B4"]
    assert run.batches == [["a0", "a1"], ["b0", "b1", "b2"], ["b3", "b4"]]


async def test_a_failed_batch_fails_each_of_its_requests_and_not_the_next() -> None:
    run = Recorder(fail_on="bad")
    batcher = Batcher(run)
    outcomes = await asyncio.gather(batcher.submit("ok"), batcher.submit("bad"), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ValueError, ValueError]
    assert await batcher.submit("fine") == "FINE"


async def test_a_wrong_number_of_answers_is_an_error_not_a_misdelivery() -> None:
    async def short(items: list[str]) -> list[str]:
        return items[:-1]

    batcher = Batcher(short)
    with pytest.raises(RuntimeError, match="answered with 1 results"):
        await asyncio.gather(batcher.submit("a"), batcher.submit("b"))


async def test_a_caller_that_gives_up_leaves_its_request_in_the_batch() -> None:
    run = Recorder()
    batcher = Batcher(run)
    waiting = asyncio.create_task(batcher.submit("audit-entry"))
    await asyncio.sleep(0)  # the request is made; its batch has not gone yet
    assert run.batches == []
    waiting.cancel()
    await batcher.drain()
    assert run.batches == [["audit-entry"]]
    assert waiting.cancelled()
