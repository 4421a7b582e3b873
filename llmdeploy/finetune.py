"""Fine-tune clusters: the pure part (durations, expiry, cost, how many instances).

Nothing here talks to AWS or Pulumi; ``llmdeploy.aws`` reads EC2 and
``llmdeploy.infra.finetune_cluster`` declares the resources. The CLI
(``llmdeploy finetune``) only parses flags, calls these and renders.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmdeploy import catalog as _catalog
from llmdeploy import tags as _tags
from llmdeploy.enums import is_billed
from llmdeploy.errors import UnknownChoiceError, UsageError

DEFAULT_INSTANCE_TYPE = "p4d.24xlarge"
DEFAULT_STACK = "finetune"
PROJECT_NAME = "llmdeploy-finetune"
PURPOSE = "fine-tune"
#: Longest TTL accepted: a cluster meant to live longer than this is not a fine-tune cluster.
MAX_TTL = dt.timedelta(days=30)
#: GPU utilisation (percent) below which a GPU counts as idle.
DEFAULT_IDLE_THRESHOLD = 5.0

_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?")
DURATION_FORMS = "a whole number of days, hours and/or minutes written together, e.g. 6h, 90m, 1d2h, 2h30m"


def parse_duration(value: str, *, option: str = "--ttl", maximum: dt.timedelta | None = MAX_TTL) -> dt.timedelta:
    """``"6h"`` / ``"90m"`` / ``"1d2h"`` / ``"2h30m"`` as a timedelta above zero.

    Raises UsageError naming the value and the accepted forms for anything else
    (``"6 hours"``, ``"0h"``, ``"-1h"``, ``"6"``, ``""``).
    """
    text = (value or "").strip().lower()
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise UsageError(f"{option} {value!r} is not a duration. Use {DURATION_FORMS}.")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    try:
        total = dt.timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0))
    except OverflowError:  # more days than a timedelta holds (999999999)
        raise UsageError(f"{option} {value[:24]!r} is too long to be a duration. Use {DURATION_FORMS}.") from None
    if total <= dt.timedelta(0):
        raise UsageError(f"{option} {value!r} is zero; it must be above zero. Use {DURATION_FORMS}.")
    if maximum is not None and total > maximum:
        raise UsageError(
            f"{option} {value!r} is longer than the {format_duration(maximum)} limit.",
            hint="Use a shorter duration; extend later by bringing the cluster up again.",
        )
    return total


def format_duration(delta: dt.timedelta) -> str:
    """``1d2h``, ``5h30m``, ``45m``; negative deltas get a leading ``-``; under a minute is ``0m``."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    minutes = abs(seconds) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    out = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not (days or hours) else "")
    return sign + out


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_now(value: str | None) -> dt.datetime:
    """``--now`` for tests and what-ifs: an ISO 8601 time with a zone (or ``Z``), else the clock."""
    if value is None:
        return utcnow()
    parsed = _tags.parse_expiry(value)
    if parsed is None:
        raise UsageError(f"--now {value!r} is not an ISO 8601 time with a zone. Use e.g. 2026-11-22T18:00:00Z.")
    return parsed


def expiry(now: dt.datetime, ttl: dt.timedelta) -> dt.datetime:
    """When a cluster brought up at ``now`` with ``ttl`` must be gone (UTC, whole seconds)."""
    return (now + ttl).astimezone(dt.UTC).replace(microsecond=0)


def check_instance_count(count: int) -> int:
    if count is None or int(count) < 1:
        raise UsageError(f"--instances {count!r} is not valid: a cluster needs at least 1 instance.")
    return int(count)


#: The widest SSH source each IP version accepts: a /16 is 65,536 IPv4 addresses (a large office or VPN pool);
#: anything wider is a slice of the internet (0.0.0.0/1 is half of it). IPv6: a /48 is one site's allocation.
SSH_MIN_PREFIX = {4: 16, 6: 48}


def check_ssh_cidr(cidr: str, *, option: str = "--ssh-cidr") -> str:
    """An SSH source CIDR no wider than /16 (IPv4) or /48 (IPv6); UsageError saying why otherwise."""
    try:
        network = ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        raise UsageError(f"{option} {cidr!r} is not a CIDR. Use your address or office range, e.g. 203.0.113.7/32.") from None
    fix = "Use your own address (e.g. 203.0.113.7/32), or leave --ssh-cidr out and use SSM Session Manager."
    if network.prefixlen == 0:
        raise UsageError(f"{option} {cidr!r} opens SSH to the whole internet; refused.", hint=fix)
    widest = SSH_MIN_PREFIX[network.version]
    if network.prefixlen < widest:
        raise UsageError(
            f"{option} {cidr!r} opens SSH to {network.num_addresses:,} addresses, a slice of the internet rather than "
            f"an office or VPN range; refused (the widest accepted is /{widest}).", hint=fix)
    return str(network)


