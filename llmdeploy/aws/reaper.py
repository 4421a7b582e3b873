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

What is swept, per region: EC2 instances (not terminated), Elastic IPs (billed per
hour while allocated, attached or not: on-instance autodown terminates a node
but leaves its address; one attached to an instance is released only when that
instance is itself managed and terminated or expired, else kept and listed as
``in-use``), SageMaker endpoints
with their endpoint config and models (each deleted only when itself managed,
not protected, not explicitly live and used by nothing else), SageMaker
endpoint configs and models that nothing uses any more (orphans: a deploy that
failed halfway, an endpoint deleted by hand; expired themselves), and Pulumi
stacks in a local file backend whose config sets ``llmdeploy:expires-at``
(destroyed with the Automation API, which needs the ``pulumi`` CLI).

"Used" means: an endpoint config is used by every endpoint (not ``Deleting``)
that runs it, a model by every endpoint config that names it. Something in use
is never deleted, expired or not (listed as ``in-use``). Deletion goes in
phases, each freeing what the next may delete: instances and endpoints, then
Elastic IPs (an expired node's address goes after the node), then orphan configs, then orphan models, then stacks;
each SageMaker phase re-reads
what uses what right before it starts.
"""

from __future__ import annotations

import datetime as dt
import functools
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
from llmdeploy.aws import cluster as _cluster
from llmdeploy.enums import LIVE_STATES, InstanceState, is_going
from llmdeploy.errors import LlmdeployError

EC2 = "ec2-instance"
EIP = "elastic-ip"
ENDPOINT = "sagemaker-endpoint"
CONFIG = "sagemaker-endpoint-config"
MODEL = "sagemaker-model"
STACK = "pulumi-stack"
KINDS = (EC2, EIP, ENDPOINT, CONFIG, MODEL, STACK)

EXPIRED = "expired"
PROTECTED = "protected"
BAD_EXPIRY = "bad-expiry"
IN_USE = "in-use"


#: Own retries on throttling after botocore's: attempts and backoff (seconds, full jitter, capped).
BACKOFF_ATTEMPTS = 4
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0

_NOT_FOUND_CODES = {
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "InvalidAllocationID.NotFound",
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


# -- scanning ------------------------------------------------------------------------------------


def _scan_ec2(region: str, now: dt.datetime, cat: _catalog.Catalog | None) -> list[Item]:
    ec2 = clients.client("ec2", region)
    items = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{_tags.MANAGED_BY}", "Values": [_tags.MANAGED_BY_VALUE]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
    )
    for page in pages:
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                status, expiry, detail = classify(_tags.tag_dict(inst.get("Tags")), now)
                if status is None:
                    continue
                itype = inst.get("InstanceType", "")
                hourly = cat.ec2[(region, itype)].on_demand if cat is not None and (region, itype) in cat.ec2 else None
                if inst.get("State", {}).get("Name") == InstanceState.STOPPED:
                    hourly, detail = 0.0, (detail + "; " if detail else "") + "stopped (storage only)"
                items.append(Item(region, EC2, inst["InstanceId"], expiry, hourly, status, detail or itype))
    return items


def _instances_by_id(ec2, ids: Iterable[str]) -> dict[str, dict]:
    """The instances (any state) among ``ids`` that EC2 still describes; missing ones are simply absent."""
    ids = sorted(set(ids))
    out: dict[str, dict] = {}
    for start in range(0, len(ids), 100):
        chunk = ids[start:start + 100]
        desc = _with_backoff(functools.partial(ec2.describe_instances, Filters=[{"Name": "instance-id", "Values": chunk}]))
        for reservation in desc.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                out[inst["InstanceId"]] = inst
    return out


def _attachment_block(addr: dict, instance: dict | None, now: dt.datetime) -> str | None:
    """Why an associated Elastic IP must stay where it is; None when it may be disassociated.

    Only from an instance that llmdeploy manages and that is terminated (or on its way) or expired
    (not protected): anything else may be someone's working address.
    """
    iid = addr.get("InstanceId")
    if not iid:
        return f"associated with {addr.get('NetworkInterfaceId') or 'something'}, not with an llmdeploy instance"
    if instance is None:
        return f"attached to instance {iid}, which EC2 does not describe (cannot check it is llmdeploy's)"
    tag_map = _tags.tag_dict(instance.get("Tags"))
    if not _tags.is_managed(tag_map):
        return f"attached to instance {iid}, which llmdeploy does not manage"
    if _going(instance):
        return None
    status, _, detail = classify(tag_map, now)
    if status == EXPIRED:
        return None
    return f"attached to instance {iid}, which is {instance.get('State', {}).get('Name', '?')} and not expired ({detail})"


def _ipv4_hourly(region: str, cat: _catalog.Catalog | None) -> float | None:
    """The catalog's public IPv4 price for ``region``; None (shown as "?") when the catalog does not state one."""
    other = cat.other.get(region) if cat is not None else None
    return other.public_ipv4_hourly if other is not None else None


def _scan_eips(region: str, now: dt.datetime, cat: _catalog.Catalog | None) -> list[Item]:
    """Managed Elastic IPs past expiry; one still attached to something that is not an expired managed instance is in use."""
    ec2 = clients.client("ec2", region)
    desc = ec2.describe_addresses(Filters=[{"Name": f"tag:{_tags.MANAGED_BY}", "Values": [_tags.MANAGED_BY_VALUE]}])
    found = []
    for addr in desc.get("Addresses", []):
        status, expiry, detail = classify(_tags.tag_dict(addr.get("Tags")), now)
        if status is None or not addr.get("AllocationId"):
            continue
        found.append((addr, status, expiry, detail))
    attached = {a["InstanceId"] for a, status, _, _ in found if status == EXPIRED and a.get("AssociationId") and a.get("InstanceId")}
    instances = _instances_by_id(ec2, attached) if attached else {}
    hourly = _ipv4_hourly(region, cat)
    items = []
    for addr, status, expiry, detail in found:
        ip = addr.get("PublicIp", "?")
        if status == EXPIRED and addr.get("AssociationId"):
            block = _attachment_block(addr, instances.get(addr.get("InstanceId", "")), now)
            if block:
                status, detail = IN_USE, f"{block}; kept"
            else:
                detail = f"attached to expired instance {addr['InstanceId']}: disassociated, then released"
        items.append(Item(region, EIP, addr["AllocationId"], expiry, hourly, status, f"{ip}: {detail}" if detail else ip))
    return items


@dataclass
class Usage:
    """Who uses what in one SageMaker region, read in one go (describe answers by name)."""

    endpoints: dict[str, dict]
    configs: dict[str, dict]

    def config_users(self, config: str) -> set[str]:
        """Endpoints (not on their way out) that run ``config``, now or as a pending deployment."""
        return {
            name for name, d in self.endpoints.items()
            if d.get("EndpointStatus") != "Deleting"
            and config in (d.get("EndpointConfigName"), (d.get("PendingDeploymentSummary") or {}).get("EndpointConfigName"))
        }

    def model_users(self, model: str) -> set[str]:
        return {name for name, d in self.configs.items() if model in _models_of(d)}


def _models_of(config: dict) -> set[str]:
    variants = [*config.get("ProductionVariants", []), *config.get("ShadowProductionVariants", [])]
    return {v["ModelName"] for v in variants if v.get("ModelName")}


def _describe(region: str, operation: str, **kwargs) -> dict | None:
    """One SageMaker describe on this thread's client, retried on throttling; None when the thing is gone."""
    sm = clients.client("sagemaker", region)
    try:
        return _with_backoff(lambda: getattr(sm, operation)(**kwargs))
    except Exception as exc:
        if _is_gone(exc):
            return None
        raise


def read_usage(region: str, pmap: Callable = map) -> Usage:
    """Every endpoint and endpoint config of ``region``, described (``pmap`` runs the describes)."""
    sm = clients.client("sagemaker", region)
    endpoints = [e["EndpointName"] for p in sm.get_paginator("list_endpoints").paginate() for e in p.get("Endpoints", [])]
    configs = [
        c["EndpointConfigName"]
        for p in sm.get_paginator("list_endpoint_configs").paginate()
        for c in p.get("EndpointConfigs", [])
    ]
    ep_descs = pmap(lambda n: _describe(region, "describe_endpoint", EndpointName=n), endpoints)
    config_descs = pmap(lambda n: _describe(region, "describe_endpoint_config", EndpointConfigName=n), configs)
    return Usage(
        endpoints={n: d for n, d in zip(endpoints, ep_descs, strict=True) if d is not None},
        configs={n: d for n, d in zip(configs, config_descs, strict=True) if d is not None},
    )


def _endpoint_hourly(region: str, config: dict | None, cat: _catalog.Catalog | None) -> float | None:
    if config is None:
        return None
    total = 0.0
    for variant in config.get("ProductionVariants", []):
        itype = variant.get("InstanceType")
        if not itype:  # serverless: billed per request, nothing per hour
            continue
        if cat is None or (region, itype) not in cat.hosting:
            return None
        total += cat.hosting[(region, itype)].hourly * int(variant.get("InitialInstanceCount", 1))
    return total


def _read_tags(region: str, arn: str) -> dict[str, str]:
    sm = clients.client("sagemaker", region)
    return _tags.tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=arn)).get("Tags"))


