r"""A test double of DJL Serving's Python engine, both sides of it (djl_python is not on PyPI).

Mirrors djl-serving branch ``DJL_SERVING_BRANCH`` (the pinned LMI version's recipe, see
llmdeploy/data/lmi.toml; a test keeps the two equal), read at
github.com/deepjavalibrary/djl-serving. Everything mirrored here is the same on
``ALSO_READ`` (LMI 0.33.0) except that 0.33's Output.send replaces CRLF in the message.

Python side (engines/python/setup/):
- ``djl_python/pair_list.py``, ``inputs.py``, ``outputs.py``: ``PairList``, ``Input`` and ``Output``
  below, method for method (properties dict; content as (key, bytes) pairs; ``get_batches`` slices
  ``key[6:9]`` / ``key[10:]``; ``add(value, key, batch_index)`` keys ``batch_{i}.{key}``; JSON with
  indent=2 and ``allow_nan=False``; ``Output.send``'s framing in ``Output.encode``).
- ``djl_python/service_loader.py`` (``ModelService.invoke_handler`` sets ``properties["model_dir"]``) and
  ``djl_python/python_sync_engine.py`` (``device_id`` property; ``None`` -> 204 "No content"; an
  exception -> ``Output().error(str(e))``, 424, or 507 for out-of-memory): ``PythonEngine``.

Java side (engines/python/src/main/java/ai/djl/python/engine/, serving/src/main/java/ai/djl/serving/):
- ``Connection.RequestEncoder`` / ``OutputDecoder``: ``encode_input`` / ``decode_output`` (the wire
  format, used unchanged by tools/check_djl_engine.py against the real engine).
- ``PyModel.load`` + ``PyEnv`` + ``PyProcess.startPythonProcess``: the initialisation call, an Input
  with no content whose properties are serving.properties' ``option.*`` keys without the prefix,
  ``handler=handle``; a code >= 300 there fails the worker for good (``init_properties``).
- ``PyPredictor.batchPredict``: a batch of one goes as it came; a larger batch is one Input with
  ``batch_size`` and every request's properties and content prefixed ``batch_%03d.`` (content key
  ``data`` when null); an answer with code >= 300 is every request's answer; otherwise the content
  must hold one entry per request, split by ``batch_(\d+)\.(.*)``, and each request gets the batch's
  code, message and properties (``Djl.predict``).
- ``PyProcess`` (rolling batch when the model's ``rolling_batch`` is set and not "disable"),
  ``RollingBatch.run`` and ``Request.addResponse/getRequest/getProperties``: ``Djl.rolling`` below. Every
  step sends ALL active requests as one batch (``batch_size`` always set; a new request with its
  properties, body and ``seed``; a running one with an empty ``data`` entry and no properties), then
  reads one content entry per request, in order, each a binary map (``data``, ``last``, ``code``,
  ``error``); properties ``batch_<i>_<name>`` go to request i; a request is answered when ``last`` is
  true: with ``code`` its status becomes that code and its body ``{"code", "error"}`` (GSON), else the
  body is its ``data``. A step answered with a code other than 200, or with a wrong entry count, fails
  every active request and the next step carries ``reset_rollingbatch``. New requests join at the next
  step while fewer than ``max_rolling_batch_size`` (default 32) run.
- ``wlm/LmiConfigRecommender.setRollingBatch``: what LMI adds to serving.properties (``lmi_recommended``).
- ``http.RequestParser`` (headers -> properties, body -> content ``data``) and
  ``InferenceRequestHandler.sendOutput`` (code -> status, properties -> headers, ``getData()`` ->
  body): ``HttpRequest`` / ``HttpResponse``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

DJL_SERVING_BRANCH = "0.36.0-lmi27-dlc"
ALSO_READ = ("0.33.0-dlc",)
BATCH_PATTERN = re.compile(r"batch_(\d+)\.(.*)")  # PyPredictor.BATCH_PATTERN


# ---------------------------------------------------------------------------------------------
# Python side: djl_python
# ---------------------------------------------------------------------------------------------

class PairList:
    def __init__(self):
        self.keys: list = []
        self.values: list = []

    def add(self, key=None, value=None):
        self.keys.append(key)
        self.values.append(value)

    def size(self) -> int:
        return len(self.keys)

    def is_empty(self) -> bool:
        return self.size() == 0

    def get(self, key):
        for k, v in zip(self.keys, self.values, strict=False):
            if k == key:
                return v
        return None

    def key_at(self, index: int):
        return self.keys[index]

    def value_at(self, index: int):
        return self.values[index]

    def get_keys(self) -> list:
        return self.keys


class Input:
    def __init__(self):
        self.function_name = None
        self.properties: dict = {}
        self.content = PairList()

    def is_batch(self) -> bool:
        return "batch_size" in self.properties

    def get_batch_size(self) -> int:
        return int(self.properties.get("batch_size", "1"))

    def get_batches(self) -> list[Input]:
        if not self.is_batch():
            return [self]
        batch = [Input() for _ in range(self.get_batch_size())]
        for key, value in self.properties.items():
            if key.startswith("batch_") and key != "batch_size":
                batch[int(key[6:9])].properties[key[10:]] = value
        for i in range(self.content.size()):
            key = self.content.key_at(i)
            batch[int(key[6:9])].content.add(key[10:], self.content.value_at(i))
        return batch

    def get_function_name(self) -> str:
        return self.function_name

    def get_properties(self) -> dict:
        return self.properties

    def get_content(self) -> PairList:
        return self.content

    def get_property(self, key: str):
        return next((v for k, v in self.properties.items() if k.lower() == key.lower()), None)

    def get_as_bytes(self, key=None):
        if self.content.is_empty():
            return None
        if key:
            ret = self.content.get(key)
            if ret is None:
                raise KeyError(f"requested data for key:{key} is not found!")
            return ret
        ret = self.content.get("data")
        return ret if ret is not None else self.content.value_at(0)

    def get_as_string(self, key=None) -> str:
        return self.get_as_bytes(key=key).decode("utf-8")

    def get_as_json(self, key=None):
        return json.loads(self.get_as_bytes(key=key).decode("utf-8"))

    def is_empty(self) -> bool:
        return self.content.is_empty()

    @classmethod
    def decode(cls, buf: bytes) -> Input:
        """``Input.read`` over a byte string (what the socket carries)."""
        reader = _Reader(buf)
        inputs = cls()
        for _ in range(reader.short()):
            key = reader.utf8()
            inputs.properties[key] = reader.utf8()
        for _ in range(reader.short()):
            key = reader.utf8()
            inputs.content.add(key=key, value=bytearray(reader.bytes()))
        inputs.function_name = inputs.properties.get("handler")
        return inputs


class Output:
    def __init__(self, code=200, message="OK"):
        self.code = code
        self.message = message
        self.properties: dict = {}
        self.content = PairList()

    def set_code(self, code: int):
        self.code = code
        return self

    def set_message(self, message: str):
        self.message = message
        return self

    def error(self, error: str, code=424, message="invoke handler failure"):
        self.code = code
        self.message = message
        self.add_property("content-type", "application/json")
        self.add_as_json({"code": self.code, "message": self.message, "error": error})
        return self

    def add_property(self, key, val):
        self.properties[key] = val
        return self

    def get_properties(self):
        return self.properties

    def add(self, value, key=None, batch_index=None):
        if key is not None and type(key) is not str:
            key = str(key)
        if batch_index is not None:
            key = "" if key is None else key
            key = f"batch_{batch_index}.{key}"
        if type(value) is str:
            self.content.add(key=key, value=value.encode("utf-8"))
        elif type(value) is bytearray:
            self.content.add(key=key, value=value)
        elif type(value) is bytes:
            self.content.add(key=key, value=bytearray(value))
        else:
            self.content.add(key=key, value=self._encode_json(value))
        return self

    def add_as_json(self, val, key=None, batch_index=None):
        return self.add(self._encode_json(val), key=key, batch_index=batch_index)

    @staticmethod
    def _encode_json(val) -> bytearray:
        return bytearray(json.dumps(val, ensure_ascii=False, allow_nan=False, indent=2,
                                    separators=(",", ":")).encode("utf-8"))

    def encode(self) -> bytes:
        """The bytes ``Output.send`` writes for a non-streaming answer."""
        msg = bytearray(struct.pack(">h", self.code))
        _write_utf8(msg, self.message)
        msg += struct.pack(">h", len(self.properties))
        for k, v in self.properties.items():
            _write_utf8(msg, k)
            _write_utf8(msg, str(v))
        msg += struct.pack(">h", self.content.size())
        for i in range(self.content.size()):
            _write_utf8(msg, self.content.key_at(i))
            value = self.content.value_at(i)
            msg += struct.pack(">i", len(value))
            msg += value
        return bytes(msg)


def _write_utf8(msg: bytearray, val) -> None:
    if val is None:
        msg += struct.pack(">i", -1)
    else:
        buf = val.encode("utf-8")
        msg += struct.pack(">i", len(buf))
        msg += buf


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = memoryview(buf), 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise EOFError("truncated message")
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def short(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def utf8(self):
        length = self.int()
        return None if length < 0 else self._take(length).decode("utf-8")

    def bytes(self) -> bytes:
        return self._take(self.int())


class PythonEngine:
    """python_sync_engine.PythonSyncEngine's request loop for one call, in process."""

    def __init__(self, module, model_dir: str, device_id: int = -1):
        self.module, self.model_dir, self.device_id = module, model_dir, device_id

    def __call__(self, wire: bytes) -> bytes:
        inputs = Input.decode(wire)
        inputs.properties["device_id"] = self.device_id  # _prepare_inputs
        inputs.properties["model_dir"] = self.model_dir  # ModelService.invoke_handler
        try:
            outputs = getattr(self.module, inputs.get_function_name())(inputs)
            if outputs is None:
                outputs = Output(code=204, message="No content")
            elif not isinstance(outputs, Output):
                outputs = Output().error(f"Invalid output type: {type(outputs)}")
        except Exception as e:  # noqa: BLE001 - what the engine does
            if type(e).__name__ in ("OutOfMemoryError", "MemoryError") or "CUDA error: out of memory" in str(e):
                outputs = Output(code=507, message=str(e))
            else:
                outputs = Output().error(str(e))
        return outputs.encode()


