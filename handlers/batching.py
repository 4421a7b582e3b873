"""Batching: the static (dynamic-size) batcher, the iteration-level scheduler, and the OOM split-retry.

- ``DynamicBatcher``: collects requests into batches of at most ``max_batch_size``, waiting at most
  ``max_delay_s``; each batch runs to its end (its rows can stop early when cancelled). For backends
  without a step-level loop (CTranslate2) and for comparison (`serve --batching static`).
- ``ContinuousBatcher``: iteration-level batching over an engine's ``decode_loop()``: requests join
  the running decode at the next step and leave when they finish; beam-search requests run alone
  between steps.

Both run model work on ONE daemon thread: a stuck step can never keep the process from exiting.
Standard library only (torch is looked up lazily to recognise its OOM error).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
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
    """The batcher is draining or stopped; no new work is accepted (503)."""

    code = 503


_UNFINISHED = "server is shutting down: this request did not finish in time"


class GenerationTimeout(RuntimeError):
    """The request ran past its deadline and was retired (504)."""

    code = 504


class DaemonExecutor(concurrent.futures.Executor):
    """One daemon worker thread. ThreadPoolExecutor's workers are joined at interpreter exit, so a model call
    still running at shutdown would keep the process alive past any grace period; this one's never does."""

    def __init__(self, name: str):
        self._jobs: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._stopped:
                raise RuntimeError("executor is shut down")
            self._jobs.append((future, fn, args, kwargs))
            self._cv.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopped:
                    self._cv.wait()
                if not self._jobs:
                    return
                future, fn, args, kwargs = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._stopped = True
            if cancel_futures:
                while self._jobs:
                    self._jobs.popleft()[0].cancel()
            self._cv.notify_all()
        if wait:
            self._thread.join()