def _scan_endpoint(region: str, desc: dict, usage: Usage, now: dt.datetime, cat: _catalog.Catalog | None) -> Item | None:
    status, expiry, detail = classify(_read_tags(region, desc["EndpointArn"]), now)
    if status is None:
        return None
    hourly = _endpoint_hourly(region, usage.configs.get(desc.get("EndpointConfigName", "")), cat) if status == EXPIRED else None
    return Item(region, ENDPOINT, desc["EndpointName"], expiry, hourly, status, detail, arn=desc["EndpointArn"])


def _scan_unused(region: str, kind: str, name: str, arn: str, users: set[str], now: dt.datetime, note: str) -> Item | None:
    """An endpoint config or model that no endpoint takes with it: expired orphan, skipped, or in use (kept)."""
    status, expiry, detail = classify(_read_tags(region, arn), now)
    if status is None or (users and status != EXPIRED):
        return None
    if users:
        what = "endpoint" if kind == CONFIG else "endpoint config"
        return Item(region, kind, name, expiry, 0.0, IN_USE, f"in use by {what} {', '.join(sorted(users))}; kept", arn=arn)
    return Item(region, kind, name, expiry, 0.0, status, detail or note, arn=arn)


def _goes_with(users: set[str], parents: set[str]) -> bool:
    """Deleted along with its one parent (an endpoint takes its config, a config its models)."""
    return len(users) == 1 and users <= parents


