"""Serving settings and per-request parameters, validated once, shared by DJL and the local endpoint.

This module imports only the standard library: it is copied flat next to the
DJL entry module (``model.py``) inside the LMI container, so it must not import
``llmdeploy`` or anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

DTYPES = ("auto", "fp32", "fp16", "bf16", "int8")
_DTYPE_ALIASES = {
    "auto": "auto",
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8",
}
BACKENDS = ("transformers", "ctranslate2")
BATCHING_MODES = ("continuous", "static")  # iteration-level (T5 on transformers), or whole batches
# `batching` as users give it (the stack setting, `llmdeploy serve --batching`, `llmdeploy package --batching`):
# one of BATCHING_MODES, or auto = resolve_batching()'s choice for the device the model server runs on.
BATCHING_AUTO = "auto"
BATCHING_CHOICES = (BATCHING_AUTO, *BATCHING_MODES)
DEFAULT_BATCHING = BATCHING_AUTO
DEFAULT_CONTEXT_TOKENS = 512

# -- serving defaults: the one place `llmdeploy serve`, `llmdeploy package`, the stack settings (llmdeploy/stackconfig.py,
# Pulumi.yaml), `llmdeploy plan` and the handler read them ------------------------------------------------------------
DEFAULT_DTYPE = "auto"
DEFAULT_BACKEND = "transformers"
DEFAULT_MAX_NEW_TOKENS = 256  # cap on a request's max_new_tokens
DEFAULT_REQUEST_NEW_TOKENS = 64  # max_new_tokens of a request that sends none (the cap when that is lower)
# Requests decoded together by one model copy: the slots of the iteration-level loop (under DJL,
# option.max_rolling_batch_size) or the size of a static batch (DJL's batch_size); batch_properties() says which key
# carries it. `llmdeploy plan` sizes each instance's capacity with batches up to this one and writes the batch it chose
# into the stack (maxBatchSize), whence `llmdeploy package` and the Pulumi program put it in serving.properties;
# `llmdeploy calibrate` measures the same batches.
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_TENSOR_PARALLEL_DEGREE = 1  # GPUs one model copy is split across
DEFAULT_MAX_BATCH_DELAY_MS = 50  # longest wait for a static batch to fill (DJL's max_batch_delay)
DEFAULT_MAX_INPUTS = 64  # texts in one request's "inputs" list
DEFAULT_MAX_NUM_BEAMS = 4  # cap on a request's num_beams
# A request's cost: max_new_tokens x num_beams x texts, the most tokens it can make the model decode. A request
# over the budget is refused (400) before it reaches the model: one request cannot hold the GPU for minutes
# (64 prompts x 16 beams x 256 tokens = 262,144 would). 8192 = 32 texts x 256 tokens, or 8 x 4 beams x 256.
DEFAULT_MAX_REQUEST_TOKENS = 8192
# Seconds a request may run inside the handler before it is retired with 504. Under DJL this matches its
# chunked_read_timeout (120 s, ConfigManager.getChunkedReadTimeout), after which the front end has given up.
DEFAULT_REQUEST_TIMEOUT_S = 120.0
# The local endpoint (`llmdeploy serve`, endpoint.py): it stands in for a SageMaker real-time endpoint, which gives
# the container 60 s to answer an invocation; the rest are its defences against slow clients and its shutdown.
DEFAULT_SERVE_REQUEST_TIMEOUT_S = 60.0
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB; larger bodies are answered 413
DEFAULT_HEADER_TIMEOUT_S = 10.0  # to send the request headers
DEFAULT_BODY_TIMEOUT_S = 10.0  # to send the request body (then 408)
DEFAULT_GRACE_S = 30.0  # on SIGTERM, for running requests to finish
# (minimum, maximum) of each numeric serving setting, whoever sets it: the flags of `serve` and `package`, the stack
# settings and serving.properties. The maxima are sanity bounds of this project, not limits of DJL or the model.
RANGES = {
    "max_batch_size": (1, 1024),
    "max_batch_delay_ms": (0, 60_000),
    "max_new_tokens": (1, 65_536),
    "max_num_beams": (1, 64),
    "max_request_tokens": (1, 10_000_000),
    "tensor_parallel_degree": (1, 64),
}
# option.rolling_batch values: "disable" = DJL's dynamic (static) batches; any other value makes DJL's Java side
# drive this handler one decode step at a time (PyProcess: rolling_batch != null && != "disable").
ROLLING_BATCH_DISABLED = "disable"
ROLLING_BATCH_OURS = "llmdeploy"
# Where SageMaker (and the reserved-mode boot script) put the extracted model.tar.gz.
CONTAINER_MODEL_DIR = "/opt/ml/model"


def out_of_range(name: str, value) -> str | None:
    """Why ``value`` is not a valid ``name`` (a key of RANGES), or None."""
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    if not low <= value <= high:
        return f"must be {low}..{high}, got {value}"
    return None


def batch_properties(max_batch_size: int, *, rolling: bool, max_batch_delay_ms: int) -> list[tuple[str, str]]:
    """The serving.properties entries that carry the batch, for either way DJL can batch (parse_properties reads
    the same keys back):

    - iteration-level (``rolling``): ``option.rolling_batch=llmdeploy`` makes DJL's Java RollingBatch keep up to
      ``option.max_rolling_batch_size`` requests and call the handler once per decode step; ``batch_size`` stays 1
      (larger, LMI's config recommender would force option.rolling_batch=disable);
    - static: ``option.rolling_batch=disable`` and DJL's dynamic batching, ``batch_size`` requests at most,
      waiting up to ``max_batch_delay`` ms for them.
    """
    if rolling:
        return [("option.rolling_batch", ROLLING_BATCH_OURS), ("option.max_rolling_batch_size", str(max_batch_size)),
                ("batch_size", "1")]
    return [("option.rolling_batch", ROLLING_BATCH_DISABLED), ("batch_size", str(max_batch_size)),
            ("max_batch_delay", str(max_batch_delay_ms))]


def resolve_batching(batching: str, *, on_gpu: bool) -> str:
    """The batching a model server runs: ``batching`` itself unless it is ``auto``, then ``static`` on a GPU and
    ``continuous`` (iteration-level) on CPU. The one rule: the stack (llmdeploy.stackconfig.stack_batching, from the
    mode and the instance type's GPUs), `llmdeploy package` and the local endpoint (from the device it loaded the
    model on) all resolve auto here.

    Why: measured with ``benchmarks/bench_serve.py --device cuda`` on an NVIDIA H200 on 2026-11-30 (torch 2.11
    cu130, transformers 5.17, bf16), the iteration-level loop served about half the requests per second of static
    batches (flan-t5-xl shape, 96 requests of 4..128 new tokens from 32 clients: 4.27 / 4.62 req/s against 8.60 /
    8.44; flan-t5-small shape, mixed lengths: 5.15 / 4.81 against 16.1), while on CPU (2 vCPUs) it won (mixed
    lengths: 4.66 against 3.27 req/s). `llmdeploy plan`'s speed model is calibrated on static batches
    (transformers' generate()), so on a GPU static batches are also what plan's capacity figures describe.
    """
    if batching not in BATCHING_CHOICES:
        raise ServingConfigError(f"batching {batching!r} is not supported; use one of {', '.join(BATCHING_CHOICES)}")
    if batching != BATCHING_AUTO:
        return batching
    return "static" if on_gpu else "continuous"


class HandlerError(Exception):
    """Base for errors the handler reports; ``code`` is an HTTP-style status."""

    code = 500


class ServingConfigError(HandlerError, ValueError):
    """serving.properties (or the serve flags) hold a value that cannot be used."""

    code = 500


class MissingBackendError(HandlerError, ImportError):
    """An optional library (bitsandbytes, ctranslate2) needed by the chosen settings is absent."""

    code = 500


class RequestError(HandlerError):
    """One request is malformed; only that request fails (4xx)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ServingConfig:
    """What serving.properties (or ``llmdeploy serve`` flags) say, parsed once."""

    model_id: str | None = None
    model_dir: str | None = None
    dtype: str = DEFAULT_DTYPE
    backend: str = DEFAULT_BACKEND
    # Requests decoded together (see DEFAULT_MAX_BATCH_SIZE): the rolling batch's slots when ``rolling_batch``,
    # else the static batch's size.
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS
    default_max_new_tokens: int = DEFAULT_REQUEST_NEW_TOKENS
    max_input_tokens: int | None = None  # None: the model's own context (T5: 512)
    tensor_parallel_degree: int = DEFAULT_TENSOR_PARALLEL_DEGREE
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_num_beams: int = DEFAULT_MAX_NUM_BEAMS
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS
    max_inputs: int = DEFAULT_MAX_INPUTS
    # Iteration-level batching under DJL (option.rolling_batch other than "disable").
    rolling_batch: bool = False
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    ct2_dir: str | None = None  # converted CTranslate2 model (package puts it at /opt/ml/model/ct2)

    def model_location(self) -> str:
        """Local folder (or hub id) to load: option.model_id when it is set and not s3://, else model_dir.

        DJL downloads an ``s3://`` model_id itself and hands the handler the local copy's path in its
        place, so an s3:// value reaching here means nothing was downloaded. A path under
        ``/opt/ml/model`` (what `llmdeploy package` writes) that does not exist, as when the extracted
        tarball is served from another folder, is looked up under model_dir instead.
        """
        if self.model_id and not self.model_id.startswith("s3://"):
            if os.path.isabs(self.model_id):
                return self.container_path(self.model_id)
            # A relative model_id is a folder in model_dir when one exists there, else a hub id.
            if self.model_dir:
                candidate = os.path.join(self.model_dir, self.model_id)
                if os.path.isdir(candidate):
                    return candidate
            return self.model_id
        if self.model_dir:
            return self.model_dir
        raise ServingConfigError(
            "no model to load: set option.model_id in serving.properties or put the weights in the model folder"
        )


    def container_path(self, path: str) -> str:
        """``path``, or its copy under model_dir when it names a missing folder under /opt/ml/model."""
        relative = os.path.relpath(path, CONTAINER_MODEL_DIR)
        if (self.model_dir and not os.path.exists(path) and not relative.startswith("..")
                and os.path.isdir(os.path.join(self.model_dir, relative))):
            return os.path.join(self.model_dir, relative)
        return path

    def ct2_location(self) -> str | None:
        """The converted CTranslate2 model folder serving.properties names (option.ct2_dir), if any."""
        return self.container_path(self.ct2_dir) if self.ct2_dir else None


def _int(props: Mapping[str, str], keys: tuple[str, ...], default: int, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    for key in keys:
        if key in props and str(props[key]).strip() != "":
            raw = str(props[key]).strip()
            try:
                value = int(raw)
            except ValueError:
                raise ServingConfigError(f"{key}={raw!r} is not an integer") from None
            if value < minimum or (maximum is not None and value > maximum):
                bound = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
                raise ServingConfigError(f"{key}={value} must be {bound}")
            return value
    return default


def _setting(props: Mapping[str, str], keys: tuple[str, ...], name: str, default: int) -> int:
    """An integer serving setting within its RANGES."""
    low, high = RANGES[name]
    return _int(props, keys, default, minimum=low, maximum=high)


def _float(props: Mapping[str, str], key: str, default: float, *, above: float = 0.0) -> float:
    raw = str(props.get(key, "")).strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ServingConfigError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= above:
        raise ServingConfigError(f"{key}={raw!r} must be a finite number > {above:g}")
    return value


def normalise_dtype(raw: str) -> str:
    value = _DTYPE_ALIASES.get(str(raw).strip().lower())
    if value is None:
        raise ServingConfigError(f"option.dtype={raw!r} is not supported; use one of {', '.join(DTYPES)}")
    return value


def parse_properties(props: Mapping[str, str] | None) -> ServingConfig:
    """serving.properties as DJL hands them to the handler (``option.`` prefixes kept or stripped)."""
    props = {str(k): str(v) for k, v in (props or {}).items()}
    # DJL passes options both as "option.x" (older) and "x" (newer); accept both.
    flat = dict(props)
    for key, value in props.items():
        if key.startswith("option."):
            flat.setdefault(key[len("option."):], value)

    backend = flat.get("backend", DEFAULT_BACKEND).strip().lower() or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ServingConfigError(f"option.backend={backend!r} is not supported; use one of {', '.join(BACKENDS)}")
    cap = _setting(flat, ("max_new_tokens_cap", "max_new_tokens"), "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    default_new = min(_int(flat, ("default_max_new_tokens",), min(DEFAULT_REQUEST_NEW_TOKENS, cap), minimum=1), cap)
    max_input = _int(flat, ("max_input_tokens",), 0, minimum=0) or None
    rolling = (flat.get("rolling_batch", ROLLING_BATCH_DISABLED).strip().lower() or ROLLING_BATCH_DISABLED) \
        != ROLLING_BATCH_DISABLED
    # The batch is where batch_properties() puts it: the rolling batch's slots, or DJL's static batch_size.
    batch_key = "max_rolling_batch_size" if rolling else "batch_size"
    device = flat.get("device", "auto").strip().lower() or "auto"
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ServingConfigError(f"option.device={device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return ServingConfig(
        model_id=(flat.get("model_id") or "").strip() or None,
        model_dir=(flat.get("model_dir") or "").strip() or None,
        dtype=normalise_dtype(flat.get("dtype", DEFAULT_DTYPE) or DEFAULT_DTYPE),
        backend=backend,
        max_batch_size=_setting(flat, (batch_key,), "max_batch_size", DEFAULT_MAX_BATCH_SIZE),
        max_batch_delay_ms=_setting(flat, ("max_batch_delay",), "max_batch_delay_ms", DEFAULT_MAX_BATCH_DELAY_MS),
        max_new_tokens_cap=cap,
        default_max_new_tokens=default_new,
        max_input_tokens=max_input,
        # "max" (all GPUs) is LMI's default; this handler runs one model copy per worker, so 1.
        tensor_parallel_degree=1 if flat.get("tensor_parallel_degree", "").strip().lower() == "max"
        else _setting(flat, ("tensor_parallel_degree",), "tensor_parallel_degree", DEFAULT_TENSOR_PARALLEL_DEGREE),
        device=device,
        max_num_beams=_setting(flat, ("max_num_beams",), "max_num_beams", DEFAULT_MAX_NUM_BEAMS),
        max_request_tokens=_setting(flat, ("max_request_tokens",), "max_request_tokens", DEFAULT_MAX_REQUEST_TOKENS),
        max_inputs=_int(flat, ("max_inputs",), DEFAULT_MAX_INPUTS, minimum=1),
        rolling_batch=rolling,
        request_timeout_s=_float(flat, "request_timeout", DEFAULT_REQUEST_TIMEOUT_S),
        ct2_dir=(flat.get("ct2_dir") or "").strip() or None,
    )


def replace(config: ServingConfig, **changes) -> ServingConfig:
    return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------------------------
# Per-request generation parameters
# --------------------------------------------------------------------------------------------

def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# name -> (check, description)
_PARAMS = {
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "min_new_tokens": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "num_beams": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "no_repeat_ngram_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "length_penalty": (lambda v: _is_number(v), "a number"),
    "early_stopping": (lambda v: isinstance(v, bool), "true or false"),
}
GENERATION_PARAMETERS = tuple(_PARAMS)


@dataclass(frozen=True)
class ParsedRequest:
    """One client request: its texts, its generation parameters, whether it sent a list."""

    texts: tuple[str, ...]
    params: tuple[tuple[str, object], ...]  # sorted items: hashable, so identical params group together
    is_list: bool = False

    @property
    def param_dict(self) -> dict:
        return dict(self.params)


def validate_parameters(raw, config: ServingConfig) -> tuple[tuple[str, object], ...]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RequestError(f"'parameters' must be a JSON object, got {type(raw).__name__}")
    params: dict[str, object] = {}
    for name, value in raw.items():
        if name not in _PARAMS:
            raise RequestError(
                f"unknown generation parameter {name!r}; supported: {', '.join(GENERATION_PARAMETERS)}"
            )
        check, description = _PARAMS[name]
        if not check(value):
            raise RequestError(f"parameter {name!r} must be {description}, got {value!r}")
        params[name] = float(value) if name in ("temperature", "top_p", "repetition_penalty",
                                                 "length_penalty") else value
    params.setdefault("max_new_tokens", config.default_max_new_tokens)
    counts = {name: value for name, value in params.items() if _is_int(value)}  # the integer ones, checked above
    max_new_tokens, min_new_tokens = counts["max_new_tokens"], counts.get("min_new_tokens", 0)
    if max_new_tokens > config.max_new_tokens_cap:
        raise RequestError(
            f"max_new_tokens={max_new_tokens} exceeds this endpoint's cap of {config.max_new_tokens_cap}"
        )
    if min_new_tokens > max_new_tokens:
        raise RequestError(
            f"min_new_tokens={min_new_tokens} is larger than max_new_tokens={max_new_tokens}"
        )
    if counts.get("num_beams", 1) > config.max_num_beams:
        raise RequestError(f"num_beams={params['num_beams']} exceeds this endpoint's cap of {config.max_num_beams}")
    return tuple(sorted(params.items()))


def request_cost(params: dict, texts: int) -> int:
    """The most tokens a request can make the model decode: max_new_tokens x num_beams x texts."""
    return int(params["max_new_tokens"]) * int(params.get("num_beams", 1)) * int(texts)


def check_budget(params: dict, texts: int, config: ServingConfig) -> None:
    cost = request_cost(params, texts)
    if cost > config.max_request_tokens:
        raise RequestError(
            f"request too costly: {texts} input(s) x max_new_tokens {params['max_new_tokens']} x num_beams "
            f"{params.get('num_beams', 1)} = {cost} tokens, over this endpoint's budget of {config.max_request_tokens}; "
            "send fewer inputs per request or lower max_new_tokens / num_beams")


def parse_request(body, config: ServingConfig, *, max_inputs: int | None = None) -> ParsedRequest:
    """A decoded JSON body ``{"inputs": str | [str], "parameters": {...}}`` -> ParsedRequest or RequestError."""
    if isinstance(body, str):
        body = {"inputs": body}
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object with 'inputs', got {type(body).__name__}")
    unknown = sorted(set(body) - {"inputs", "parameters"})
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected 'inputs' and 'parameters'")
    if "inputs" not in body:
        raise RequestError("missing field 'inputs' (a string or a list of strings)")
    inputs = body["inputs"]
    max_inputs = config.max_inputs if max_inputs is None else max_inputs
    if isinstance(inputs, str):
        texts, is_list = (inputs,), False
    elif isinstance(inputs, list):
        if not inputs:
            raise RequestError("'inputs' is an empty list")
        if len(inputs) > max_inputs:
            raise RequestError(f"'inputs' has {len(inputs)} items; at most {max_inputs} per request", code=413)
        if not all(isinstance(t, str) for t in inputs):
            raise RequestError("every item of 'inputs' must be a string")
        texts, is_list = tuple(inputs), True
    else:
        raise RequestError(f"'inputs' must be a string or a list of strings, got {type(inputs).__name__}")
    params = validate_parameters(body.get("parameters"), config)
    check_budget(dict(params), len(texts), config)
    return ParsedRequest(texts=texts, params=params, is_list=is_list)


def format_result(request: ParsedRequest, generated: list[str]):
    items = [{"generated_text": text} for text in generated]
    return items if request.is_list else items[0]
