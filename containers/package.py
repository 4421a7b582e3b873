"""Build a reproducible ``model.tar.gz`` for the LMI container.

Same inputs -> same bytes: entries sorted, mtime/uid/gid/uname/gname/mode fixed, gzip
header with mtime 0 and no file name. Contents: serving.properties, the handler files
(flat, next to model.py, as DJL's Python engine loads them), requirements.txt (the
handler's libraries for the djl-inference CPU image only, see llmdeploy.lmi) and,
optionally, a model folder under ``weights/``: serving.properties then says
``option.model_id=/opt/ml/model/weights``, an absolute path, because LMI resolves a
relative model_id against its working directory and then asks the Hugging Face Hub
for it (a connect timeout on a network-isolated endpoint).

serving.properties is read by DJL as Java properties: every value written is checked
(no line breaks, no backslashes, model_id only a Hub id, an s3:// URI or an absolute
path), so no setting can add a line of its own. ``option.rolling_batch`` is always
written (never left to LMI's config recommender, which would pick vLLM (0.33) or async
mode (0.35+) for a T5 with ``batch_size`` <= 1, neither of which calls this handler):

- transformers backend with continuous (iteration-level) batching: ``option.rolling_batch=llmdeploy``
  with ``max_batch_size`` as ``option.max_rolling_batch_size`` slots and ``batch_size=1``: DJL's Java
  RollingBatch drives the handler's own decode loop one step per call (handlers/lmi_service.py says how);
- static batches (ctranslate2 always; transformers with static batching, what ``auto`` gives on a GPU):
  ``option.rolling_batch=disable`` with DJL's dynamic batching (``max_batch_size`` as ``batch_size``,
  ``max_batch_delay``): the engine decodes whole batches.

``batching`` is resolved before it is written (serving_config.resolve_batching: auto = static on a GPU,
continuous on CPU, for the H200 measurement its docstring cites). The Pulumi program resolves it for the
stack's target (llmdeploy.stackconfig.stack_batching); ``llmdeploy package`` does not know where the tarball
will run, so its auto means a GPU (LMI's GPU images, the containers this tarball is mainly for): give
``--batching continuous`` for a CPU target such as a serverless endpoint.

(serving_config.batch_properties writes those keys; the handler reads them back with parse_properties.)

With ``--backend ctranslate2`` and a model folder, the converted CTranslate2 model goes in
the tarball under ``ct2/`` (``option.ct2_dir``); without weights the handler converts at
start-up.

Model folders written by transformers 5 are adapted as they are packaged so that the
transformers 4.x inside the LMI images loads them (handlers/compat.py says what and why).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmdeploy.errors import ConfigError, FileError, MissingDependencyError, UsageError
from llmdeploy.handlers import serving_config as defaults
from llmdeploy.handlers.serving_config import BACKENDS, BATCHING_CHOICES, DTYPES, RANGES, batch_properties

# What model.py imports, flat. (endpoint.py, the aiohttp server of `llmdeploy serve`, is not needed in DJL.)
HANDLER_FILES = ("model.py", "lmi_service.py", "seq2seq.py", "decode.py", "precision.py", "batching.py",
                 "serving_config.py", "compat.py")
WEIGHTS_ARCNAME = "weights"
CT2_ARCNAME = "ct2"  # the converted CTranslate2 model (--backend ctranslate2 with a model folder)
CONTAINER_MODEL_DIR = defaults.CONTAINER_MODEL_DIR  # where SageMaker and the reserved boot script extract model.tar.gz
REQUIREMENTS = "requirements.txt"
# Hugging Face Hub ids: "name" or "owner/name", letters, digits, '.', '_' and '-'.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters (line breaks) and backslashes
FIXED_MTIME = 0  # 1970-01-01; reproducible whatever the files' own times
FILE_MODE = 0o644
_SKIP_DIRS = {".git", "__pycache__", ".cache", ".ipynb_checkpoints"}

ProgressCallback = Callable[[int, int, str], None]  # (bytes done, bytes total, current member)


# The backends that can run iteration-level (DJL drives them one decode step at a time, option.rolling_batch) when
# batching resolves to continuous; the others always get static batches.
ROLLING_BACKENDS = ("transformers",)
# `llmdeploy package` does not know the device the tarball will be served on; auto is resolved as for a GPU (see the
# module docstring).
PACKAGE_AUTO_ON_GPU = True


def package_batching(batching: str) -> str:
    """``continuous`` or ``static``: what ``llmdeploy package``'s ``--batching`` means (auto = a GPU target's)."""
    return defaults.resolve_batching(batching, on_gpu=PACKAGE_AUTO_ON_GPU)


@dataclass(frozen=True)
class PackageSettings:
    """What serving.properties says; defaults from handlers/serving_config.py (what the handler assumes too)."""

    dtype: str = defaults.DEFAULT_DTYPE
    backend: str = defaults.DEFAULT_BACKEND
    # continuous | static, or auto (package_batching: static). The Pulumi program passes the stack's resolved value.
    batching: str = defaults.DEFAULT_BATCHING
    # Requests decoded together: option.max_rolling_batch_size (iteration-level) or batch_size (static batches).
    max_batch_size: int = defaults.DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: int = defaults.DEFAULT_MAX_BATCH_DELAY_MS  # static batches only
    tensor_parallel_degree: int = defaults.DEFAULT_TENSOR_PARALLEL_DEGREE
    max_new_tokens: int = defaults.DEFAULT_MAX_NEW_TOKENS
    max_num_beams: int = defaults.DEFAULT_MAX_NUM_BEAMS
    max_request_tokens: int = defaults.DEFAULT_MAX_REQUEST_TOKENS
    model_id: str | None = None  # hub id / path when the weights are not packaged

    @property
    def rolling(self) -> bool:
        """Iteration-level batching under DJL: a backend that has a decode loop, with batching continuous."""
        return self.backend in ROLLING_BACKENDS and package_batching(self.batching) == "continuous"

    def validate(self) -> PackageSettings:
        from llmdeploy.errors import UnknownChoiceError

        if self.model_id is not None:
            check_model_id(self.model_id)
        if self.dtype not in DTYPES:
            raise UnknownChoiceError("dtype", self.dtype, DTYPES)
        if self.backend not in BACKENDS:
            raise UnknownChoiceError("backend", self.backend, BACKENDS)
        if self.batching not in BATCHING_CHOICES:
            raise UnknownChoiceError("batching", self.batching, BATCHING_CHOICES)
        for name in RANGES:
            why = defaults.out_of_range(name, getattr(self, name))
            if why:
                raise UsageError(f"--{name.replace('_', '-')} {why}")
        return self


@dataclass(frozen=True)
class PackageResult:
    path: Path
    sha256: str
    size: int
    members: tuple[str, ...]
    adapted: tuple[str, ...] = ()  # weights files rewritten for transformers 4.x (handlers/compat.py)


def check_model_id(model_id: str) -> str:
    """``model_id`` when it is a Hub id, an s3:// URI or an absolute path with nothing that breaks a properties line."""
    shown = repr(model_id)
    if _UNSAFE.search(model_id):
        raise UsageError(f"--model-id {shown} contains a line break, control character or backslash, which "
                         "serving.properties cannot hold; give a Hugging Face Hub id (google/flan-t5-xl), an s3:// "
                         "URI or an absolute path.")
    if model_id != model_id.strip() or not model_id:
        raise UsageError(f"--model-id {shown} is empty or has leading/trailing spaces; remove them.")
    if model_id.startswith("s3://"):
        if not _S3_URI.fullmatch(model_id):
            raise UsageError(f"--model-id {shown} is not an s3://BUCKET/PREFIX URI with a valid bucket name.")
        return model_id
    if model_id.startswith("/") or _HUB_ID.fullmatch(model_id):
        return model_id
    raise UsageError(f"--model-id {shown} is not a Hugging Face Hub id (owner/name), an s3:// URI or an absolute "
                     "path; for a local folder give --model DIR to package it.")


