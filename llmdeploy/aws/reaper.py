"""The reaper: find llmdeploy-managed resources past their ``expires-at`` and delete them.

Rules (the reason this module exists is that they hold every time):

- Only resources tagged ``managed-by=llmdeploy`` are ever looked at or touched.
- Anything tagged ``llmdeploy:protect=true`` is skipped and listed as skipped.
- A resource is expired when its ``expires-at`` tag (UTC) is at or before ``now``.
  No tag: never expires. A tag that does not parse: skipped and listed (never guess).
- Right before deleting, the tags are read again (check, then act): a resource
  protected or extended since the scan is left alone.
- Deleting something already gone counts as done (idempotent).
- Deletions run concurrently (``ThreadPoolExecutor``, one boto3 session per
  thread), a failure of one never stops the others, and throttling is retried
  by botocore and then by a bounded backoff here.

What is swept, per region: EC2 instances (not terminated), SageMaker endpoints
with their endpoint config and models (each deleted only when itself managed,
not protected and not explicitly live), and Pulumi stacks in a local file
backend whose config sets ``llmdeploy:expires-at`` (destroyed with the
Automation API, which needs the ``pulumi`` CLI).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from llmdeploy import catalog as _catalog
from llmdeploy import tags as _tags
from llmdeploy.aws import clients
from llmdeploy.errors import LlmdeployError

EC2 = "ec2-instance"
ENDPOINT = "sagemaker-endpoint"
STACK = "pulumi-stack"
KINDS = (EC2, ENDPOINT, STACK)

EXPIRED = "expired"
PROTECTED = "protected"
BAD_EXPIRY = "bad-expiry"

LIVE_EC2_STATES = ["pending", "running", "stopping", "stopped"]

#: Own retries on throttling after botocore's: attempts and backoff (seconds, full jitter, capped).
BACKOFF_ATTEMPTS = 4
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0

_NOT_FOUND_CODES = {
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "ResourceNotFound",
    "ResourceNotFoundException",
    "NotFoundException",
}


class StillProtected(Exception):
    """The re-check before deleting found the resource protected, extended or unmanaged."""


@dataclass
class Item:
    """One managed resource the reaper would delete (``status`` expired) or skips."""

    region: str
    kind: str
    id: str
    expires_at: dt.datetime | None
    hourly: float | None
    status: str
    detail: str = ""
    arn: str = ""
    project: str = ""  # pulumi stacks

    def as_dict(self) -> dict[str, object]:
        return {
            "region": self.region,
            "kind": self.kind,
            "id": self.id,
            "expires_at": _tags.format_expiry(self.expires_at) if self.expires_at else None,
            "usd_per_hour": self.hourly,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass
class Outcome:
    item: Item
    ok: bool
    message: str
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {**self.item.as_dict(), "ok": self.ok, "result": self.message, "deleted": self.deleted}


@dataclass
class ScanResult:
    items: list[Item]
    errors: list[str]  # "region kind: message" for listings that failed

    @property
    def expired(self) -> list[Item]:
        return [i for i in self.items if i.status == EXPIRED]

    @property
    def skipped(self) -> list[Item]:
        return [i for i in self.items if i.status != EXPIRED]

    @property
    def hourly_total(self) -> float:
        return sum(i.hourly or 0.0 for i in self.expired)


def classify(tag_map: dict[str, str], now: dt.datetime) -> tuple[str | None, dt.datetime | None, str]:
    """(status or None when the reaper ignores it, expiry, detail) for one resource's tags."""
    if not _tags.is_managed(tag_map):
        return None, None, "not managed by llmdeploy"
    raw = tag_map.get(_tags.EXPIRES_AT)
    if raw is None:
        return None, None, "no expires-at"
    expiry = _tags.parse_expiry(raw)
    if expiry is None:
        return BAD_EXPIRY, None, f"expires-at {raw!r} does not parse; left alone"
    if expiry > now:
        return None, expiry, "not expired"
    if _tags.is_protected(tag_map):
        return PROTECTED, expiry, f"tagged {_tags.PROTECT}"
    return EXPIRED, expiry, ""


def _tag_dict(tags: Iterable[dict] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in (tags or [])}


# -- scanning ------------------------------------------------------------------------------------