def _scan_sagemaker(
    region: str, now: dt.datetime, cat: _catalog.Catalog | None, pool: ThreadPoolExecutor | None, errors: list[str]
) -> list[Item]:
    """Endpoints, then the endpoint configs and models that this sweep leaves unused (orphans) or keeps in use."""
    pmap = map if pool is None else pool.map
    usage = read_usage(region, pmap)

    def guarded(kind: str, name: str, scan_one: Callable[[], Item | None]) -> Item | None:
        try:
            return scan_one()
        except Exception as exc:  # one unreadable resource must not hide the others
            if not _is_gone(exc):
                errors.append(f"{region} {kind} {name}: could not read tags: {clients.describe_failure(exc)}")
            return None

    live = [d for d in usage.endpoints.values() if d.get("EndpointStatus") != "Deleting"]  # Deleting: already on its way out
    endpoints = [i for i in pmap(lambda d: guarded(ENDPOINT, d["EndpointName"],
                                                   lambda: _scan_endpoint(region, d, usage, now, cat)), live) if i]
    going = {i.id for i in endpoints if i.status == EXPIRED}
    with_endpoint = {c for c in usage.configs if _goes_with(usage.config_users(c), going)}

    def config(name: str) -> Item | None:
        users = usage.config_users(name)
        arn = usage.configs[name]["EndpointConfigArn"]
        note = f"used only by endpoint {', '.join(sorted(users))}, which goes too" if users else "no endpoint uses it"
        return _scan_unused(region, CONFIG, name, arn, users - going, now, note)

    configs = [i for i in pmap(lambda n: guarded(CONFIG, n, lambda: config(n)), sorted(set(usage.configs) - with_endpoint)) if i]
    doomed = with_endpoint | {i.id for i in configs if i.status == EXPIRED}
    sm = clients.client("sagemaker", region)
    listed = [m for p in sm.get_paginator("list_models").paginate() for m in p.get("Models", [])]
    unowned = [m for m in listed if not _goes_with(usage.model_users(m["ModelName"]), with_endpoint)]

    def model(m: dict) -> Item | None:
        users = usage.model_users(m["ModelName"])
        note = f"used only by endpoint config {', '.join(sorted(users))}, which goes too" if users else "no endpoint config uses it"
        return _scan_unused(region, MODEL, m["ModelName"], m["ModelArn"], users - doomed, now, note)

    models = [i for i in pmap(lambda m: guarded(MODEL, m["ModelName"], lambda: model(m)), unowned) if i]
    return endpoints + configs + models


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
        hourly: float | None = 0.0  # None once an instance's price is unknown
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
            jobs[pool.submit(_with_backoff, functools.partial(_scan_ec2, region, now, cat))] = (region, EC2)
            jobs[pool.submit(_with_backoff, functools.partial(_scan_eips, region, now, cat))] = (region, EIP)
            scan_endpoints = functools.partial(_scan_sagemaker, region, now, cat, inner if concurrency > 1 else None, errors)
            jobs[pool.submit(_with_backoff, scan_endpoints)] = (region, ENDPOINT)
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


