"""One check for every number a user hands llmdeploy: finite, in range, shown short.

Flags go through the click types in ``llmdeploy.cli.options`` (which call :func:`number`);
library entry points (``plan.Traffic.validate``) call it too, so a value is refused with the
same line whichever way it arrives. The bounds below are sanity limits on what the estimates
mean, not AWS limits (those live in ``llmdeploy/data/catalog/limits.toml``): a value past one
is a typo or an attack, and past it the arithmetic would overflow or run for ever.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TypeVar

from llmdeploy.errors import UsageError

# Longest prompt or generation sized: 10 M tokens (the longest published context, Llama 4 Scout's).
MAX_TOKENS = 10_000_000
# Requests served together (estimate --batch) and fine-tune micro-batch.
MAX_BATCH = 1_000_000
# Traffic: 10^12 requests a day is ~11.6 M requests per second, far beyond any single deployment.
MAX_REQUESTS_PER_DAY = 1e12
MAX_RPS = 1e9
# One request may take at most a day (SageMaker async's own cap is 1 hour: limits.toml).
MAX_LATENCY_S = 86_400.0
# Speed calibrations (llmdeploy.calibration): a device streaming more than 1 PB/s or computing more than 10^18
# FLOP/s (calibrate's own "no measurable compute term" figure) is not a measurement; nor is a peak above 1 PiB.
MAX_BANDWIDTH_GBS = 1e6
MAX_FLOPS = 1e18
MAX_MEMORY_BYTES = 2**50
# Integers in a model's config.json (layers, heads, widths, vocabulary, positions): int32, as HF configs use.
MAX_CONFIG_INT = 2**31 - 1
# Digits shown of a huge value in a message (a 5000-digit integer is not echoed whole).
_SHOWN = 24


def shown(value: object) -> str:
    """``repr`` of a value for a one-line message, cut to a readable length."""
    text = repr(value) if not isinstance(value, str) else repr(value.strip())
    if len(text) <= _SHOWN + 2:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def parse_float(name: str, value: object) -> float:
    """A finite float from a flag, an environment variable or a file value."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a number, got {shown(value)}.")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]  # TypeError: below
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name} must be a number, got {shown(value)}.") from None
    if not math.isfinite(number):
        raise UsageError(f"{name} must be a finite number, got {shown(value)}.", hint="Give a plain number such as 5 or 0.2.")
    return number


def parse_int(name: str, value: object) -> int:
    """A whole number; long digit strings are refused by length before Python parses them."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a whole number, got {shown(value)}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise UsageError(f"{name} must be a whole number, got {shown(value)}.")
    text = str(value).strip().replace("_", "")
    digits = text.lstrip("+-")
    if digits.isdigit() and len(digits) > 18:
        raise UsageError(f"{name} must be a whole number of at most 18 digits, got {shown(value)}.")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {shown(value)}.") from None


_N = TypeVar("_N", int, float)


def number(name: str, value: _N, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> _N:
    """``value`` if it is finite and within the bounds, else UsageError naming ``name``, the value and the range.

    ``minimum`` / ``maximum`` are inclusive; ``above`` is an exclusive lower bound ("greater than 0").
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UsageError(f"{name} must be a number, got {shown(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}.", hint="Give a plain number such as 5 or 0.2.")
    got = _num(value) if isinstance(value, float) else shown(value)
    if above is not None and not value > above:
        raise UsageError(f"{name} must be greater than {_num(above)}, got {got}.")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be at least {_num(minimum)}, got {got}.")
    if maximum is not None and value > maximum:
        raise UsageError(f"{name} must be at most {_num(maximum)}, got {got}.")
    return value


def _num(x: float) -> str:
    """12 / 0.2 / 1e+12: whole numbers in full, others as %g."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def finite_json(payload: object) -> object:
    """``payload`` with every non-finite float replaced by None, so ``json.dumps(allow_nan=False)`` never fails.

    JSON has no NaN or Infinity (RFC 8259 section 6); Python's json module writes them unless told not to,
    and ``jq`` or a browser then refuse the whole document.
    """
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {k: finite_json(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_json(v) for v in payload]
    return payload