def _scan_ec2(region: str, now: dt.datetime, cat: _catalog.Catalog | None) -> list[Item]:
    ec2 = clients.client("ec2", region)
    items = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{_tags.MANAGED_BY}", "Values": [_tags.MANAGED_BY_VALUE]},
            {"Name": "instance-state-name", "Values": LIVE_EC2_STATES},
        ]
    )
    for page in pages:
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                status, expiry, detail = classify(_tag_dict(inst.get("Tags")), now)
                if status is None:
                    continue
                itype = inst.get("InstanceType", "")
                hourly = cat.ec2[(region, itype)].on_demand if cat is not None and (region, itype) in cat.ec2 else None
                if inst.get("State", {}).get("Name") == "stopped":
                    hourly, detail = 0.0, (detail + "; " if detail else "") + "stopped (storage only)"
                items.append(Item(region, EC2, inst["InstanceId"], expiry, hourly, status, detail or itype))
    return items


def _endpoint_hourly(sm, region: str, config_name: str, cat: _catalog.Catalog | None) -> float | None:
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    total = 0.0
    for variant in config.get("ProductionVariants", []):
        itype = variant.get("InstanceType")
        if not itype:  # serverless: billed per request, nothing per hour
            continue
        if cat is None or (region, itype) not in cat.hosting:
            return None
        total += cat.hosting[(region, itype)].hourly * int(variant.get("InitialInstanceCount", 1))
    return total


def _scan_endpoint(sm, region: str, endpoint: dict, now: dt.datetime, cat: _catalog.Catalog | None) -> Item | None:
    arn = endpoint["EndpointArn"]
    status, expiry, detail = classify(_tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=arn)).get("Tags")), now)
    if status is None:
        return None
    hourly = None
    if status == EXPIRED:
        try:
            desc = _with_backoff(lambda: sm.describe_endpoint(EndpointName=endpoint["EndpointName"]))
            hourly = _with_backoff(lambda: _endpoint_hourly(sm, region, desc["EndpointConfigName"], cat))
        except Exception as exc:  # price is informative only; the deletion re-reads everything
            if _is_gone(exc):
                return None
            detail = f"price unknown: {clients.describe_failure(exc)}"
    return Item(region, ENDPOINT, endpoint["EndpointName"], expiry, hourly, status, detail, arn=arn)


def _scan_endpoints(
    region: str, now: dt.datetime, cat: _catalog.Catalog | None, pool: ThreadPoolExecutor | None, errors: list[str]
) -> list[Item]:
    sm = clients.client("sagemaker", region)
    endpoints = [
        e
        for page in sm.get_paginator("list_endpoints").paginate()
        for e in page.get("Endpoints", [])
        if e.get("EndpointStatus") != "Deleting"  # already on its way out
    ]

    def one(endpoint: dict) -> Item | None:
        try:
            return _scan_endpoint(clients.client("sagemaker", region), region, endpoint, now, cat)
        except Exception as exc:  # one unreadable endpoint must not hide the others
            if not _is_gone(exc):
                errors.append(f"{region} {ENDPOINT} {endpoint.get('EndpointName')}: could not read tags: {clients.describe_failure(exc)}")
            return None

    if pool is None:
        found = [one(e) for e in endpoints]
    else:
        found = list(pool.map(one, endpoints))
    return [i for i in found if i is not None]


def _stack_files(state_dir: Path) -> list[tuple[str, str, Path]]:
    """(project, stack, checkpoint path) for every stack in a file backend."""
    root = state_dir / ".pulumi" / "stacks"
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).parts
        project = rel[0] if len(rel) == 2 else ""
        out.append((project, path.stem, path))
    return out


def scan_stacks(
    regions: Sequence[str] | None, now: dt.datetime, cat: _catalog.Catalog | None, state_dir: Path | None
) -> tuple[list[Item], list[str]]:
    """Expired stacks of a local file backend (config ``llmdeploy:expires-at``), with their EC2 cost."""
    if state_dir is None:
        return [], []
    items, errors = [], []
    for project, stack, path in _stack_files(state_dir):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            errors.append(f"pulumi stack {project}/{stack}: unreadable state {path}: {exc}")
            continue
        checkpoint = doc.get("checkpoint") or {}
        config = {k: v for k, v in (checkpoint.get("config") or {}).items() if isinstance(v, str)}
        resources = [
            r for r in ((checkpoint.get("latest") or {}).get("resources") or [])
            if not str(r.get("type", "")).startswith(("pulumi:pulumi:Stack", "pulumi:providers:"))
        ]
        if not resources:
            continue  # nothing left to destroy
        raw = next((config[k] for k in ("llmdeploy:expires-at", f"{project}:expires-at") if k in config), None)
        region = config.get("aws:region", "")
        if regions is not None and region and region not in regions:
            continue
        tag_map = {_tags.MANAGED_BY: _tags.MANAGED_BY_VALUE}
        if raw is not None:
            tag_map[_tags.EXPIRES_AT] = raw
        if str(config.get("llmdeploy:protect", "")).lower() in ("1", "true", "yes", "on"):
            tag_map[_tags.PROTECT] = "true"
        status, expiry, detail = classify(tag_map, now)
        if status is None:
            continue
        hourly = 0.0
        for res in resources:
            if res.get("type") == "aws:ec2/instance:Instance":
                itype = (res.get("outputs") or {}).get("instanceType", "")
                price = cat.ec2.get((region, itype)) if cat is not None else None
                hourly = hourly + price.on_demand if price is not None and hourly is not None else None
        items.append(Item(region or "-", STACK, stack, expiry, hourly, status, detail or f"{len(resources)} resources", project=project))
    return items, errors


