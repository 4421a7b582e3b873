"""The handler service: DJL Serving's Python-engine contract on top of a seq2seq engine.

DJL calls ``handle(inputs)``: first with an empty Input carrying serving.properties
(we parse them once and load the model, answer None), then with requests, in one of
two ways chosen by serving.properties (``llmdeploy package`` writes them):

- iteration-level (``option.rolling_batch=llmdeploy``, the transformers backend): DJL's Java
  side (engines/python/.../RollingBatch.java) keeps up to ``max_rolling_batch_size`` requests and
  calls ``handle`` once per decode step with all of them, new ones carrying their body,
  running ones an empty one, in its own order. Each call encodes the new requests, joins them to
  the running decode (decode.T5DecodeLoop), runs ONE step and answers every request with an
  entry ``{data, last, code?, error?}`` (djl_python's Output.binary_encode); DJL sends a request
  its answer once ``last`` is true, with the request's own status. A ``reset_rollingbatch``
  property (DJL saw a step fail) drops the running requests.
- static batches (``option.rolling_batch=disable``: CTranslate2, or any engine without a decode
  loop): DJL's dynamic batching hands over a batch; each request is answered on its own: a
  malformed one gets its own ``{"error", "code"}`` body, the others their outputs. The batch
  travels back as ONE Output whose status DJL gives every request in it (PyPredictor.java), so
  that body is the only place a request's own error can go. A single request (DJL does not wrap
  a batch of one) gets its status too. Requests whose generation parameters differ only in their
  lengths (max_new_tokens, min_new_tokens; the engine's ``batch_key``) share ONE padded ``generate``
  call, which runs to the longest and stops each row at its own length; a batch that runs out of GPU
  memory is retried in halves.

The local endpoint (``endpoint.py``) calls ``predict`` or the engine's decode loop directly.
No djl_python import here: the Output class is passed in by ``model.py``.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Callable

try:
    from .batching import GenerationTimeout, OutOfMemoryForItem, _free_cuda_cache, is_out_of_memory, run_with_oom_split
    from .serving_config import (
        HandlerError,
        ParsedRequest,
        RequestError,
        ServingConfig,
        format_result,
        parse_properties,
        parse_request,
    )
except ImportError:  # copied flat next to model.py in the container
    from batching import GenerationTimeout, OutOfMemoryForItem, _free_cuda_cache, is_out_of_memory, run_with_oom_split  # type: ignore[no-redef]
    from serving_config import (  # type: ignore[no-redef]
        HandlerError,
        ParsedRequest,
        RequestError,
        ServingConfig,
        format_result,
        parse_properties,
        parse_request,
    )

log = logging.getLogger("llmdeploy.handlers.service")


class GenerationFailed(HandlerError):
    def __init__(self, message: str, code: int = 500):
        super().__init__(message)
        self.message = message
        self.code = code


def error_body(exc: BaseException) -> dict:
    code = getattr(exc, "code", 500)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"error": message, "code": code}


class Seq2SeqService:
    def __init__(self, engine=None, config: ServingConfig | None = None,
                 engine_loader: Callable | None = None, model_dir: str | None = None):
        self.engine = engine
        # The folder model.py was loaded from: used when the properties carry no model_dir
        # (djl_python's ModelService.invoke_handler adds one; other callers may not).
        self.model_dir = model_dir
        self.config = config
        self._engine_loader = engine_loader
        self.properties_parsed = 0
        self.split_batches: list[int] = []  # sizes of batches split after running out of memory
        self._init_lock = threading.Lock()
        self._rolling: _RollingBatch | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.config is not None

    def initialized_config(self) -> ServingConfig:
        """The serving settings; a HandlerError (not an AttributeError deep inside) before ``initialize``."""
        if self.config is None:
            raise HandlerError("the handler is not initialised: call initialize(properties) before predicting")
        return self.config

    # -- initialisation (once) ----------------------------------------------------------------
    def initialize(self, properties: dict) -> None:
        with self._init_lock:
            if self.config is None:
                properties = dict(properties or {})
                if self.model_dir:
                    properties.setdefault("model_dir", self.model_dir)
                self.config = parse_properties(properties)
                self.properties_parsed += 1
            if self.engine is None:
                loader = self._engine_loader
                if loader is None:
                    try:
                        from .seq2seq import load_engine
                    except ImportError:
                        from seq2seq import load_engine  # type: ignore[no-redef]
                    loader = load_engine
                self.engine = loader(self.config)
            if self.config.rolling_batch and self._rolling is None:
                self._rolling = _RollingBatch(self)  # fails the worker at start when the engine cannot roll

    # -- batch inference, transport-agnostic --------------------------------------------------
    def predict(self, requests: list[ParsedRequest], cancelled: Callable[[int], bool] | None = None) -> list:
        """One result per request: a list of generated strings, or an exception instance.

        ``cancelled(i)``, when given, is asked at every decode step: request i's rows stop once it is true.
        """
        # One generate call per set of parameters rows must share (the engine's batch_key: all of them but the
        # lengths, outside beam search); each row keeps its own max_new_tokens / min_new_tokens.
        batch_key = getattr(self.engine, "batch_key", None) or (lambda params: tuple(sorted(params.items())))
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for r_index, request in enumerate(requests):
            key = batch_key(request.param_dict)
            for t_index in range(len(request.texts)):
                groups.setdefault(key, []).append((r_index, t_index))
        outputs: list[list] = [[None] * len(r.texts) for r in requests]
        failures: dict[int, BaseException] = {}
        for slots in groups.values():

            def run(chunk):
                texts = [requests[r].texts[t] for r, t in chunk]
                rows = [requests[r].param_dict for r, _ in chunk]
                if cancelled is None:
                    return self.engine.generate(texts, rows)
                return self.engine.generate(texts, rows, stop=lambda row: cancelled(chunk[row][0]))

            try:
                generated = run_with_oom_split(slots, run, on_split=self.split_batches.append)
            except Exception as exc:  # noqa: BLE001 - this group fails; other groups still answer
                log.exception("generate failed for a group of %d inputs", len(slots))
                generated = [GenerationFailed(f"generation failed: {exc}")] * len(slots)
            for (r, t), text in zip(slots, generated, strict=True):
                if isinstance(text, BaseException):
                    failures.setdefault(r, text)
                else:
                    outputs[r][t] = text
        return [failures.get(i) or outputs[i] for i in range(len(requests))]

    def predict_json(self, bodies: list) -> list:
        """Decoded JSON bodies -> formatted results or exception instances (4xx for bad bodies)."""
        parsed: list = []
        for body in bodies:
            try:
                parsed.append(parse_request(body, self.initialized_config()))
            except RequestError as exc:
                parsed.append(exc)
        good = [p for p in parsed if isinstance(p, ParsedRequest)]
        results = iter(self.predict(good))
        answers = []
        for p in parsed:
            if isinstance(p, ParsedRequest):
                result = next(results)
                answers.append(result if isinstance(result, BaseException) else format_result(p, result))
            else:
                answers.append(p)
        return answers

    # -- DJL contract ---------------------------------------------------------------------------
    @staticmethod
    def _decode_item(item):
        content_type = (item.get_property("Content-Type") or item.get_property("content-type") or "").lower()
        try:
            raw = item.get_as_bytes()
        except Exception as exc:  # noqa: BLE001
            raise RequestError(f"could not read the request body: {exc}") from None
        if raw is None:
            raise RequestError("empty request body")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("request body is not UTF-8") from None
        if content_type.startswith("text/"):
            return {"inputs": text}
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None

    def handle(self, inputs, output_cls):
        if self.config is None or self.engine is None:
            self.initialize(inputs.get_properties())
        if inputs.is_empty():
            return None  # DJL's initialisation call
        if self._rolling is not None:
            return self._rolling.handle(inputs, output_cls)
        batch = inputs.get_batches()
        bodies = []
        for item in batch:
            try:
                bodies.append(self._decode_item(item))
            except RequestError as exc:
                bodies.append(exc)
        answers = self.predict_json([b for b in bodies if not isinstance(b, RequestError)])
        answers_iter = iter(answers)
        merged = [b if isinstance(b, RequestError) else next(answers_iter) for b in bodies]

        outputs = output_cls()
        # DJL's PyPredictor copies the batch Output's code, message and properties onto every request
        # of the batch and splits only the content (keys "batch_<i>.<name>"). So one Content-Type
        # property serves the whole batch, and a request's own error can only travel in its body.
        outputs.add_property("Content-Type", "application/json")
        if not inputs.is_batch():  # DJL sends a batch of one without any batch_ keys
            answer = merged[0]
            if isinstance(answer, BaseException):
                body = error_body(answer)
                outputs.set_code(body["code"])
                outputs.set_message(body["error"].replace("\r", " ").replace("\n", " "))
                outputs.add_as_json(body)
            else:
                outputs.add_as_json(answer)
            return outputs
        for index, answer in enumerate(merged):
            value = error_body(answer) if isinstance(answer, BaseException) else answer
            _add_batch_item(outputs, index, value)
        return outputs


def binary_encode(data: dict) -> bytes:
    """djl_python's Output.binary_encode: a short count, then each key and str(value) as int-length UTF-8.

    What RollingBatch.java's Request.addResponse reads back (keys data, last, code, error).
    """
    msg = bytearray(struct.pack(">h", len(data)))
    for key, value in data.items():
        for text in (key, str(value)):
            raw = text.encode("utf-8")
            msg += struct.pack(">i", len(raw)) + raw
    return bytes(msg)


class _RollingRequest:
    __slots__ = ("parsed", "seqs", "done", "answer", "error")

    def __init__(self):
        self.parsed: ParsedRequest | None = None
        self.seqs: list = []
        self.done = False
        self.answer = None  # the JSON answer once done
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        self.error = self.error or error
        for seq in self.seqs:
            seq.cancel()


class _RollingBatch:
    """DJL's rolling-batch protocol over the engine's decode loop: one ``handle`` call = one decode step."""

    def __init__(self, service: Seq2SeqService):
        self.service = service
        self.config = service.initialized_config()
        self.loop = service.engine.decode_loop()
        if self.loop is None:
            raise HandlerError(f"option.rolling_batch needs an engine with a decode loop (a T5 model on the "
                               f"transformers backend); {service.engine.name} runs with option.rolling_batch=disable")
        self.order: list[_RollingRequest] = []  # the requests in DJL's order (RollingBatch.java's list)
        self.queued: list[tuple[int, _RollingRequest]] = []  # (arrival step, request) not yet admitted

    def handle(self, inputs, output_cls):
        if inputs.get_property("reset_rollingbatch"):
            log.warning("DJL reset the rolling batch: dropping %d running requests", len(self.order))
            self.loop.reset()
            self.order, self.queued = [], []
        items = inputs.get_batches()
        if len(items) < len(self.order):  # never happens with RollingBatch.java; start again rather than misroute
            log.error("DJL sent %d requests while %d are running: resetting", len(items), len(self.order))
            self.loop.reset()
            self.order, self.queued = [], []
        new = [self._start(item) for item in items[len(self.order):]]
        self.order += new
        try:
            from .decode import admission_due
        except ImportError:
            from decode import admission_due  # type: ignore[no-redef]
        self.queued += [(self.loop.steps, r) for r in new if r.seqs]
        waiting = sum(len(r.seqs) for _, r in self.queued)
        waited = self.loop.steps - self.queued[0][0] if self.queued else 0
        slots = max(self.config.max_batch_size, len(self.loop) + waiting)  # DJL caps what it sends
        if admission_due(waiting, len(self.loop), slots, waited):
            self._admit([r for _, r in self.queued])
            self.queued = []
        if len(self.loop):
            self._step()
        for request in self.order:
            self._settle(request)
        outputs = output_cls()
        for index, request in enumerate(self.order):
            entry = {"data": request.answer if request.done and request.error is None else "", "last": request.done}
            if request.done and request.error is not None:
                body = error_body(request.error)
                entry.update(code=body["code"], error=body["error"].replace("\r", " ").replace("\n", " "))
            outputs.add(binary_encode(entry), key="data", batch_index=index)
            outputs.add_property(f"batch_{index}_Content-Type", "application/json")
        self.order = [r for r in self.order if not r.done]
        return outputs

    def _start(self, item) -> _RollingRequest:
        request = _RollingRequest()
        try:
            parsed = request.parsed = parse_request(self.service._decode_item(item), self.config)
        except RequestError as exc:
            request.error, request.done = exc, True
            return request
        params = parsed.param_dict
        deadline = time.monotonic() + self.config.request_timeout_s
        if int(params.get("num_beams", 1)) > 1:  # beam search runs alone, now (its cost is within the budget)
            try:
                ids = self.service.engine.generate_ids(list(parsed.texts), params,
                                                       stop=lambda row: time.monotonic() > deadline)
                request.answer = json.dumps(format_result(parsed, self.service.engine.decode(ids)),
                                            ensure_ascii=False)
            except Exception as exc:  # noqa: BLE001 - this request fails alone
                request.error = OutOfMemoryForItem(f"out of memory generating for this request ({exc})") \
                    if is_out_of_memory(exc) else GenerationFailed(f"generation failed: {exc}")
            request.done = True
            return request
        try:
            from .decode import Sequence
        except ImportError:
            from decode import Sequence  # type: ignore[no-redef]
        ids = self.service.engine.encode(list(parsed.texts))
        request.seqs = [Sequence(row, params, deadline=deadline, owner=request) for row in ids]
        return request

    def _admit(self, requests: list[_RollingRequest]) -> None:
        seqs = [s for r in requests for s in r.seqs]
        if not seqs:
            return
        try:
            self.loop.admit(seqs)
        except Exception as exc:  # noqa: BLE001 - only the new requests fail
            error = OutOfMemoryForItem(f"out of memory starting this request ({exc})") if is_out_of_memory(exc) \
                else GenerationFailed(f"generation failed: {exc}")
            for request in requests:
                request.fail(error)
                for seq in request.seqs:
                    seq.finished = True

    def _step(self) -> None:
        try:
            finished = self.loop.step()
        except Exception as exc:  # noqa: BLE001
            running = [r for r in self.order if any(not s.finished for s in r.seqs)]
            if is_out_of_memory(exc):  # the newest half fails with 507; the others go on at the next call
                _free_cuda_cache()
                victims = running[len(running) // 2:] if len(running) > 1 else running
                error: Exception = OutOfMemoryForItem(f"out of memory generating for this request ({exc})")
            else:
                log.exception("decode step failed")
                victims, error = running, GenerationFailed(f"generation failed: {exc}")
            for request in victims:
                request.fail(error)
            finished = self.loop.retire_cancelled()
        for seq in finished:
            if seq.timed_out:
                seq.owner.fail(GenerationTimeout(
                    f"no answer within {self.config.request_timeout_s:g} s (option.request_timeout)"))

    def _settle(self, request: _RollingRequest) -> None:
        # Only a parsed request has sequences (one that did not parse was done in _start).
        if request.done or request.parsed is None or not request.seqs or not all(s.finished for s in request.seqs):
            return
        request.done = True
        if request.error is None:
            texts = self.service.engine.decode([s.generated for s in request.seqs])
            request.answer = json.dumps(format_result(request.parsed, texts), ensure_ascii=False)


def _add_batch_item(outputs, index: int, value) -> None:
    """One content entry per request, keyed "batch_<index>.data" (djl_python >= 0.27: add(batch_index=))."""
    payload = json.dumps(value, ensure_ascii=False)
    try:
        outputs.add(payload, key="data", batch_index=index)
    except TypeError:  # older djl_python without batch_index
        outputs.add(payload, key=f"batch_{index}.data")


__all__ = ["Seq2SeqService", "error_body", "GenerationFailed", "OutOfMemoryForItem"]