def _property(key: str, value) -> str:
    text = str(value)
    if _UNSAFE.search(text) or text != text.strip():
        raise UsageError(f"serving.properties value {text!r} for {key} contains a line break, control character, "
                         "backslash or surrounding spaces.")
    return f"{key}={text}"


def render_serving_properties(settings: PackageSettings, *, with_weights: bool, with_ct2: bool = False) -> str:
    settings.validate()
    model_id = f"{CONTAINER_MODEL_DIR}/{WEIGHTS_ARCNAME}" if with_weights else settings.model_id
    lines = [
        "# Written by `llmdeploy package`; read by DJL Serving (LMI) and by model.py.",
        _property("engine", "Python"),
        _property("option.entryPoint", "model.py"),
    ]
    if model_id:
        lines.append(_property("option.model_id", model_id))
    # Iteration-level (transformers, batching continuous): DJL's Java RollingBatch calls handle() once per decode
    # step; the handler runs its own T5 loop. Static batches (ctranslate2, or batching static): DJL's dynamic
    # batching, no rolling batch or async mode.
    lines += [_property(key, value) for key, value in batch_properties(
        int(settings.max_batch_size), rolling=settings.rolling, max_batch_delay_ms=int(settings.max_batch_delay_ms))]
    if with_ct2:
        lines.append(_property("option.ct2_dir", f"{CONTAINER_MODEL_DIR}/{CT2_ARCNAME}"))
    lines += [
        _property("option.dtype", settings.dtype),
        _property("option.tensor_parallel_degree", int(settings.tensor_parallel_degree)),
        _property("option.backend", settings.backend),
        _property("option.max_new_tokens", int(settings.max_new_tokens)),
        _property("option.max_num_beams", int(settings.max_num_beams)),
        _property("option.max_request_tokens", int(settings.max_request_tokens)),
        # One model copy per device. DJL loads a model found at start-up on every GPU (ModelInfo.getLoadOnDevices:
        # GPUs / tensor_parallel_degree devices, as ModelStore registers it with maxWorkers -1; each worker sees only
        # its own GPU through CUDA_VISIBLE_DEVICES) and caps each device's workers at this property: so one copy per
        # GPU, which is plan's replicas. DJL's default on CPU (the serverless image) is up to 2 Python workers,
        # each loading the whole model: twice the memory a serverless endpoint has.
        _property("maxWorkers", 1),
    ]
    return "\n".join(lines) + "\n"