def scan(
    regions: Sequence[str],
    *,
    now: dt.datetime,
    cat: _catalog.Catalog | None,
    concurrency: int = 16,
    state_dir: Path | None = None,
) -> ScanResult:
    """Every managed resource in ``regions`` that is expired (or skipped for a reason)."""
    items: list[Item] = []
    errors: list[str] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, ThreadPoolExecutor(max_workers=max(1, concurrency)) as inner:
        jobs = {}
        for region in regions:
            jobs[pool.submit(_with_backoff, lambda r=region: _scan_ec2(r, now, cat))] = (region, EC2)
            jobs[pool.submit(_with_backoff, lambda r=region: _scan_endpoints(r, now, cat, inner if concurrency > 1 else None, errors))] = (
                region,
                ENDPOINT,
            )
        for fut in as_completed(jobs):
            region, kind = jobs[fut]
            try:
                found = fut.result()
            except Exception as exc:
                with lock:
                    errors.append(f"{region} {kind}: listing failed: {clients.describe_failure(exc)}")
                continue
            with lock:
                items.extend(found)
    stack_items, stack_errors = scan_stacks(list(regions), now, cat, state_dir)
    items.extend(stack_items)
    errors.extend(stack_errors)
    order = {k: n for n, k in enumerate(KINDS)}
    items.sort(key=lambda i: (i.region, order.get(i.kind, 9), i.id))
    return ScanResult(items=items, errors=sorted(errors))


# -- deleting ------------------------------------------------------------------------------------


def _is_gone(exc: BaseException) -> bool:
    code = clients.error_code(exc)
    if code in _NOT_FOUND_CODES:
        return True
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return code == "ValidationException" and ("Could not find" in message or "does not exist" in message)


def _with_backoff(call: Callable[[], object], *, attempts: int | None = None, base: float | None = None):
    """Run ``call``; on throttling (after botocore's own retries) back off and retry, boundedly."""
    attempts = BACKOFF_ATTEMPTS if attempts is None else attempts
    base = BACKOFF_BASE_S if base is None else base
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not clients.is_throttling(exc) or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, min(BACKOFF_CAP_S, base * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def _recheck(tag_map: dict[str, str], now: dt.datetime) -> None:
    status, _, detail = classify(tag_map, now)
    if status != EXPIRED:
        raise StillProtected(detail if status else "no longer expired or no longer managed")


def _delete_ec2(item: Item, now: dt.datetime) -> list[str]:
    ec2 = clients.client("ec2", item.region)
    try:
        desc = _with_backoff(lambda: ec2.describe_instances(InstanceIds=[item.id]))
    except Exception as exc:
        if _is_gone(exc):
            return []
        raise
    instances = [i for r in desc.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances or instances[0].get("State", {}).get("Name") in ("terminated", "shutting-down"):
        return []
    _recheck(_tag_dict(instances[0].get("Tags")), now)
    try:
        _with_backoff(lambda: ec2.terminate_instances(InstanceIds=[item.id]))
    except Exception as exc:
        if _is_gone(exc):
            return []
        raise
    return [item.id]


def _delete_if_managed(sm, now: dt.datetime, arn: str, delete: Callable[[], object], label: str, notes: list[str]) -> bool:
    """Delete a SageMaker child (config, model) only when it is itself managed, unprotected and not live."""
    try:
        tag_map = _tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=arn)).get("Tags"))
    except Exception as exc:
        if _is_gone(exc):
            return False
        raise
    if not _tags.is_managed(tag_map) or _tags.is_protected(tag_map):
        notes.append(f"kept {label} ({'protected' if _tags.is_managed(tag_map) else 'not managed'})")
        return False
    expiry = _tags.parse_expiry(tag_map.get(_tags.EXPIRES_AT, "")) if _tags.EXPIRES_AT in tag_map else None
    if _tags.EXPIRES_AT in tag_map and (expiry is None or expiry > now):
        notes.append(f"kept {label} (its own expires-at is not past)")
        return False
    try:
        _with_backoff(delete)
    except Exception as exc:
        if _is_gone(exc):
            return False
        raise
    return True