def _going(instance: dict) -> bool:
    """Terminated or shutting down (DescribeInstances' State.Name)."""
    return is_going(instance.get("State", {}).get("Name", ""))


def _delete_ec2(item: Item, now: dt.datetime) -> list[str]:
    ec2 = clients.client("ec2", item.region)
    try:
        desc = _with_backoff(lambda: ec2.describe_instances(InstanceIds=[item.id]))
    except Exception as exc:
        if _is_gone(exc):
            return []
        raise
    instances = [i for r in desc.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances or _going(instances[0]):
        return []
    _recheck(_tags.tag_dict(instances[0].get("Tags")), now)
    try:
        _with_backoff(lambda: ec2.terminate_instances(InstanceIds=[item.id]))
    except Exception as exc:
        if _is_gone(exc):
            return []
        raise
    return [item.id]


def _delete_eip(item: Item, now: dt.datetime) -> list[str]:
    """Re-read the address and its tags; disassociate it only from an expired or terminated managed instance; release."""
    ec2 = clients.client("ec2", item.region)
    try:
        addresses = _with_backoff(lambda: ec2.describe_addresses(AllocationIds=[item.id])).get("Addresses", [])
    except Exception as exc:
        if _is_gone(exc):
            return []
        raise
    if not addresses:
        return []
    addr = addresses[0]
    _recheck(_tags.tag_dict(addr.get("Tags")), now)
    if addr.get("AssociationId"):
        iid = addr.get("InstanceId")
        block = _attachment_block(addr, _instances_by_id(ec2, [iid]).get(iid) if iid else None, now)
        if block:
            raise StillProtected(block)
    if not _cluster.release_address(ec2, addr, call=_with_backoff):
        return []
    return [f"elastic IP {item.id} ({addr.get('PublicIp', '?')})"]


def _delete_if_managed(sm, now: dt.datetime, arn: str, delete: Callable[[], object], label: str, notes: list[str], *,
                       orphan: bool = False) -> str:
    """Delete a SageMaker config or model only when it is itself managed, unprotected and not live.

    "deleted", "gone" or "kept". An endpoint's child may lack expires-at (it goes with the
    endpoint); an orphan must be expired itself (else StillProtected).
    """
    try:
        tag_map = _tags.tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=arn)).get("Tags"))
    except Exception as exc:
        if _is_gone(exc):
            return "gone"
        raise
    if orphan:
        _recheck(tag_map, now)
    elif not _tags.is_managed(tag_map) or _tags.is_protected(tag_map):
        notes.append(f"kept {label} ({'protected' if _tags.is_managed(tag_map) else 'not managed'})")
        return "kept"
    expiry = _tags.parse_expiry(tag_map.get(_tags.EXPIRES_AT, "")) if _tags.EXPIRES_AT in tag_map else None
    if not orphan and _tags.EXPIRES_AT in tag_map and (expiry is None or expiry > now):
        notes.append(f"kept {label} (its own expires-at is not past)")
        return "kept"
    try:
        _with_backoff(delete)
    except Exception as exc:
        if _is_gone(exc):
            return "gone"
        raise
    return "deleted"


