"""Batching: a dynamic batcher (max batch size, max wait) and the OOM split-retry.

Standard library only (torch is looked up lazily to recognise its OOM error), so
the local endpoint, the DJL handler and tests share it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("llmdeploy.handlers.batching")


# --------------------------------------------------------------------------------------------
# Out-of-memory split-retry
# --------------------------------------------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a RuntimeError whose message says 'out of memory'."""
    try:
        import torch

        oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
        if oom_type is not None and isinstance(exc, oom_type):
            return True
    except ImportError:  # pragma: no cover - torch is always there in serving
        pass
    return isinstance(exc, (RuntimeError, MemoryError)) and "out of memory" in str(exc).lower()


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


class OutOfMemoryForItem(RuntimeError):
    """A single input still does not fit after splitting down to one."""

    code = 507


def run_with_oom_split(items: Sequence[Any], run: Callable[[list], list], *, on_split=None) -> list:
    """``run(items)`` -> one result per item; on OOM, retry as two halves, recursively.

    A single item that still runs out of memory gets an ``OutOfMemoryForItem`` instance
    as its result (not raised), so the rest of the batch is answered.
    """
    items = list(items)
    if not items:
        return []
    try:
        return list(run(items))
    except Exception as exc:  # noqa: BLE001 - we re-raise anything that is not OOM
        if not is_out_of_memory(exc):
            raise
        _free_cuda_cache()
        if len(items) == 1:
            log.error("out of memory on a single input; answering it with an error")
            return [OutOfMemoryForItem(f"out of memory generating for this input ({exc})")]
        mid = len(items) // 2
        log.warning("out of memory on a batch of %d; retrying as %d + %d", len(items), mid, len(items) - mid)
        if on_split is not None:
            on_split(len(items))
        return (run_with_oom_split(items[:mid], run, on_split=on_split)
                + run_with_oom_split(items[mid:], run, on_split=on_split))


# --------------------------------------------------------------------------------------------
# Dynamic batcher
# --------------------------------------------------------------------------------------------

class BatcherClosed(RuntimeError):
    """The batcher is draining or stopped; no new work is accepted."""


class DynamicBatcher:
    """Collects submitted items into batches of at most ``max_batch_size``, waiting at most
    ``max_delay_s`` after the first item of a batch for more to arrive.

    ``run_batch(items) -> results`` (one per item; an Exception instance as a result fails
    that item only) runs in a single worker thread, so one batch at a time reaches the model.
    ``batch_sizes`` records the size of every batch run (tests and the benchmark read it).
    """

    def __init__(self, run_batch: Callable[[list], list], *, max_batch_size: int = 8,
                 max_delay_s: float = 0.05, executor: concurrent.futures.Executor | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max(0.0, max_delay_s)
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batcher")
        self._own_executor = executor is None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._busy = False
        self.batch_sizes: list[int] = []

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._loop(), name="dynamic-batcher")

    @property
    def pending(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (1 if self._busy else 0)

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        """Refuse new items, finish queued and running ones (up to the timeout), stop."""
        self._closed = True
        deadline = time.monotonic() + drain_timeout_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(BatcherClosed("server is shutting down"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # -- use ----------------------------------------------------------------------------------
    async def submit(self, item) -> Any:
        if self._closed:
            raise BatcherClosed("server is shutting down")
        if self._worker is None:
            await self.start()
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _collect(self) -> list:
        first = await self._queue.get()
        batch = [first]
        deadline = time.monotonic() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # Requests whose client gave up (timeout -> cancelled future) are not run.
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            self._busy = True
            try:
                self.batch_sizes.append(len(live))
                results = await loop.run_in_executor(self._executor, self.run_batch, [i for i, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
                for (_, fut), result in zip(live, results):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BatcherClosed("server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: tell every caller
                log.exception("batch of %d failed", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                self._busy = False
