"""The asyncio API (``asynchronous=True``), as Dask's: awaiting the client, its futures, its
blocking methods, ``rusk.wait`` and ``as_completed``, all without blocking the event loop."""

import asyncio
import time

import pytest

import rusk


def inc(x):
    return x + 1


def slow(x, delay):
    time.sleep(delay)
    return x


class Oops(Exception):
    pass


def explode():
    raise Oops("boom")


def test_async_client_end_to_end():
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.ensure_future(ticker())
        async with rusk.Client(n_workers=2, threads_per_worker=1, asynchronous=True) as c:
            assert c.asynchronous
            f = c.submit(inc, 1)
            assert await f == 2
            futures = c.map(slow, range(6), delay=0.3)
            before = ticks
            assert await c.gather(futures) == list(range(6))
            assert ticks > before + 20, "the event loop was blocked while gathering"
            seen = []
            async for fut in rusk.as_completed(c.map(slow, [3, 1, 2], delay=0.1)):
                seen.append(await fut)
            assert sorted(seen) == [1, 2, 3]
            done, not_done = await rusk.wait(c.map(inc, [10, 20]))
            assert len(done) == 2 and not not_done
            bad = c.submit(explode)
            with pytest.raises(Oops, match="boom"):
                await bad
            assert len(await c.nthreads()) == 2
            assert (await c.scheduler_info())["workers"]
            # Dask collections: compute gives futures, compute(sync=True) a coroutine.
            da = pytest.importorskip("dask.array")
            x = da.arange(100, chunks=10)
            assert await c.compute(x.sum()) == 4950
            assert await c.compute(x.max(), sync=True) == 99
        assert c._closed
        tick.cancel()

    asyncio.run(main())


def test_awaiting_the_client_starts_it():
    async def main():
        c = rusk.Client(n_workers=1, asynchronous=True, set_as_default=False)
        assert c._closed  # nothing started yet: the constructor does not block the loop
        c = await c
        try:
            assert await c.submit(inc, 41) == 42
        finally:
            await c.close()

    asyncio.run(main())
