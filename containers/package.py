"""Build a reproducible ``model.tar.gz`` for the LMI container.

Same inputs -> same bytes: entries sorted, mtime/uid/gid/uname/gname/mode fixed, gzip
header with mtime 0 and no file name. Contents: serving.properties, the handler files
(flat, next to model.py, as DJL's Python engine loads them) and, optionally, a model
folder under ``weights/`` (serving.properties then says ``option.model_id=weights``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmdeploy.errors import ConfigError, UsageError

HANDLER_FILES = ("model.py", "lmi_service.py", "seq2seq.py", "precision.py", "batching.py",
                 "serving_config.py", "endpoint.py")
WEIGHTS_ARCNAME = "weights"
FIXED_MTIME = 0  # 1970-01-01; reproducible whatever the files' own times
FILE_MODE = 0o644
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
BACKEND_CHOICES = ("transformers", "ctranslate2")
_SKIP_DIRS = {".git", "__pycache__", ".cache", ".ipynb_checkpoints"}

ProgressCallback = Callable[[int, int, str], None]  # (bytes done, bytes total, current member)


@dataclass(frozen=True)
class PackageSettings:
    dtype: str = "auto"
    batch_size: int = 8
    max_batch_delay_ms: int = 50
    tensor_parallel_degree: int = 1
    max_new_tokens: int = 256
    backend: str = "transformers"
    model_id: str | None = None  # hub id / path when the weights are not packaged

    def validate(self) -> "PackageSettings":
        if self.dtype not in DTYPE_CHOICES:
            from llmdeploy.errors import UnknownChoiceError

            raise UnknownChoiceError("dtype", self.dtype, DTYPE_CHOICES)
        if self.backend not in BACKEND_CHOICES:
            from llmdeploy.errors import UnknownChoiceError

            raise UnknownChoiceError("backend", self.backend, BACKEND_CHOICES)
        for name in ("batch_size", "tensor_parallel_degree", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_batch_delay_ms < 0:
            raise UsageError(f"--max-batch-delay-ms must be >= 0, got {self.max_batch_delay_ms}")
        return self


@dataclass(frozen=True)
class PackageResult:
    path: Path
    sha256: str
    size: int
    members: tuple[str, ...]


def render_serving_properties(settings: PackageSettings, *, with_weights: bool) -> str:
    settings.validate()
    model_id = WEIGHTS_ARCNAME if with_weights else settings.model_id
    lines = [
        "# Written by `llmdeploy package`; read by DJL Serving (LMI) and by model.py.",
        "engine=Python",
        "option.entryPoint=model.py",
    ]
    if model_id:
        lines.append(f"option.model_id={model_id}")
    lines += [
        f"option.dtype={settings.dtype}",
        f"option.tensor_parallel_degree={settings.tensor_parallel_degree}",
        f"option.backend={settings.backend}",
        f"option.max_new_tokens={settings.max_new_tokens}",
        f"batch_size={settings.batch_size}",
        f"max_batch_delay={settings.max_batch_delay_ms}",
    ]
    return "\n".join(lines) + "\n"


def handler_dir() -> Path:
    return Path(importlib.import_module("llmdeploy.handlers").__file__).resolve().parent


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
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file name such as model.tar.gz")

    small: list[tuple[str, bytes]] = [
        ("serving.properties", render_serving_properties(settings, with_weights=weights is not None).encode())]
    src = handler_dir()
    for name in HANDLER_FILES:
        small.append((name, (src / name).read_bytes()))
    large = _weight_files(weights) if weights is not None else []
    entries: list[tuple[str, bytes | Path]] = sorted(small + large, key=lambda e: e[0])  # type: ignore[operator]
    total = sum(len(d) if isinstance(d, bytes) else d.stat().st_size for _, d in entries)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    done = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            # filename="" and mtime=0: no name and no time in the gzip header.
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
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
    return PackageResult(out, hashing.sha.hexdigest(), hashing.size, tuple(n for n, _ in entries))


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
