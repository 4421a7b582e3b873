"""AWS's own limits on the values a stack sends, read from botocore's service models in ONE place.

``llmdeploy/data/aws_limits.json`` holds, for each stack setting that ends up in an
AWS API request, the ranges and string patterns AWS's service model declares for
the member it becomes (``min`` / ``max`` / ``pattern`` / ``enum`` of the shape),
with the service, API version, operation and member path each came from and the
botocore version they were read from.

Why a generated file and not botocore at run time: ``llmdeploy plan`` runs on the
plain install (click + pyyaml, no botocore) and must stay instant, yet it checks
the stack it writes with the same limits preview and the Pulumi program use.
Nobody types these numbers: ``python -m llmdeploy.apilimits --write`` regenerates
the file from the installed botocore, and tests/unit/test_apilimits.py fails when
the file and botocore's models disagree (CI installs botocore with the infra extra).

Patterns in AWS's models are Java regular expressions (``\\p{L}`` letters,
``\\p{Z}`` separators, ``\\p{N}`` numbers, ``\\uXXXX`` code points). Python's ``re``
has no ``\\p{..}``; ``char_class_matcher`` turns the one form our settings meet, a
single character class with a quantifier, into a predicate over Unicode
categories. The test checks it against the ``regex`` package (which has ``\\p``)
on sample strings.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmdeploy.errors import ConfigError

DATA_FILE = Path(__file__).parent / "data" / "aws_limits.json"

#: What each limit is read from: key -> (service, operation, member path through the input shape).
#: ``[]`` steps into a list's members. Keys name the stack setting (or, for tags, what every tag value meets).
SPECS: dict[str, list[tuple[str, str, str]]] = {
    "asyncMaxConcurrentInvocations": [
        ("sagemaker", "CreateEndpointConfig", "AsyncInferenceConfig.ClientConfig.MaxConcurrentInvocationsPerInstance")],
    "serverlessMemoryMb": [("sagemaker", "CreateEndpointConfig", "ProductionVariants[].ServerlessConfig.MemorySizeInMB")],
    "serverlessMaxConcurrency": [("sagemaker", "CreateEndpointConfig", "ProductionVariants[].ServerlessConfig.MaxConcurrency")],
    "serverlessProvisionedConcurrency": [
        ("sagemaker", "CreateEndpointConfig", "ProductionVariants[].ServerlessConfig.ProvisionedConcurrency")],
    "instanceCount": [("sagemaker", "CreateEndpointConfig", "ProductionVariants[].InitialInstanceCount"),
                      ("autoscaling", "CreateAutoScalingGroup", "MaxSize")],
    "minInstances": [("autoscaling", "CreateAutoScalingGroup", "MinSize")],
    "servicePort": [("elbv2", "CreateTargetGroup", "Port")],
    "lmiImage": [("sagemaker", "CreateModel", "PrimaryContainer.Image")],
    # Every resource carries owner, cost-center and stack tags: a value must pass each tagging API we call.
    "tagValue": [
        ("iam", "CreateRole", "Tags[].Value"),
        ("elbv2", "CreateLoadBalancer", "Tags[].Value"),
        ("sagemaker", "CreateEndpoint", "Tags[].Value"),
        ("autoscaling", "CreateAutoScalingGroup", "Tags[].Value"),
        ("sns", "CreateTopic", "Tags[].Value"),
        ("kms", "CreateKey", "Tags[].TagValue"),
        ("ec2", "RunInstances", "TagSpecifications[].Tags[].Value"),
    ],
}


@dataclass(frozen=True)
class Limit:
    """What one API member accepts, and where that was read."""

    service: str
    api_version: str
    operation: str
    member: str
    shape: str
    type: str
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = None

    @property
    def where(self) -> str:
        return f"{self.service} {self.operation} {self.member}"


# -- reading the generated file (plan, preview and the program) -----------------------------------------------


@functools.cache
def load(path: str | None = None) -> dict[str, tuple[Limit, ...]]:
    data = json.loads(Path(path or DATA_FILE).read_text())
    return {key: tuple(Limit(**entry) for entry in entries) for key, entries in data["limits"].items()}


def limits(key: str) -> tuple[Limit, ...]:
    return load()[key]


def int_range(key: str) -> tuple[int, int | None]:
    """The tightest (min, max) every member ``key`` reaches accepts; None: no upper bound stated."""
    entries = limits(key)
    low = max(int(e.min) for e in entries if e.min is not None) if any(e.min is not None for e in entries) else 0
    highs = [int(e.max) for e in entries if e.max is not None]
    return low, (min(highs) if highs else None)


def int_max(key: str) -> int:
    """The largest value AWS accepts for ``key`` (its API models state one for every key this is asked about)."""
    high = int_range(key)[1]
    if high is None:
        raise ConfigError(f"llmdeploy/data/aws_limits.json states no maximum for {key!r}.",
                          hint="Regenerate it from botocore (see llmdeploy.apilimits).")
    return high


def out_of_range(key: str, value: int) -> str | None:
    """Why ``value`` is outside what AWS accepts for ``key`` (naming the member and the range), or None."""
    for e in limits(key):
        if (e.min is not None and value < e.min) or (e.max is not None and value > e.max):
            span = f"{e.min if e.min is not None else ''}..{e.max if e.max is not None else ''}"
            return f"AWS accepts {span} for {e.where}"
    return None


def string_problem(key: str, value: str) -> str | None:
    """Why ``value`` breaks a length or pattern of a member ``key`` reaches, or None."""
    for e in limits(key):
        if e.min is not None and len(value) < e.min:
            return f"it is shorter than the {e.min} characters {e.where} needs"
        if e.max is not None and len(value) > e.max:
            return f"it is longer than the {e.max} characters {e.where} takes"
        if e.pattern is not None:
            bad = first_mismatch(e.pattern, value)
            if bad is not None:
                return f"{e.where} does not allow {bad!r} (pattern {e.pattern})"
    return None


# -- Java character-class patterns, without the regex package --------------------------------------------------

def first_mismatch(pattern: str, value: str) -> str | None:
    """The first character of ``value`` the pattern rejects ('' when the whole value is refused, e.g. empty
    against ``+``), or None when it matches. Only single-class patterns (``^?(?[...][*+])?$?``) are supported;
    anything else raises ValueError so a new model shape is never silently skipped."""
    allowed, minimum = char_class_matcher(pattern)
    for ch in value:
        if not allowed(ch):
            return ch
    return "" if len(value) < minimum else None


@functools.cache
def char_class_matcher(pattern: str) -> tuple[Callable[[str], bool], int]:
    """(does one character belong to the class, least number of characters) for ``^?(?[CLASS][*+])?$?``."""
    body = pattern.removeprefix("^").removesuffix("$")
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    if not (body.startswith("[") and body[-1:] in ("*", "+") and body[:-1].endswith("]")):
        raise ValueError(f"unsupported pattern {pattern!r}: only one character class with * or +")
    minimum = 1 if body.endswith("+") else 0
    inner = body[1:-2]
    if inner.startswith("^"):
        raise ValueError(f"unsupported pattern {pattern!r}: negated class")
    cats: set[str] = set()  # Unicode general categories by first letter (\p{L}, \p{Z}, \p{N})
    nonspace = False  # \S: anything but Java's ASCII whitespace
    points: list[int | str] = []  # code points, and "-" between the ends of a range
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            nxt = inner[i + 1]
            if nxt == "p":
                end = inner.index("}", i)
                cat = inner[i + 3:end]
                if cat not in ("L", "Z", "N"):
                    raise ValueError(f"unsupported category \\p{{{cat}}} in {pattern!r}")
                cats.add(cat)
                i = end + 1
            elif nxt == "u":
                points.append(int(inner[i + 2:i + 6], 16))
                i += 6
            elif nxt == "S":
                nonspace = True
                i += 2
            else:
                points.append(ord({"r": "\r", "n": "\n", "t": "\t"}.get(nxt, nxt)))
                i += 2
        elif c == "-" and points and i + 1 < len(inner):
            points.append("-")
            i += 1
        else:
            points.append(ord(c))
            i += 1
    chars: set[int] = set()
    ranges: list[tuple[int, int]] = []
    j = 0
    while j < len(points):
        lo = points[j]
        # Java matches UTF-16: the surrogate-pair range \uD800\uDC00-\uDBFF\uDFFF is every supplementary code point.
        if isinstance(lo, int) and 0xD800 <= lo <= 0xDBFF and points[j + 2:j + 3] == ["-"]:
            ranges.append((0x10000, 0x10FFFF))
            j += 5
        elif points[j + 1:j + 2] == ["-"] and j + 2 < len(points):
            ranges.append((int(lo), int(points[j + 2])))
            j += 3
        else:
            chars.add(ord("-") if lo == "-" else int(lo))
            j += 1

    def allowed(ch: str) -> bool:
        cp = ord(ch)
        return (cp in chars or unicodedata.category(ch)[0] in cats or any(lo <= cp <= hi for lo, hi in ranges)
                or (nonspace and ch not in " \t\n\x0b\f\r"))

    return allowed, minimum


# -- generating the file from botocore (developers and CI) ------------------------------------------------------


def from_botocore() -> dict:
    """The file's content, read from the installed botocore's service models."""
    import botocore
    import botocore.session

    session = botocore.session.get_session()
    out: dict[str, list[dict]] = {}
    for key, specs in SPECS.items():
        entries = []
        for service, operation, path in specs:
            model = session.get_service_model(service)
            shape = model.operation_model(operation).input_shape
            for step in path.split("."):
                name, into_list = (step[:-2], True) if step.endswith("[]") else (step, False)
                shape = shape.members[name]
                if into_list:
                    shape = shape.member
            entry = {"service": service, "api_version": model.api_version, "operation": operation, "member": path,
                     "shape": shape.name, "type": shape.type_name}
            entry.update({k: shape.metadata[k] for k in ("min", "max", "pattern") if k in shape.metadata})
            entries.append(entry)
        out[key] = entries
    return {
        "_comment": "Generated by `python -m llmdeploy.apilimits --write` from botocore's service models; do not edit.",
        "botocore": botocore.__version__,
        "limits": out,
    }


def render(content: dict) -> str:
    return json.dumps(content, indent=1, sort_keys=False, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    text = render(from_botocore())
    if argv == ["--write"]:
        from llmdeploy.fileio import write_atomic

        write_atomic(DATA_FILE, text)
        print(f"wrote {DATA_FILE}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