@dataclass(frozen=True)
class AmiFilter:
    """A DescribeImages query: name pattern, owner, architecture, and where the pattern was checked."""

    name: str
    owner: str
    architecture: str
    source_url: str
    retrieved: dt.date


def dlami(path: str | None = None) -> AmiFilter:
    """The fine-tune nodes' Deep Learning AMI filter, from llmdeploy/data/amis.toml."""
    import tomllib
    from pathlib import Path

    raw = tomllib.loads(Path(path or Path(__file__).parent / "data" / "amis.toml").read_text())["finetune"]
    return AmiFilter(raw["name"], raw["owner"], raw["architecture"], raw["source_url"], raw["retrieved"])


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_checkpoint_uri(uri: str, *, option: str = "--checkpoint-uri") -> str:
    """``s3://bucket/prefix/`` with a prefix (nodes get read/write there, never on a whole bucket); UsageError."""
    text = str(uri).strip()
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if not text.startswith("s3://") or not _BUCKET.match(bucket) or not prefix.strip("/"):
        raise UsageError(
            f"{option} {uri!r} is not an s3://BUCKET/PREFIX/ URI with a prefix.",
            hint="Give a prefix of your artifact bucket, e.g. s3://my-llmdeploy-bucket/checkpoints/llama-ft/ "
                 "(nodes may read and write only under it).")
    return f"s3://{bucket}/{prefix.rstrip('/')}/"


def check_gpu_instance(cat: _catalog.Catalog, region: str, instance_type: str) -> _catalog.Instance:
    """The catalog row of a GPU instance type priced in ``region``; UsageError otherwise."""
    _catalog.check_region(cat, region)
    gpu_types = sorted({t for (r, t) in cat.ec2 if r == region and t in cat.instances and cat.instances[t].gpu})
    if instance_type not in cat.instances or (region, instance_type) not in cat.ec2:
        raise UnknownChoiceError(
            f"GPU instance type in {region}", instance_type, gpu_types, fix="Pass --instance-type with one of these, or another --region."
        )
    inst = cat.instances[instance_type]
    if not inst.gpu or inst.gpu_count < 1:
        raise UnknownChoiceError(
            f"GPU instance type in {region} ({instance_type} has no GPU)",
            instance_type,
            gpu_types,
            fix="Fine-tuning needs GPUs: pass --instance-type with one of these.",
        )
    return inst


def instances_for_gpus(gpus: int, gpus_per_instance: int) -> int:
    """Instances that together hold ``gpus`` GPUs (at least one)."""
    return max(1, math.ceil(gpus / gpus_per_instance))


def instances_for_model(model: str, inst: _catalog.Instance, *, precision: str = "bf16-mixed") -> tuple[int, int]:
    """(instances, GPUs) needed to fine-tune ``model`` on ``inst``, from ``llmdeploy.sizing``."""
    from llmdeploy.models import load_model_config
    from llmdeploy.sizing import finetune_memory, gpus_for_finetune

    config = load_model_config(model)
    ft = finetune_memory(config, precision=precision)
    gpus = gpus_for_finetune(ft, inst.require_gpu())
    return instances_for_gpus(gpus, inst.gpu_count), gpus


@dataclass(frozen=True)
class ClusterPlan:
    """What ``finetune up`` is about to create, and what it costs."""

    stack: str
    region: str
    instance_type: str
    instances: int
    gpus_per_instance: int
    hourly_each: float
    expires_at: dt.datetime
    idle_minutes: int | None
    efa: bool
    network_cards: int = 1

    @property
    def interfaces_per_node(self) -> int:
        """Network interfaces each node launches with: one EFA per card with EFA, else the primary alone."""
        return self.network_cards if self.efa else 1

    @property
    def hourly_total(self) -> float:
        return self.hourly_each * self.instances

    def max_cost(self, now: dt.datetime) -> float:
        """Cost if the cluster lives until its expiry."""
        return accrued_cost(now, self.expires_at, self.hourly_total)


