"""Speed calibrations: what a decode step and a prefill really cost on one kind of device.

The speed model in ``sizing.latency`` needs five numbers per device: the bandwidth and FLOP/s a
decode step reaches, the FLOP/s of the prefill (prompt / encoder pass), the fixed cost of running one
decoder layer for one step (Python, framework dispatch, kernel launches: what a pure roofline misses
and what dominates small models), and a fixed cost per prefill. A ``Calibration`` holds them, with
where they came from:

- ``measured``: ``llmdeploy calibrate`` ran the real handler on a device and fitted them
  (``fit`` below); the bundled CPU calibration is one, made on a 2-vCPU host;
- ``published``: derived from a published measurement of Hugging Face T5 generation on that GPU
  (``data/calibrations.toml``, each with its source and date);
- ``roofline``: the fallback for a GPU nothing was measured on: datasheet bandwidth and FLOP/s times
  the efficiencies in ``assumptions.toml``, plus the per-layer overhead of the published calibration
  named there (per-step overhead is host-side work, so it carries over), and it says so.

Precedence for one device: bundled < the user cache (``calibrate`` writes there) < ``--calibration``.
Pure Python: the measuring half of ``calibrate`` (torch, the handler) lives in ``llmdeploy.cli.calibrate``.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

from llmdeploy import checks
from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Catalog, Gpu, user_cache_dir
from llmdeploy.errors import ConfigError, UsageError
from llmdeploy.fileio import read_text_utf8, write_atomic

SCHEMA_VERSION = 1
BUNDLED_PATH = Path(__file__).parent / "data" / "calibrations.toml"
ORIGINS = ("measured", "published", "roofline")
CPU = "cpu"

# torch.cuda.get_device_name() -> the catalog's GPU name. A100 and V100 come in two memory sizes: the
# reported total memory decides (see gpu_from_device).
_DEVICE_NAMES = (
    ("T4", "T4"), ("A10G", "A10G"), ("L40S", "L40S"), ("L4", "L4"), ("H100", "H100"), ("H200", "H200"),
    ("A100", "A100"), ("V100", "V100"),
)


@dataclass(frozen=True)
class Point:
    """One measured batch: time to first token, mean time of each further token, peak memory above the baseline."""

    batch: int
    prefill_s: float
    step_s: float
    peak_bytes: int | None = None


@dataclass(frozen=True)
class Calibration:
    device: str  # "cpu" or a catalog GPU name (gpus.toml)
    origin: str  # measured | published | roofline
    name: str  # one line for people: what, where, when
    source: str  # URL, or the file it was read from
    date: str  # ISO date of the measurement or publication
    bandwidth_gbs: float  # effective memory bandwidth while decoding, GB/s
    decode_flops: float  # effective FLOP/s of a decode step's matmuls
    prefill_flops: float  # effective FLOP/s of the prompt / encoder pass
    step_overhead_s_per_layer: float  # fixed cost of one decoder layer for one step
    prefill_overhead_s: float = 0.0  # fixed cost of one prefill beyond its layers
    dtype: str = ""  # dtype it was measured in ("" for the roofline)
    model: str = ""  # model (shape) it was measured on
    host: str = ""  # CPU model and threads, or GPU name as the driver reports it
    input_tokens: int | None = None
    points: tuple[Point, ...] = ()
    note: str = ""

    def label(self) -> str:
        """Short: which device and how its speed is known ("T4 roofline", "cpu measured")."""
        return f"{self.device} {self.origin}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["points"] = [asdict(p) for p in self.points]
        return {"schema_version": SCHEMA_VERSION, **data}

    def summary(self) -> dict:
        """What plan and estimate report about the calibration they used."""
        return {"device": self.device, "origin": self.origin, "name": self.name, "source": self.source, "date": self.date}


def _checked(raw: Mapping, key: str, where: str, *, positive: bool, maximum: float | None, whole: bool,
             default: object) -> float | int:
    """One field, through the checks every number llmdeploy reads goes through (llmdeploy.checks): a number
    (not text, not a bool), finite, in range; a 4000-digit integer is refused by its size, never converted."""
    value = raw.get(key, default)  # absent and required: None, refused below as "must be a number"
    name = f"calibration {where}: {key}"
    try:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UsageError(f"{name} must be a number, got {checks.shown(value)}.")
        if whole:
            value = checks.parse_int(name, value)
        checks.number(name, value, above=0 if positive else None, minimum=None if positive else 0, maximum=maximum)
    except UsageError as exc:
        raise ConfigError(exc.message, hint="Re-run 'llmdeploy calibrate' to write a fresh file.") from None
    return value


def _number(raw: Mapping, key: str, where: str, *, positive: bool = True, maximum: float | None = None,
            default: object = None) -> float:
    """A float field (``_checked``); an integer in the file reads as the same float."""
    return float(_checked(raw, key, where, positive=positive, maximum=maximum, whole=False, default=default))


def _whole(raw: Mapping, key: str, where: str, *, positive: bool = True, maximum: float | None = None) -> int:
    """A whole-number field (``_checked``): 3.0 reads as 3, 2.5 is refused."""
    return int(_checked(raw, key, where, positive=positive, maximum=maximum, whole=True, default=None))


def from_dict(raw: Mapping, where: str) -> Calibration:
    """A Calibration from its JSON / TOML form; ConfigError names the first bad field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"calibration {where} must be a table of fields, got {type(raw).__name__}.")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"calibration {where} has schema_version {checks.shown(version)}; this llmdeploy reads "
                          f"{SCHEMA_VERSION}.", hint="Re-run 'llmdeploy calibrate'.")
    for key in ("device", "origin", "name", "source", "date"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise ConfigError(f"calibration {where} lacks the text field {key!r}.", hint="Re-run 'llmdeploy calibrate'.")
    if raw["origin"] not in ORIGINS:
        raise ConfigError(f"calibration {where} has origin {checks.shown(raw['origin'])}; valid: {', '.join(ORIGINS)}.")
    points = []
    for i, p in enumerate(raw.get("points") or ()):
        if not isinstance(p, Mapping):
            raise ConfigError(f"calibration {where} has a malformed point #{i + 1}: {checks.shown(p)}.")
        at = f"{where} point #{i + 1}"
        points.append(Point(
            _whole(p, "batch", at, maximum=checks.MAX_BATCH),
            _number(p, "prefill_s", at, maximum=checks.MAX_LATENCY_S),
            _number(p, "step_s", at, maximum=checks.MAX_LATENCY_S),
            None if p.get("peak_bytes") is None else _whole(p, "peak_bytes", at, positive=False,
                                                               maximum=checks.MAX_MEMORY_BYTES)))
    tokens = raw.get("input_tokens")
    return Calibration(
        device=raw["device"], origin=raw["origin"], name=raw["name"], source=raw["source"], date=raw["date"],
        bandwidth_gbs=_number(raw, "bandwidth_gbs", where, maximum=checks.MAX_BANDWIDTH_GBS),
        decode_flops=_number(raw, "decode_flops", where, maximum=checks.MAX_FLOPS),
        prefill_flops=_number(raw, "prefill_flops", where, maximum=checks.MAX_FLOPS),
        step_overhead_s_per_layer=_number(raw, "step_overhead_s_per_layer", where, positive=False, maximum=checks.MAX_LATENCY_S),
        prefill_overhead_s=_number(raw, "prefill_overhead_s", where, positive=False, maximum=checks.MAX_LATENCY_S, default=0.0),
        dtype=str(raw.get("dtype", "")), model=str(raw.get("model", "")), host=str(raw.get("host", "")),
        input_tokens=None if tokens is None else _whole(raw, "input_tokens", where, maximum=checks.MAX_TOKENS),
        points=tuple(points), note=str(raw.get("note", "")),
    )


# -- where calibrations live -------------------------------------------------------------------------


def user_dir() -> Path:
    """Where ``llmdeploy calibrate`` writes: next to the refreshed price cache."""
    return user_cache_dir().parent / "calibration"


def default_path(device: str) -> Path:
    return user_dir() / f"{device}.json"


def load_file(path: str | os.PathLike) -> Calibration:
    """A calibration file (``llmdeploy calibrate``'s JSON), read like every user file (llmdeploy.fileio): a missing
    one, a folder, a FIFO or device, text that is not UTF-8 or not JSON, or a bad field is one line."""
    path = Path(path).expanduser()
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"calibration file {str(path)!r} does not exist.",
                         hint="Run 'llmdeploy calibrate --model DIR' to make one, or drop --calibration.")
    if path.is_dir():
        raise UsageError(f"calibration file {str(path)!r} is a folder; pass the JSON file 'llmdeploy calibrate' wrote.")
    text = read_text_utf8(path, "calibration file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {path} is not valid JSON (line {exc.lineno}: {exc.msg}).",
                          hint="Re-run 'llmdeploy calibrate'.") from None
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int-parsing limit)
        raise ConfigError(f"calibration file {path} has a number too long to read: {str(exc).split(';')[0]}.") from None
    except RecursionError:
        raise ConfigError(f"calibration file {path} is nested too deeply to read.") from None
    cal = from_dict(raw, str(path))
    return replace(cal, source=cal.source or str(path))