# ---------------------------------------------------------------------------------------------
# Java side: ai.djl.python.engine and the HTTP front end
# ---------------------------------------------------------------------------------------------

@dataclass
class JavaOutput:
    """ai.djl.modality.Output as the OutputDecoder builds it."""

    code: int = 200
    message: str = "OK"
    properties: dict = field(default_factory=dict)
    content: list = field(default_factory=list)  # [(key or None, bytes)]

    def get_data(self) -> bytes | None:
        """Input.getData(): the "data" entry, else the first."""
        if not self.content:
            return None
        return next((v for k, v in self.content if k == "data"), self.content[0][1])


@dataclass
class HttpRequest:
    body: bytes
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})

    @classmethod
    def json(cls, body) -> HttpRequest:
        return cls(body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode())


@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def encode_input(properties: dict, content: list) -> bytes:
    """Connection.RequestEncoder: the bytes DJL writes to the Python worker for one Input."""
    msg = bytearray(struct.pack(">h", len(properties)))
    for k, v in properties.items():
        _write_utf8(msg, k)
        _write_utf8(msg, str(v))
    msg += struct.pack(">h", len(content))
    for key, value in content:
        _write_utf8(msg, key)
        msg += struct.pack(">i", len(value))
        msg += value
    return bytes(msg)


