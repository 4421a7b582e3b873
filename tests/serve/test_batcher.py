"""The dynamic batcher on its own: max batch size, max wait, per-item errors, drain on close."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmdeploy.handlers.batching import BatcherClosed, DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_batches_capped_at_max_size_and_results_routed():
    async def main():
        batcher = DynamicBatcher(lambda items, cancelled: [i * 10 for i in items], max_batch_size=4, max_delay_s=0.05)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        return results, batcher.batch_sizes

    results, sizes = run(main())
    assert results == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2]


def test_lone_request_waits_at_most_max_delay():
    async def main():
        batcher = DynamicBatcher(lambda items, cancelled: items, max_batch_size=8, max_delay_s=0.05)
        t0 = time.perf_counter()
        await batcher.submit("x")
        elapsed = time.perf_counter() - t0
        await batcher.close()
        return elapsed

    assert 0.04 <= run(main()) < 1.0


def test_exception_result_fails_only_that_item():
    async def main():
        batcher = DynamicBatcher(lambda items, cancelled: [ValueError("bad") if i == 1 else i for i in items],
                                 max_batch_size=4, max_delay_s=0.01)
        out = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        await batcher.close()
        return out

    out = run(main())
    assert out[0] == 0 and out[2] == 2 and isinstance(out[1], ValueError)


def test_close_drains_then_refuses():
    async def main():
        def slow(items, cancelled):
            time.sleep(0.1)
            return items

        batcher = DynamicBatcher(slow, max_batch_size=2, max_delay_s=0.0)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
        await asyncio.sleep(0.02)
        await batcher.close(drain_timeout_s=5)
        done = [t.result() for t in tasks]
        with pytest.raises(BatcherClosed):
            await batcher.submit(9)
        return done

    assert run(main()) == [0, 1, 2, 3]
