import asyncio
import time

from toex_kernel.pacing import Pacer


async def test_background_work_gives_way_once_per_slice_and_not_per_item() -> None:
    """A served task whose answer is ready runs within about a slice of background work, and
    the background work does not turn the loop for every item."""

    async def scenario() -> tuple[list[float], int]:
        waited: list[float] = []
        turns = 0

        async def served() -> None:
            for _ in range(20):
                ready = time.perf_counter()
                await asyncio.sleep(0)  # its answer is in: it wants the loop back at once
                waited.append(time.perf_counter() - ready)

        async def background() -> None:
            nonlocal turns
            pacer = Pacer(0.002)
            until = time.perf_counter() + 0.2
            while time.perf_counter() < until:
                sum(range(200))  # an item of work, a few microseconds
                before = pacer._since
                await pacer.give_way()
                turns += pacer._since != before

        await asyncio.gather(served(), background())
        return waited, turns

    waited, turns = await scenario()
    assert max(waited) < 0.05  # never held for the whole background run (0.2 s)
    assert 10 <= turns <= 150  # about one turn per 2 ms of work, not one per item (tens of thousands)
