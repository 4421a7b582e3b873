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


def test_continuous_batcher_out_of_memory_fails_the_newest_request_not_the_last_row(tiny_engine, monkeypatch):
    """Rows move when a sequence leaves (the last row fills the hole), so 'newest' is the admission order:
    after b (one token) leaves, d sits in b's row; the step that runs out of memory fails d alone (507)."""
    import types

    import torch

    from llmdeploy.handlers.batching import ContinuousBatcher, OutOfMemoryForItem

    real_loop = tiny_engine.decode_loop
    rows_at_failure = []

    def oom_at_third_step():
        loop = real_loop()
        forward = loop._forward

        def flaky():
            if loop.steps == 2 and not rows_at_failure:
                rows_at_failure.append([s.owner[0].request.name for s in loop.seqs])
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return forward()

        loop._forward = flaky
        return loop

    monkeypatch.setattr(tiny_engine, "decode_loop", oom_at_third_step)

    def request(name, tokens):
        return types.SimpleNamespace(name=name, texts=[f"w{len(name)} w7"],
                                     param_dict={"max_new_tokens": tokens, "min_new_tokens": tokens})

    async def main():
        batcher = ContinuousBatcher(tiny_engine, max_slots=8)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(request(n, t)) for n, t in
                                         (("a", 6), ("b", 1), ("c", 6), ("dd", 6))), return_exceptions=True)
        await batcher.close()
        return answers

    a, b, c, d = run(main())
    assert rows_at_failure == [["a", "dd", "c"]]  # d moved into b's row
    assert isinstance(d, OutOfMemoryForItem) and d.code == 507
    assert all(isinstance(x, list) and len(x) == 1 for x in (a, b, c))
