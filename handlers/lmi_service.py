"""The handler service: DJL Serving's Python-engine contract on top of a seq2seq engine.

DJL calls ``handle(inputs)``: first with an empty Input carrying serving.properties
(we parse them once and load the model, answer None), then with batches of requests.
Each request of a batch is answered on its own: a malformed one gets its own
``{"error", "code"}`` body, the others their outputs. A batch travels back as ONE
Output whose status DJL gives every request in it (PyPredictor.java), so that body is
the only place a request's own error can go: clients must check it, not only the
status. A single request (DJL does not wrap a batch of one) gets its status too.
Requests with identical generation parameters share ONE padded ``generate`` call; a
batch that runs out of GPU memory is retried in halves.

The local endpoint (``endpoint.py``) calls ``predict`` directly with parsed requests.
No djl_python import here: the Output class is passed in by ``model.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

try:
    from .batching import OutOfMemoryForItem, run_with_oom_split
    from .serving_config import (HandlerError, ParsedRequest, RequestError, ServingConfig, format_result,
                                 parse_properties, parse_request)
except ImportError:  # copied flat next to model.py in the container
    from batching import OutOfMemoryForItem, run_with_oom_split
    from serving_config import (HandlerError, ParsedRequest, RequestError, ServingConfig, format_result,
                                parse_properties, parse_request)

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

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.config is not None

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
                        from seq2seq import load_engine
                    loader = load_engine
                self.engine = loader(self.config)

    # -- batch inference, transport-agnostic --------------------------------------------------
    def predict(self, requests: list[ParsedRequest]) -> list:
        """One result per request: a list of generated strings, or an exception instance."""
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for r_index, request in enumerate(requests):
            for t_index in range(len(request.texts)):
                groups.setdefault(request.params, []).append((r_index, t_index))
        outputs: list[list] = [[None] * len(r.texts) for r in requests]
        failures: dict[int, BaseException] = {}
        for params, slots in groups.items():
            texts = [requests[r].texts[t] for r, t in slots]
            param_dict = dict(params)
            try:
                generated = run_with_oom_split(
                    texts, lambda chunk, p=param_dict: self.engine.generate(chunk, p),
                    on_split=self.split_batches.append)
            except Exception as exc:  # noqa: BLE001 - this group fails; other groups still answer
                log.exception("generate failed for a group of %d inputs", len(texts))
                generated = [GenerationFailed(f"generation failed: {exc}")] * len(texts)
            for (r, t), text in zip(slots, generated):
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
                parsed.append(parse_request(body, self.config))
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


def _add_batch_item(outputs, index: int, value) -> None:
    """One content entry per request, keyed "batch_<index>.data" (djl_python >= 0.27: add(batch_index=))."""
    payload = json.dumps(value, ensure_ascii=False)
    try:
        outputs.add(payload, key="data", batch_index=index)
    except TypeError:  # older djl_python without batch_index
        outputs.add(payload, key=f"batch_{index}.data")


__all__ = ["Seq2SeqService", "error_body", "GenerationFailed", "OutOfMemoryForItem"]