def requirements_txt(backend: str = "transformers") -> str:
    from llmdeploy.lmi import cpu_image_requirements, load_lmi_table

    return cpu_image_requirements(load_lmi_table(), backend=backend)


def convert_for_package(weights_dir: Path, into: Path) -> Path:
    """The CTranslate2 conversion of ``weights_dir`` (float weights as stored; compute type chosen at load)."""
    try:
        from llmdeploy.handlers.seq2seq import convert_to_ctranslate2
    except ImportError as exc:
        raise MissingDependencyError(f"--backend ctranslate2 converts the model here and needs the serving "
                                     f"libraries ({exc.name} is missing): pip install 'llmdeploy[serve,ctranslate2]'") \
            from None
    from llmdeploy.handlers.serving_config import HandlerError

    try:
        return convert_to_ctranslate2(str(weights_dir), into, force=True)
    except HandlerError as exc:
        raise MissingDependencyError(str(exc)) from None


def adapted_weight_files(weights_dir: Path) -> dict[str, bytes]:
    """{arcname: bytes} for the weights' JSON files transformers 4.x cannot read as written (by transformers 5).

    ConfigError, naming the file, when one of them is not a JSON object.
    """
    from llmdeploy.handlers.compat import (
        MODEL_CONFIG,
        TOKENIZER_CONFIG,
        dumps,
        model_config_for_v4,
        tokenizer_config_for_v4,
    )

    names = {p.name for p in weights_dir.iterdir() if p.is_file()}
    adapted = {}
    for name, adapt in ((TOKENIZER_CONFIG, lambda c: tokenizer_config_for_v4(c, names)),
                        (MODEL_CONFIG, model_config_for_v4)):
        path = weights_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{str(path)!r} is not valid JSON ({exc}); re-save the model with save_pretrained().") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object; "
                              "re-save the model with save_pretrained().")
        fixed = adapt(data)
        if fixed is not None:
            adapted[f"{WEIGHTS_ARCNAME}/{name}"] = dumps(fixed).encode()
    return adapted


def handler_dir() -> Path:
    module_file = importlib.import_module("llmdeploy.handlers").__file__
    if module_file is None:  # a namespace package: an install that lost handlers/__init__.py
        raise FileError("llmdeploy.handlers has no files in this install: reinstall llmdeploy (pip install -e .).")
    return Path(module_file).resolve().parent


