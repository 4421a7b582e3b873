"""Tag keys that mark what llmdeploy owns. Teardown and the reaper act only on these.

Pulumi components put them on every resource; the reaper refuses anything
without ``MANAGED_BY`` = ``MANAGED_BY_VALUE`` and skips anything with
``PROTECT`` set to a true value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

MANAGED_BY = "managed-by"
MANAGED_BY_VALUE = "llmdeploy"
STACK = "llmdeploy:stack"
MODE = "llmdeploy:mode"
PURPOSE = "llmdeploy:purpose"  # "inference" or "fine-tune"
OWNER = "owner"
COST_CENTER = "cost-center"
EXPIRES_AT = "expires-at"  # UTC, ISO 8601 with a trailing Z: 2026-11-22T18:00:00Z
PROTECT = "llmdeploy:protect"  # "true" keeps the reaper away

_TRUE = {"1", "true", "yes", "on"}


def base_tags(*, stack: str, mode: str, owner: str, cost_center: str, purpose: str = "inference") -> dict[str, str]:
    """The tags every resource of a stack carries."""
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        STACK: stack,
        MODE: str(mode),  # a plain string whether given a Mode or its value
        PURPOSE: purpose,
        OWNER: owner,
        COST_CENTER: cost_center,
    }


def tag_dict(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """AWS's tag list ``[{"Key": k, "Value": v}, ...]`` (EC2, SageMaker ListTags, CloudWatch) as ``{k: v}``;
    a tag without a Value (EC2 allows it) reads as ''."""
    return {t["Key"]: t.get("Value", "") for t in (tags or [])}


def format_expiry(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(value: str) -> dt.datetime | None:
    """The UTC expiry a tag value names, or None when it does not parse (never guess a date)."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def is_managed(tags: dict[str, str]) -> bool:
    return tags.get(MANAGED_BY) == MANAGED_BY_VALUE


def is_protected(tags: dict[str, str]) -> bool:
    return tags.get(PROTECT, "").strip().lower() in _TRUE