def write(cal: Calibration, path: str | os.PathLike) -> Path:
    return write_atomic(path, json.dumps(cal.to_dict(), indent=2) + "\n")


@cache
def bundled() -> dict[str, Calibration]:
    """The calibrations shipped in ``data/calibrations.toml``, by device."""
    with BUNDLED_PATH.open("rb") as fh:
        raw = tomllib.load(fh)
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{BUNDLED_PATH} has schema_version {raw.get('schema_version')!r}; expected {SCHEMA_VERSION}.")
    out = {}
    for key, row in raw["calibrations"].items():
        cal = from_dict({**row, "date": str(row.get("date", ""))}, f"{BUNDLED_PATH.name}:{key}")
        if cal.device != key:
            raise ConfigError(f"{BUNDLED_PATH.name}: calibration {key!r} names device {cal.device!r}.")
        out[key] = cal
    return out


def user_calibrations() -> dict[str, Calibration]:
    folder = user_dir()
    if not folder.is_dir():
        return {}
    return {cal.device: cal for cal in (load_file(p) for p in sorted(folder.glob("*.json")))}


# -- choosing one per device ---------------------------------------------------------------------------


def roofline(gpu: Gpu, dtype: str, a: Assumptions, overhead: Calibration | None) -> Calibration:
    """Datasheet × efficiency, with the per-layer overhead of a published calibration (the fallback)."""
    peak = gpu.bf16_tflops if dtype == "bf16" and gpu.supports_bf16 else gpu.fp32_tflops if dtype == "fp32" else gpu.fp16_tflops
    flops = peak * 1e12 * a.compute_efficiency
    per_layer = overhead.step_overhead_s_per_layer if overhead else 0.0
    borrowed = f"per-layer overhead {per_layer * 1e3:.2f} ms from the {overhead.device} calibration" if overhead \
        else "no per-step overhead"
    return Calibration(
        device=gpu.name, origin="roofline",
        name=f"no measurement for {gpu.name}: datasheet {gpu.bandwidth_gbs:g} GB/s × {a.bandwidth_efficiency:.0%} and "
             f"{peak:g} TFLOP/s × {a.compute_efficiency:.0%}, {borrowed}",
        source=gpu.source.url, date=gpu.source.retrieved.isoformat(),
        bandwidth_gbs=gpu.bandwidth_gbs * a.bandwidth_efficiency, decode_flops=flops, prefill_flops=flops,
        step_overhead_s_per_layer=per_layer, prefill_overhead_s=0.0, dtype=dtype,
    )