def _weight_files(weights_dir: Path) -> list[tuple[str, Path]]:
    files = []
    for root, dirs, names in os.walk(weights_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in names:
            path = Path(root) / name
            if path.is_file():
                rel = path.relative_to(weights_dir).as_posix()
                files.append((f"{WEIGHTS_ARCNAME}/{rel}", path))
    return sorted(files)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.REGTYPE
    return info


class _HashingWriter(io.RawIOBase):
    def __init__(self, fh):
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self._fh.write(b)


def build_model_tarball(out: str | os.PathLike, settings: PackageSettings | None = None, *,
                        weights_dir: str | os.PathLike | None = None,
                        progress: ProgressCallback | None = None) -> PackageResult:
    """Write ``out`` atomically (temp file + rename in the same folder) and return its sha256.

    Streams the weights (no whole-file buffering), calling ``progress`` as bytes are added.
    """
    settings = (settings or PackageSettings()).validate()
    out = Path(out)
    weights = Path(weights_dir) if weights_dir is not None else None
    if weights is not None and not weights.is_dir():
        raise UsageError(f"model folder {str(weights)!r} does not exist or is not a folder")
    if weights is not None and not any(weights.glob("config.json")):
        raise ConfigError(f"{str(weights)!r} has no config.json; expected a transformers model folder "
                          "(save_pretrained output)")
    from llmdeploy.fileio import check_output_path

    out = check_output_path(out, "--out")  # only a regular file is replaced (not a FIFO, device or folder)
    with tempfile.TemporaryDirectory(prefix="llmdeploy-package-") as work:
        ct2 = None
        if weights is not None and settings.backend == "ctranslate2":
            ct2 = convert_for_package(weights, Path(work) / CT2_ARCNAME)
        return _write_tarball(out, settings, weights, ct2, progress)


def _write_tarball(out: Path, settings: PackageSettings, weights: Path | None, ct2: Path | None,
                   progress: ProgressCallback | None) -> PackageResult:
    small: list[tuple[str, bytes]] = [
        ("serving.properties",
         render_serving_properties(settings, with_weights=weights is not None, with_ct2=ct2 is not None).encode()),
        (REQUIREMENTS, requirements_txt(settings.backend).encode())]
    src = handler_dir()
    for name in HANDLER_FILES:
        small.append((name, (src / name).read_bytes()))
    adapted = adapted_weight_files(weights) if weights is not None else {}
    small += sorted(adapted.items())
    large = [(n, p) for n, p in _weight_files(weights) if n not in adapted] if weights is not None else []
    if ct2 is not None:
        large += [(f"{CT2_ARCNAME}/{n[len(WEIGHTS_ARCNAME) + 1:]}", p) for n, p in _weight_files(ct2)]
    entries: list[tuple[str, bytes | Path]] = sorted(small + large, key=lambda e: e[0])  # type: ignore[operator]
    total = sum(len(d) if isinstance(d, bytes) else d.stat().st_size for _, d in entries)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    done = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            # filename="" and mtime=0: no name and no time in the gzip header.
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=6) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                    for name, data in entries:
                        if isinstance(data, bytes):
                            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                            done += len(data)
                        else:
                            size = data.stat().st_size
                            with open(data, "rb") as fh:
                                tar.addfile(_tarinfo(name, size), _ProgressReader(fh, name, done, total, progress))
                            done += size
                        if progress is not None:
                            progress(done, total, name)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return PackageResult(out, hashing.sha.hexdigest(), hashing.size, tuple(n for n, _ in entries), tuple(sorted(adapted)))


class _ProgressReader:
    """File wrapper reporting progress every few MiB while tarfile copies a large file."""

    _EVERY = 64 << 20

    def __init__(self, fh, name, start, total, progress):
        self._fh, self._name, self._done, self._total, self._progress = fh, name, start, total, progress
        self._since = 0

    def read(self, n=-1):
        chunk = self._fh.read(n)
        self._done += len(chunk)
        self._since += len(chunk)
        if self._progress is not None and self._since >= self._EVERY:
            self._since = 0
            self._progress(self._done, self._total, self._name)
        return chunk


def sha256_file(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()