def _delete_endpoint(item: Item, now: dt.datetime) -> tuple[list[str], list[str]]:
    sm = clients.client("sagemaker", item.region)
    deleted: list[str] = []
    notes: list[str] = []
    try:
        desc = _with_backoff(lambda: sm.describe_endpoint(EndpointName=item.id))
        tag_map = _tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=desc["EndpointArn"])).get("Tags"))
    except Exception as exc:
        if _is_gone(exc):
            return deleted, notes
        raise
    _recheck(tag_map, now)
    config_name = desc.get("EndpointConfigName")
    config = None
    if config_name:
        try:
            config = _with_backoff(lambda: sm.describe_endpoint_config(EndpointConfigName=config_name))
        except Exception as exc:
            if not _is_gone(exc):
                raise
    try:
        _with_backoff(lambda: sm.delete_endpoint(EndpointName=item.id))
        deleted.append(f"endpoint {item.id}")
    except Exception as exc:
        if not _is_gone(exc):
            raise
    if config is None:
        return deleted, notes
    if _delete_if_managed(
        sm, now, config["EndpointConfigArn"], lambda: sm.delete_endpoint_config(EndpointConfigName=config_name),
        f"endpoint config {config_name}", notes,
    ):
        deleted.append(f"endpoint config {config_name}")
    for model_name in sorted({v["ModelName"] for v in config.get("ProductionVariants", []) if v.get("ModelName")}):
        try:
            model = _with_backoff(lambda m=model_name: sm.describe_model(ModelName=m))
        except Exception as exc:
            if _is_gone(exc):
                continue
            raise
        if _delete_if_managed(
            sm, now, model["ModelArn"], lambda m=model_name: sm.delete_model(ModelName=m), f"model {model_name}", notes
        ):
            deleted.append(f"model {model_name}")
    return deleted, notes


def _delete_stack(item: Item) -> list[str]:
    from llmdeploy.infra import automation

    config = {"aws:region": item.region} if item.region and item.region != "-" else None
    stack = automation.select_stack(item.id, project_name=item.project or item.id, program=lambda: None, config=config)
    automation.destroy(stack)
    return [f"stack {item.project}/{item.id}"]


def delete_one(item: Item, now: dt.datetime) -> Outcome:
    """Delete one expired item; never raises (the outcome says what happened)."""
    try:
        if item.kind == EC2:
            deleted = _delete_ec2(item, now)
            return Outcome(item, True, "terminated" if deleted else "already gone", deleted)
        if item.kind == ENDPOINT:
            deleted, notes = _delete_endpoint(item, now)
            message = ("deleted" if deleted else "already gone") + (f" ({'; '.join(notes)})" if notes else "")
            return Outcome(item, True, message, deleted)
        if item.kind == STACK:
            return Outcome(item, True, "destroyed", _delete_stack(item))
        return Outcome(item, False, f"unknown kind {item.kind!r}")
    except StillProtected as exc:
        return Outcome(item, True, f"left alone: {exc}")
    except LlmdeployError as exc:
        return Outcome(item, False, str(exc))
    except Exception as exc:  # one failure never stops the sweep
        return Outcome(item, False, clients.describe_failure(exc))


def reap(
    items: Sequence[Item],
    *,
    now: dt.datetime,
    concurrency: int = 16,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Delete ``items`` (only those with status expired), ``concurrency`` at a time; stacks last, one by one."""
    targets = [i for i in items if i.status == EXPIRED]
    cloud = [i for i in targets if i.kind != STACK]
    stacks = [i for i in targets if i.kind == STACK]
    outcomes: list[Outcome] = []

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    if concurrency <= 1:
        for item in cloud:
            done(delete_one(item, now))
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, max(1, len(cloud)))) as pool:
            futures = [pool.submit(delete_one, item, now) for item in cloud]
            for fut in as_completed(futures):
                done(fut.result())
    for item in stacks:
        done(delete_one(item, now))
    return outcomes


def remaining_expired(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes whose item may still exist (failed deletions)."""
    return [o for o in outcomes if not o.ok]