@dataclass
class CalibrationSet:
    """The calibration for each device, and a record of the ones actually used (for the report)."""

    by_device: dict[str, Calibration]
    assumptions: Assumptions
    used: dict[str, Calibration] = field(default_factory=dict)

    def for_gpu(self, gpu: Gpu, dtype: str) -> Calibration:
        cal = self.by_device.get(gpu.name)
        if cal is None:
            cal = roofline(gpu, dtype, self.assumptions, self.by_device.get(self.assumptions.roofline_overhead_from))
        self.used.setdefault(gpu.name, cal)
        return cal

    def for_cpu(self) -> Calibration:
        try:
            cal = self.by_device[CPU]
        except KeyError:
            raise ConfigError("no CPU calibration is bundled or cached.", hint="Run 'llmdeploy calibrate --device cpu'.") from None
        self.used.setdefault(CPU, cal)
        return cal

    def report(self) -> list[dict]:
        return [self.used[k].summary() for k in sorted(self.used)]


def resolve(files: Iterable[str | os.PathLike] = (), a: Assumptions | None = None, *, cat: Catalog | None = None) -> CalibrationSet:
    """Bundled calibrations, overridden by the user cache, overridden by ``files`` (in order)."""
    a = a or load_assumptions()
    by_device = dict(bundled())
    by_device.update(user_calibrations())
    known = {CPU, *cat.gpus} if cat is not None else None
    for path in files:
        cal = load_file(path)
        if known is not None and cal.device not in known:
            raise ConfigError(f"calibration {path} is for device {cal.device!r}, which is not in the catalog; valid: "
                              f"{', '.join(sorted(known))}.", hint="Re-run 'llmdeploy calibrate' on a catalog GPU or the CPU.")
        by_device[cal.device] = cal
    return CalibrationSet(by_device, a)