def _delete_unused(
    sm, now: dt.datetime, usage: Usage, kind: str, name: str, arn: str, notes: list[str], *, parent: str = "", orphan: bool = False
) -> str:
    """Delete an endpoint config or model that nothing but ``parent`` uses (see _delete_if_managed for the rest)."""
    users = (usage.config_users(name) if kind == CONFIG else usage.model_users(name)) - {parent}
    label = f"{'endpoint config' if kind == CONFIG else 'model'} {name}"
    if users:
        reason = f"in use by {'endpoint' if kind == CONFIG else 'endpoint config'} {', '.join(sorted(users))}"
        if orphan:
            raise StillProtected(reason)
        notes.append(f"kept {label} ({reason})")
        return "kept"
    def delete() -> None:
        if kind == CONFIG:
            sm.delete_endpoint_config(EndpointConfigName=name)
        else:
            sm.delete_model(ModelName=name)

    return _delete_if_managed(sm, now, arn, delete, label, notes, orphan=orphan)


def _delete_endpoint(item: Item, now: dt.datetime, usage: Usage) -> tuple[list[str], list[str]]:
    sm = clients.client("sagemaker", item.region)
    deleted: list[str] = []
    notes: list[str] = []
    try:
        desc = _with_backoff(lambda: sm.describe_endpoint(EndpointName=item.id))
        tag_map = _tags.tag_dict(_with_backoff(lambda: sm.list_tags(ResourceArn=desc["EndpointArn"])).get("Tags"))
    except Exception as exc:
        if _is_gone(exc):
            return deleted, notes
        raise
    _recheck(tag_map, now)
    config_name = desc.get("EndpointConfigName")
    config = _describe(item.region, "describe_endpoint_config", EndpointConfigName=config_name) if config_name else None
    try:
        _with_backoff(lambda: sm.delete_endpoint(EndpointName=item.id))
        deleted.append(f"endpoint {item.id}")
    except Exception as exc:
        if not _is_gone(exc):
            raise
    if config is None:
        return deleted, notes
    result = _delete_unused(sm, now, usage, CONFIG, config_name, config["EndpointConfigArn"], notes, parent=item.id)
    if result == "kept":
        return deleted, notes  # its models stay in use by it
    if result == "deleted":
        deleted.append(f"endpoint config {config_name}")
    for model_name in sorted(_models_of(config)):
        model = _describe(item.region, "describe_model", ModelName=model_name)
        if model is not None and _delete_unused(
            sm, now, usage, MODEL, model_name, model["ModelArn"], notes, parent=config_name
        ) == "deleted":
            deleted.append(f"model {model_name}")
    return deleted, notes