class DynamicBatcher:
    """Collects submitted items into batches of at most ``max_batch_size``, waiting at most
    ``max_delay_s`` after the first item of a batch for more to arrive.

    ``run_batch(items, cancelled) -> results`` (one per item; an Exception instance as a result
    fails that item only) runs in a single daemon worker thread, so one batch at a time reaches the
    model. ``cancelled(i)`` says whether item i's caller is gone (client disconnected, timed out,
    server stopping): an engine asks it at every decode step and stops that row.
    ``batch_sizes`` records the size of every batch run (tests and the benchmark read it).
    """

    def __init__(self, run_batch: Callable[[list, Callable[[int], bool]], list], *, max_batch_size: int,
                 max_delay_s: float, executor: concurrent.futures.Executor | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max(0.0, max_delay_s)
        self._executor = executor or DaemonExecutor("batcher")
        self._own_executor = executor is None
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None  # made by start(), on its loop
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._aborted = False  # past the drain deadline: running rows stop at their next step
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
        """Refuse new items, finish queued and running ones (up to the timeout), then stop: the running batch's
        rows stop at their next step and every caller still waiting gets BatcherClosed (503)."""
        self._closed = True
        deadline = time.monotonic() + drain_timeout_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._aborted = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(BatcherClosed(_UNFINISHED))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # -- use ----------------------------------------------------------------------------------
    async def submit(self, item) -> Any:
        if self._closed:
            raise BatcherClosed("server is shutting down")
        if self._worker is None:
            await self.start()
        fut = asyncio.get_running_loop().create_future()
        await self._started_queue().put((item, fut))
        return await fut

    def _started_queue(self) -> asyncio.Queue[tuple[Any, asyncio.Future[Any]]]:
        if self._queue is None:
            raise RuntimeError("DynamicBatcher used before start()")
        return self._queue

    async def _collect(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        queue = self._started_queue()
        first = await queue.get()
        batch = [first]
        deadline = time.monotonic() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            # Requests whose client gave up (timeout -> cancelled future) are not run.
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            self._busy = True
            try:
                self.batch_sizes.append(len(live))
                futures = [fut for _, fut in live]

                def cancelled(index: int, futures=futures) -> bool:
                    return self._aborted or futures[index].done()

                results = await asyncio.wrap_future(
                    self._executor.submit(self.run_batch, [i for i, _ in live], cancelled))
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
                for (_, fut), result in zip(live, results, strict=True):
                    if fut.done():
                        continue
                    if self._aborted:  # its rows were stopped early: the text is cut, not an answer
                        fut.set_exception(BatcherClosed(_UNFINISHED))
                    elif isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
            except asyncio.CancelledError:
                self._aborted = True
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BatcherClosed(_UNFINISHED))
                raise
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: tell every caller
                log.exception("batch of %d failed", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                self._busy = False


# --------------------------------------------------------------------------------------------
# Iteration-level (continuous) batching
# --------------------------------------------------------------------------------------------

class _Job:
    """One request in the continuous batcher: its sequences, and how to hand back its answer."""

    __slots__ = ("request", "deadline", "deliver", "seqs", "texts", "cancelled", "admitted", "error", "arrived")

    def __init__(self, request, deadline: float | None, deliver: Callable[[Any], object], arrived: int = 0):
        self.request = request
        self.arrived = arrived  # the loop's step count when it arrived (decode.admission_due)
        self.texts = list(request.texts)
        self.deadline = deadline
        # called once, from the decode thread, with the result or an exception (then None)
        self.deliver: Callable[[Any], object] | None = deliver
        self.seqs: list = []
        self.cancelled = False
        self.admitted = 0  # texts admitted into the loop so far
        self.error: BaseException | None = None

    def cancel(self) -> None:
        self.cancelled = True
        for s in self.seqs:
            s.cancel()


class ContinuousBatcher:
    """Iteration-level batching: ``submit`` joins the running decode at its next step.

    One daemon thread owns the engine's decode loop (decode.T5DecodeLoop): every iteration it
    admits waiting sequences into free slots (one encoder call for all of them), runs one decode
    step for every running sequence, and answers each request as soon as all its texts are
    done. A request whose caller went away (client disconnected, timed out) is cancelled and
    leaves at the next step. Beam search (num_beams > 1) does not fit a shared step; such a
    request runs alone between two steps, through the engine's ``generate`` (its rows stop when
    it is cancelled). ``format_result(request, texts)`` builds the answer (in the decode thread).
    Same interface as DynamicBatcher: ``start``, ``submit``, ``pending``, ``close``.
    """

    def __init__(self, engine, *, max_slots: int, format_result: Callable | None = None,
                 request_timeout_s: float | None = None):
        self.engine = engine
        self.loop = engine.decode_loop()
        if self.loop is None:
            raise ValueError(f"the {getattr(engine, 'name', 'engine')} engine has no iteration-level loop")
        self.max_slots = max(1, int(max_slots))
        self.format_result = format_result or (lambda request, texts: texts)
        self.request_timeout_s = request_timeout_s
        self._waiting: collections.deque[_Job] = collections.deque()  # not yet fully admitted, in order
        self._beams: collections.deque[_Job] = collections.deque()
        self._active: set[_Job] = set()
        self._cv = threading.Condition()
        self._closed = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self.batch_sizes: list[int] = []  # sequences per decode step (bounded: last 10,000 steps)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decode-loop", daemon=True)
            self._thread.start()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._waiting) + len(self._beams) + len(self._active)

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        """Refuse new requests, let running ones finish until the deadline, then answer the rest 503."""
        with self._cv:
            self._closed = True
        deadline = time.monotonic() + drain_timeout_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with self._cv:
            self._stop = True
            for job in list(self._waiting) + list(self._beams) + list(self._active):
                job.error = job.error or BatcherClosed(_UNFINISHED)
                job.cancel()
            self._cv.notify_all()
        if self._thread is not None:
            # Bounded: the loop sees the flags at its next step. The thread is a daemon either way.
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)

    # -- use ------------------------------------------------------------------------------------
    async def submit(self, request) -> Any:
        if self._closed:
            raise BatcherClosed("server is shutting down")
        if self._thread is None:
            await self.start()
        aloop = asyncio.get_running_loop()
        fut = aloop.create_future()

        def settle(result) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        deadline = time.monotonic() + self.request_timeout_s if self.request_timeout_s else None
        job = _Job(request, deadline, lambda result: aloop.call_soon_threadsafe(settle, result), self.loop.steps)
        with self._cv:
            if self._closed:
                raise BatcherClosed("server is shutting down")
            (self._beams if int(request.param_dict.get("num_beams", 1)) > 1 else self._waiting).append(job)
            self._cv.notify()
        try:
            return await fut
        except BaseException:  # the caller gave up (client gone, timeout: fut was cancelled): free its slots
            job.cancel()
            raise

    # -- the decode thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._waiting or self._beams or len(self.loop) or self._stop):
                    self._cv.wait()
                if self._stop and not len(self.loop) and not self._waiting and not self._beams:
                    return
                new = self._take_new()
                beam = self._beams.popleft() if self._beams else None
            try:
                if new:
                    self._admit(new)
                if beam is not None:
                    self._run_beam(beam)
                if len(self.loop):
                    self._step()
            except Exception:  # noqa: BLE001 - never let the loop die; every job in it is answered
                log.exception("decode loop failed")
                self._fail_all(RuntimeError("generation failed (see the server log)"))

    def _take_new(self) -> list:
        """(job, text index) pairs for the free slots, in arrival order; cancelled jobs are answered and dropped.

        Empty while newcomers should gather for one encoder call (decode.admission_due)."""
        try:
            from .decode import admission_due
        except ImportError:
            from decode import admission_due  # type: ignore[no-redef]
        waiting = sum(len(job.texts) - job.admitted for job in self._waiting if not job.cancelled)
        running = len(self.loop)
        waited = self.loop.steps - self._waiting[0].arrived if self._waiting else 0
        cancelled = any(job.cancelled for job in self._waiting)
        if not cancelled and not admission_due(waiting, running, self.max_slots, waited):
            return []
        free = self.max_slots - running
        picked = []
        while self._waiting and free > 0:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._finish(job)
                continue
            take = min(free, len(job.texts) - job.admitted)
            picked += [(job, job.admitted + k) for k in range(take)]
            job.admitted += take
            free -= take
            self._active.add(job)
            if job.admitted == len(job.texts):
                self._waiting.popleft()
        return picked

    def _admit(self, picked: list) -> None:
        try:
            from .decode import Sequence as DecodeSequence
        except ImportError:
            from decode import Sequence as DecodeSequence  # type: ignore[no-redef]
        ids = self.engine.encode([job.texts[i] for job, i in picked])
        seqs = []
        for (job, index), input_ids in zip(picked, ids, strict=True):
            seq = DecodeSequence(input_ids, job.request.param_dict, deadline=job.deadline, owner=(job, index))
            if job.cancelled:
                seq.cancel()
            job.seqs.append(seq)
            seqs.append(seq)
        try:
            self.loop.admit(seqs)
        except Exception as exc:  # noqa: BLE001 - only these requests fail (e.g. out of memory encoding them)
            log.warning("could not start %d sequences: %s", len(seqs), exc)
            for seq in seqs:
                seq.finished = True
            error = OutOfMemoryForItem(f"out of memory starting this request ({exc})") if is_out_of_memory(exc) \
                else RuntimeError(f"generation failed: {exc}")
            _free_cuda_cache() if is_out_of_memory(exc) else None
            for job in {job for job, _ in picked}:
                job.error = job.error or error
                job.cancel()
                self._maybe_done(job)

    def _step(self) -> None:
        batch = len(self.loop)
        try:
            finished = self.loop.step()
        except Exception as exc:  # noqa: BLE001
            if not is_out_of_memory(exc):
                raise
            _free_cuda_cache()
            self._shed(exc)
            return
        if len(self.batch_sizes) >= 10_000:
            del self.batch_sizes[:5_000]
        self.batch_sizes.append(batch)
        for seq in finished:
            job, _ = seq.owner
            if seq.timed_out and job.error is None:
                job.error = GenerationTimeout("no answer within the request timeout")
            self._maybe_done(job)

    def _shed(self, exc: BaseException) -> None:
        """Out of memory in a step: the newest half of the requests fail with 507 (alone, one is failed too)."""
        jobs = []
        for seq in sorted(self.loop.seqs, key=lambda s: s.serial, reverse=True):  # rows are not in admission order
            job = seq.owner[0]
            if job not in jobs:
                jobs.append(job)
        shed = jobs[: max(1, len(jobs) // 2)]
        log.warning("out of memory decoding %d sequences; failing the %d newest requests", len(self.loop), len(shed))
        for job in shed:
            job.error = job.error or OutOfMemoryForItem(f"out of memory generating for this request ({exc})")
            job.cancel()
        self.max_slots = max(1, min(self.max_slots, len(self.loop) - sum(len(j.seqs) for j in shed)))
        for seq in self.loop.retire_cancelled():
            self._maybe_done(seq.owner[0])

    def _run_beam(self, job: _Job) -> None:
        self._active.add(job)
        try:
            if job.cancelled:
                return
            ids = self.engine.generate_ids(job.texts, job.request.param_dict,
                                           stop=lambda row: job.cancelled or (
                                               job.deadline is not None and time.monotonic() > job.deadline))
            if job.deadline is not None and time.monotonic() > job.deadline and job.error is None:
                job.error = GenerationTimeout("no answer within the request timeout")
            job.seqs = [_Done(row) for row in ids]
        except Exception as exc:  # noqa: BLE001 - this request fails alone
            if is_out_of_memory(exc):
                _free_cuda_cache()
                job.error = OutOfMemoryForItem(f"out of memory generating for this request ({exc})")
            else:
                log.exception("beam search failed")
                job.error = RuntimeError(f"generation failed: {exc}")
        finally:
            job.admitted = len(job.texts)
            self._maybe_done(job)

    def _maybe_done(self, job: _Job) -> None:
        if job.admitted < len(job.texts) and not job.cancelled:
            return
        if not all(s.finished for s in job.seqs):
            return
        with self._cv:
            if job.cancelled and job in self._waiting:
                return  # answered when _take_new drops it
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        with self._cv:
            self._active.discard(job)
            deliver, job.deliver = job.deliver, None
        if deliver is None:
            return
        if job.error is not None:
            deliver(job.error)
        elif job.cancelled:
            deliver(BatcherClosed("request cancelled"))
        else:
            try:
                texts = self.engine.decode([s.generated for s in job.seqs])
                deliver(self.format_result(job.request, texts))
            except Exception as exc:  # noqa: BLE001
                deliver(RuntimeError(f"could not decode the output: {exc}"))

    def _fail_all(self, error: BaseException) -> None:
        with self._cv:
            jobs = list(self._active) + list(self._waiting) + list(self._beams)
            self._waiting.clear()
            self._beams.clear()
        self.loop.reset()
        for job in jobs:
            job.error = job.error or error
            job.cancel()
            for s in job.seqs:
                s.finished = True
            job.admitted = len(job.texts)
            self._active.add(job)
            self._finish(job)


class _Done:
    """A finished row of a beam-search request, shaped like a decode.Sequence for ``_finish``."""

    __slots__ = ("generated",)
    finished = True

    def __init__(self, generated):
        self.generated = generated

    def cancel(self) -> None:
        pass