def gpu_from_device(device_name: str, total_bytes: int, gpus: Iterable[str]) -> str:
    """The catalog GPU a CUDA device is (``torch.cuda.get_device_name`` + its total memory)."""
    gpus = set(gpus)
    upper = device_name.upper()
    for needle, base in _DEVICE_NAMES:
        if needle in upper:
            if base in ("A100", "V100"):
                big = total_bytes > (48 if base == "A100" else 24) * 1024**3
                name = {"A100": ("A100-80GB", "A100-40GB"), "V100": ("V100-32GB", "V100")}[base][0 if big else 1]
            else:
                name = base
            if name in gpus:
                return name
    raise UsageError(f"GPU {device_name!r} is not in the catalog; calibrations are kept per catalog GPU: "
                     f"{', '.join(sorted(gpus))}.", hint="Pass --out FILE and use the file with --calibration on a CPU "
                     "or a listed GPU, or add the GPU to gpus.toml.")


# -- fitting (used by calibrate; pure arithmetic, so it is tested without torch) ------------------------


def _nnls2(rows: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """min Σ ((c0·x0 + c1·x1 − y)/y)² over c0, c1 ≥ 0: relative errors, so small batches weigh as much as big ones."""
    def solve(cols: tuple[int, ...]) -> list[float]:
        # normal equations on the relative residuals
        xs = [[(r[0], r[1])[c] / r[2] for c in cols] for r in rows]
        ys = [1.0 for _ in rows]
        n = len(cols)
        ata = [[sum(x[i] * x[j] for x in xs) for j in range(n)] for i in range(n)]
        atb = [sum(x[i] * y for x, y in zip(xs, ys, strict=True)) for i in range(n)]
        if n == 1:
            return [atb[0] / ata[0][0] if ata[0][0] > 0 else 0.0]
        det = ata[0][0] * ata[1][1] - ata[0][1] * ata[1][0]
        if abs(det) < 1e-300:
            return [float("nan"), float("nan")]
        return [(atb[0] * ata[1][1] - atb[1] * ata[0][1]) / det, (ata[0][0] * atb[1] - ata[1][0] * atb[0]) / det]

    both = solve((0, 1))
    if all(math.isfinite(v) and v >= 0 for v in both):
        return both[0], both[1]

    def loss(c0: float, c1: float) -> float:
        return sum(((c0 * r[0] + c1 * r[1]) / r[2] - 1) ** 2 for r in rows)

    only0 = (max(0.0, solve((0,))[0]), 0.0)
    only1 = (0.0, max(0.0, solve((1,))[0]))
    return min(only0, only1, key=lambda c: loss(*c))


UNIDENTIFIED_FLOPS = checks.MAX_FLOPS  # fit()'s FLOP/s when the points put no weight on compute at all


def fill_unidentified(decode_flops: float, prefill_flops: float, gpu: Gpu, dtype: str,
                      a: Assumptions) -> tuple[float, float, str]:
    """(decode, prefill FLOP/s, a note): a term the points could not pin down takes the roofline's figure.

    On a GPU at the batches calibrate measures, every step is mostly fixed host-side cost, so the fit may put no
    weight on compute (UNIDENTIFIED_FLOPS, i.e. "infinitely fast"). Kept as is, that would make a large model's
    prefill free on that GPU; the datasheet × compute_efficiency (what roofline() uses) is the honest stand-in.
    """
    fallback = roofline(gpu, dtype, a, None).decode_flops
    filled = [name for name, value in (("decode", decode_flops), ("prefill", prefill_flops)) if value >= UNIDENTIFIED_FLOPS]
    note = "" if not filled else (
        f"{' and '.join(filled)} FLOP/s: not identifiable from these points (fixed per-layer cost dominates every "
        f"step), so the datasheet × {a.compute_efficiency:.0%} stands in ({fallback / 1e12:g} TFLOP/s, as the roofline).")
    return (fallback if decode_flops >= UNIDENTIFIED_FLOPS else decode_flops,
            fallback if prefill_flops >= UNIDENTIFIED_FLOPS else prefill_flops, note)


def fit(m, dtype: str, points: Sequence[Point], *, input_tokens: int, bandwidth_gbs: float,
        output_position: float) -> tuple[float, float, float, float]:
    """(decode FLOP/s, per-layer overhead s, prefill FLOP/s, prefill overhead s) that best explain ``points``.

    The bandwidth comes from a separate streaming measurement (decode bytes barely change with the batch,
    so the points alone cannot tell bandwidth from overhead). Per point: step = L·o + bytes/BW + flops/F
    is fitted for (o, 1/F); then prefill − first step − L_p·o = p0 + prefill_flops/Fp for (p0, 1/Fp).
    """
    from llmdeploy import sizing

    if len(points) < 2:
        raise UsageError("fitting a calibration needs at least two batch sizes.")
    bw = bandwidth_gbs * 1e9
    layers = m.n_layers
    rows = []
    for p in points:
        work = sizing.decode_step_work(m, dtype, p.batch, input_tokens, output_position)
        rows.append((float(layers), work.flops, max(p.step_s - work.bytes / bw, 1e-9)))
    overhead, inv_flops = _nnls2(rows)
    decode_flops = 1 / inv_flops if inv_flops > 0 else UNIDENTIFIED_FLOPS
    prefill_layers = m.n_encoder_layers if m.encoder_decoder else m.n_layers
    prows = []
    for p in points:
        first = sizing.decode_step_work(m, dtype, p.batch, input_tokens, 1)
        first_s = layers * overhead + first.bytes / bw + first.flops / decode_flops if m.encoder_decoder else 0.0
        flops = sizing.prefill_flops(m, p.batch, input_tokens)
        prows.append((1.0, flops, max(p.prefill_s - first_s - prefill_layers * overhead, 1e-9)))
    p0, inv_pflops = _nnls2(prows)
    prefill_flops = 1 / inv_pflops if inv_pflops > 0 else UNIDENTIFIED_FLOPS
    return decode_flops, overhead, prefill_flops, p0