def _delete_orphan(item: Item, now: dt.datetime, usage: Usage) -> list[str]:
    """An endpoint config or model nothing uses: re-read its tags and users, then delete it."""
    sm = clients.client("sagemaker", item.region)
    if _delete_unused(sm, now, usage, item.kind, item.id, item.arn, [], orphan=True) != "deleted":
        return []
    return [f"{'endpoint config' if item.kind == CONFIG else 'model'} {item.id}"]


def _delete_stack(item: Item) -> list[str]:
    from llmdeploy.infra import automation

    config = {"aws:region": item.region} if item.region and item.region != "-" else None
    stack = automation.select_stack(item.id, project_name=item.project or item.id, program=lambda: None, config=config)
    automation.destroy(stack)
    return [f"stack {item.project}/{item.id}"]


def _usage_for(item: Item, usage: Usage | Exception | None) -> Usage:
    """``usage`` as read for ``item``'s region (read now when None); a failed earlier read is raised here."""
    read = read_usage(item.region) if usage is None else usage
    if isinstance(read, Exception):
        raise read
    return read


def delete_one(item: Item, now: dt.datetime, usage: Usage | Exception | None = None) -> Outcome:
    """Delete one expired item; never raises (the outcome says what happened).

    ``usage``: what uses what in the item's region, read right before (read here when None).
    """
    try:
        if item.kind == EC2:
            deleted = _delete_ec2(item, now)
            return Outcome(item, True, "terminated" if deleted else "already gone", deleted)
        if item.kind == EIP:
            deleted = _delete_eip(item, now)
            return Outcome(item, True, "released" if deleted else "already gone", deleted)
        if item.kind == ENDPOINT:
            deleted, notes = _delete_endpoint(item, now, _usage_for(item, usage))
            message = ("deleted" if deleted else "already gone") + (f" ({'; '.join(notes)})" if notes else "")
            return Outcome(item, True, message, deleted)
        if item.kind in (CONFIG, MODEL):
            deleted = _delete_orphan(item, now, _usage_for(item, usage))
            return Outcome(item, True, "deleted" if deleted else "already gone", deleted)
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
    """Delete ``items`` (only those with status expired), ``concurrency`` at a time; stacks last, one by one.

    Phases, each freeing what the next may delete: instances and endpoints, Elastic IPs, configs, models.
    Each phase re-reads what uses what in its SageMaker regions right before it deletes.
    """
    targets = [i for i in items if i.status == EXPIRED]
    outcomes: list[Outcome] = []

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pmap = map if concurrency <= 1 else pool.map
        for kinds in ((EC2, ENDPOINT), (EIP,), (CONFIG,), (MODEL,)):
            batch = [i for i in targets if i.kind in kinds]
            usage = {r: _usage_or_error(r, pmap) for r in sorted({i.region for i in batch if i.kind in (ENDPOINT, CONFIG, MODEL)})}
            if concurrency <= 1:
                for item in batch:
                    done(delete_one(item, now, usage.get(item.region)))
                continue
            futures = [pool.submit(delete_one, item, now, usage.get(item.region)) for item in batch]
            for fut in as_completed(futures):
                done(fut.result())
    for item in targets:
        if item.kind == STACK:
            done(delete_one(item, now))
    return outcomes


def _usage_or_error(region: str, pmap: Callable) -> Usage | Exception:
    try:
        return _with_backoff(lambda: read_usage(region, pmap))
    except Exception as exc:  # the region's SageMaker deletions report it; the rest go on
        return exc


def remaining_expired(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes whose item may still exist (failed deletions)."""
    return [o for o in outcomes if not o.ok]