def decode_output(buf: bytes) -> JavaOutput:
    """Connection.OutputDecoder for a non-streaming answer."""
    reader = _Reader(buf)
    out = JavaOutput(code=reader.short(), message=reader.utf8())
    for _ in range(reader.short()):
        key = reader.utf8()
        out.properties[key] = reader.utf8()
    size = reader.short()
    if size < 0:
        raise ValueError("streaming answers are not mirrored here")
    for _ in range(size):
        key = reader.utf8()
        out.content.append((key, reader.bytes()))
    return out


def lmi_recommended(serving_properties: dict, architectures: list[str], features: str = "vllm") -> dict:
    """LmiConfigRecommender.setRollingBatch (wlm, 0.35+): what LMI adds once it has read config.json.

    (0.33.0 sets option.rolling_batch=vllm where 0.35+ set rolling_batch=disable plus async_mode=true.)
    """
    props = dict(serving_properties)
    if int(props.get("batch_size", "1")) > 1:
        props["option.rolling_batch"] = "disable"
        return props
    rolling = props.get("option.rolling_batch", "auto")
    if rolling != "auto":
        return props
    text_generation = any(a.endswith(s) for a in architectures
                          for s in ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
    if text_generation and ("vllm" in features or "trtllm" in features):
        props["option.async_mode"] = "true"
    props["option.rolling_batch"] = "disable"
    return props


def init_properties(serving_properties: str) -> dict:
    """What DJL sends in the initialisation call: serving.properties' option.* keys without the prefix.

    (ModelInfo passes ``option.*`` to PyModel.load as options; PyEnv.addParameter keeps them, minus
    ``env``; PyProcess adds ``handler``.) Non-option keys such as batch_size stay with DJL.
    """
    props = {}
    for line in serving_properties.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key.startswith("option.") and key != "option.env":
            props[key[len("option."):]] = value
    props["handler"] = "handle"
    return props


def _read_binary_map(buf: bytes) -> dict:
    """Request.addResponse's reading of djl_python's Output.binary_encode."""
    reader = _Reader(buf)
    return {reader.utf8(): reader.utf8() for _ in range(reader.short())}


@dataclass
class _RollingRequest:
    """RollingBatch.java's Request: the HTTP request, and its answer once ``last`` came."""

    http: HttpRequest
    started: bool = False  # nextToken != null: later steps send it empty
    response: HttpResponse | None = None
    properties: dict = field(default_factory=dict)
    steps: int = 0


class Djl:
    """The Java side of one Python worker: initialise it, then answer HTTP requests as PyPredictor does
    (dynamic batching) or as RollingBatch does (``option.rolling_batch`` set and not "disable").

    ``transport(wire_bytes) -> wire_bytes`` is the worker: ``PythonEngine`` in process, or a socket to
    the real djl_python_engine.py (tools/check_djl_engine.py).
    """

    def __init__(self, transport):
        self.transport = transport
        self.initialised = False
        self.rolling_batch = False
        self.max_rolling_batch_size = 32
        self.steps: list[int] = []  # rolling batch: requests sent in each step

    def call(self, properties: dict, content: list) -> JavaOutput:
        properties = dict(properties)
        properties.setdefault("handler", "handle")  # PyProcess.sendRequest
        return decode_output(self.transport(encode_input(properties, content)))

    def initialize(self, serving_properties: str) -> JavaOutput:
        props = init_properties(serving_properties)
        out = self.call(props, [])
        if out.code >= 300:  # PyProcess.predictStandard(initialLoad): the worker is unrecoverable
            raise RuntimeError(f"Failed to initialize model: {out.message}")
        self.initialised = True
        self.rolling_batch = props.get("rolling_batch", "disable") != "disable"
        self.max_rolling_batch_size = int(props.get("max_rolling_batch_size", 32))
        return out

    def rolling(self, arrivals: dict[int, list[HttpRequest]]) -> list[HttpResponse]:
        """RollingBatch.run until every request is answered; ``arrivals[step]`` join before that step's call.

        Answers come back in arrival order (step, then position).
        """
        pending = [r for step in sorted(arrivals) for r in arrivals[step]]
        schedule = {step: list(arrivals[step]) for step in arrivals}
        waiting: list[_RollingRequest] = []
        active: list[_RollingRequest] = []
        by_http: dict[int, _RollingRequest] = {}
        reset, step = False, 0
        while schedule or waiting or active:
            for http in schedule.pop(step, []):
                waiting.append(by_http.setdefault(id(http), _RollingRequest(http)))
            while waiting and len(active) < self.max_rolling_batch_size:  # addInput: canAdd
                active.append(waiting.pop(0))
            step += 1
            if not active:
                continue
            props, content = {}, []
            if reset:
                props["reset_rollingbatch"] = "true"
                reset = False
            for i, req in enumerate(active):
                prefix = f"batch_{i}." if i > 99 else f"batch_{i:03d}."
                if not req.started:
                    for key, value in req.http.headers.items():
                        props[prefix + key] = value
                content.append((prefix + "data", b"" if req.started else bytes(req.http.body)))
                if not req.started:
                    content.append((prefix + "seed", b"12345"))
            props["batch_size"] = str(len(active))
            self.steps.append(len(active))
            output = self.call(props, content)
            if output.code != 200 or len(output.content) != len(active):
                body = json.dumps({"code": output.code, "message": "Batch inference failed"}).encode()
                for req in active:
                    req.response = HttpResponse(output.code, dict(req.properties), body)
                active, reset = [], True
                continue
            per_request: dict[int, dict] = {}
            for key, value in output.properties.items():
                if key.startswith("batch_"):
                    pos = key.find("_", 7)
                    if pos > 0:
                        per_request.setdefault(int(key[6:pos]), {})[key[pos + 1:]] = value
            for i, req in enumerate(active):
                req.properties.update(per_request.get(i, {}))
                entry = _read_binary_map(output.content[i][1])
                req.started, req.steps = True, req.steps + 1
                last = entry.get("last", "false").lower() == "true"
                token = entry.get("data", "")
                if not last:
                    if token:
                        raise AssertionError("the handler streamed a partial answer; it never streams")
                    continue
                if "code" in entry:
                    error = {"code": int(entry["code"])}
                    if "error" in entry:
                        error["error"] = entry["error"]
                    req.response = HttpResponse(int(entry["code"]), dict(req.properties), json.dumps(error).encode())
                else:
                    req.response = HttpResponse(200, dict(req.properties), token.encode())
            active = [r for r in active if r.response is None]
        return [by_http[id(r)].response for r in pending]

    def predict(self, requests: list[HttpRequest]) -> list[HttpResponse]:
        """PyPredictor.batchPredict over the requests DJL batched together, as HTTP answers (under rolling batch:
        the requests arriving together, decoded to the end)."""
        if self.rolling_batch:
            return self.rolling({0: list(requests)})
        if len(requests) == 1:
            (req,) = requests
            outputs = [self.call(dict(req.headers), [("data", bytes(req.body))])]
        else:
            props, content = {"batch_size": str(len(requests))}, []
            for i, req in enumerate(requests):
                prefix = f"batch_{i}." if i > 99 else f"batch_{i:03d}."
                for key, value in req.headers.items():
                    props[prefix + key] = value
                content.append((prefix + "data", bytes(req.body)))
            output = self.call(props, content)
            if output.code >= 300:
                outputs = [output] * len(requests)
            else:
                if len(output.content) != len(requests):
                    raise RuntimeError(f"Batch output size mismatch, expected: {len(requests)}, "
                                       f"actual: {len(output.content)}")
                outputs = [JavaOutput(output.code, output.message, dict(output.properties), [])
                           for _ in requests]
                for key, value in output.content:
                    match = BATCH_PATTERN.fullmatch(key or "")
                    if not match:
                        raise RuntimeError(f"Unexpected batch output key: {key}")
                    outputs[int(match.group(1))].content.append((match.group(2), value))
        return [HttpResponse(o.code, dict(o.properties), o.get_data() or b"") for o in outputs]