def plan_cluster(
    cat: _catalog.Catalog,
    *,
    stack: str,
    region: str,
    instance_type: str,
    instances: int | None,
    ttl: str,
    idle: str | None,
    model: str | None,
    now: dt.datetime,
) -> ClusterPlan:
    """Validate every flag of ``finetune up`` (UsageError on the first bad one) and price the result."""
    ttl_delta = parse_duration(ttl, option="--ttl")
    idle_minutes = None
    if idle is not None:
        idle_minutes = max(1, int(parse_duration(idle, option="--idle").total_seconds() // 60))
        if idle_minutes * 60 >= ttl_delta.total_seconds():
            raise UsageError(f"--idle {idle} is not shorter than --ttl {ttl}: the idle limit would never end the cluster.",
                             hint="Pass a shorter --idle, or leave it out.")
    inst = check_gpu_instance(cat, region, instance_type)
    if instances is None:
        if model is None:
            raise UsageError("say how big the cluster is: pass --instances N, or --model NAME to size it from the model.")
        instances, _ = instances_for_model(model, inst)
    check_instance_count(instances)
    price = _catalog.ec2_price(cat, region, instance_type).on_demand
    return ClusterPlan(
        stack=stack,
        region=region,
        instance_type=instance_type,
        instances=instances,
        gpus_per_instance=inst.gpu_count,
        hourly_each=price,
        expires_at=expiry(now, ttl_delta),
        idle_minutes=idle_minutes,
        efa=inst.efa,
        network_cards=inst.network_cards,
    )


def accrued_cost(start: dt.datetime, end: dt.datetime, hourly: float) -> float:
    """USD for running from ``start`` to ``end`` at ``hourly`` (per-second billing; never negative)."""
    seconds = max(0.0, (end - start).total_seconds())
    return hourly * seconds / 3600.0


def cluster_tags(*, stack: str, owner: str, cost_center: str, expires_at: dt.datetime) -> dict[str, str]:
    """Tags on every resource of a fine-tune cluster."""
    out = _tags.base_tags(stack=stack, mode=PURPOSE, owner=owner, cost_center=cost_center, purpose=PURPOSE)
    out[_tags.EXPIRES_AT] = _tags.format_expiry(expires_at)
    return out


@dataclass(frozen=True)
class InstanceStatus:
    """One cluster instance as ``finetune status`` shows it."""

    instance_id: str
    instance_type: str
    state: str
    launched: dt.datetime
    expires_at: dt.datetime | None
    hourly: float | None
    age: dt.timedelta
    time_left: dt.timedelta | None
    accrued_usd: float | None

    @property
    def billed(self) -> bool:
        return is_billed(self.state)

    def as_dict(self) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "instance_type": self.instance_type,
            "state": self.state,
            "launched": _tags.format_expiry(self.launched),
            "expires_at": _tags.format_expiry(self.expires_at) if self.expires_at else None,
            "age_s": int(self.age.total_seconds()),
            "time_left_s": int(self.time_left.total_seconds()) if self.time_left is not None else None,
            "usd_per_hour": self.hourly,
            "accrued_usd": round(self.accrued_usd, 4) if self.accrued_usd is not None else None,
        }


def instance_status(
    raw: Mapping[str, Any], *, now: dt.datetime, cat: _catalog.Catalog | None, region: str
) -> InstanceStatus:
    """An ``InstanceStatus`` from one EC2 ``DescribeInstances`` instance dict.

    Accrued cost is running time since ``LaunchTime`` times the catalog's
    on-demand price (None when the catalog has no price for the type). Stopped
    and terminated instances accrue nothing after they stop, but EC2 does not
    say when that was: for them the accrued cost is None (unknown).
    """
    tag_map = _tags.tag_dict(raw.get("Tags"))
    launched = raw["LaunchTime"]
    if isinstance(launched, str):
        launched = dt.datetime.fromisoformat(launched.replace("Z", "+00:00"))
    launched = launched.astimezone(dt.UTC)
    itype = str(raw.get("InstanceType", "?"))
    state = str((raw.get("State") or {}).get("Name", "?"))
    expires = _tags.parse_expiry(tag_map.get(_tags.EXPIRES_AT, ""))
    hourly = None
    if cat is not None and (region, itype) in cat.ec2:
        hourly = cat.ec2[(region, itype)].on_demand
    age = max(dt.timedelta(0), now - launched)
    accrued = accrued_cost(launched, now, hourly) if hourly is not None and is_billed(state) else None
    return InstanceStatus(
        instance_id=str(raw.get("InstanceId")),
        instance_type=itype,
        state=state,
        launched=launched,
        expires_at=expires,
        hourly=hourly,
        age=age,
        time_left=(expires - now) if expires else None,
        accrued_usd=accrued,
    )


def total_accrued(rows: Iterable[InstanceStatus]) -> float:
    return sum(r.accrued_usd or 0.0 for r in rows)
