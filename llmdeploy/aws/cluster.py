"""EC2 reads and the last-resort cleanup behind ``llmdeploy finetune status`` and ``down``.

The cleanup terminates the stack's leftover instances and releases its leftover Elastic IPs, only
ever those tagged managed-by=llmdeploy with this stack.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from llmdeploy import catalog as _catalog
from llmdeploy import finetune as _ft
from llmdeploy import tags as _tags
from llmdeploy.aws import clients
from llmdeploy.enums import LIVE_STATES, NOT_TERMINATED_STATES


def stack_instances(stack: str, region: str, *, states: tuple[str, ...] = NOT_TERMINATED_STATES) -> list[dict]:
    """EC2 instances tagged with this stack (any managed-by value: the caller decides what to touch)."""
    ec2 = clients.client("ec2", region)
    filters = [{"Name": f"tag:{_tags.STACK}", "Values": [stack]}]
    filters.append({"Name": "instance-state-name", "Values": list(states)})
    try:
        pages = list(ec2.get_paginator("describe_instances").paginate(Filters=filters))
    except Exception as exc:
        raise clients.cloud_error(exc, f"listing EC2 instances of stack {stack!r} in {region}") from None
    out = [i for page in pages for r in page.get("Reservations", []) for i in r.get("Instances", [])]
    return sorted(out, key=lambda i: (str(i.get("LaunchTime")), i["InstanceId"]))


def cluster_status(stack: str, region: str, *, now: dt.datetime, cat: _catalog.Catalog | None) -> list[_ft.InstanceStatus]:
    """Every not-terminated instance of the stack that llmdeploy manages, with age, time left and cost."""
    rows = [i for i in stack_instances(stack, region) if _tags.is_managed(_tags.tag_dict(i.get("Tags")))]
    return [_ft.instance_status(i, now=now, cat=cat, region=region) for i in rows]


@dataclass
class Leftovers:
    """What ``finetune down`` found still running after the stack was destroyed."""

    terminated: list[str] = field(default_factory=list)
    untouched: list[tuple[str, str]] = field(default_factory=list)  # (instance id, why it was left alone)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (instance id, error)
    released: list[tuple[str, str]] = field(default_factory=list)  # (allocation id, public IP) of Elastic IPs
    release_failed: list[tuple[str, str]] = field(default_factory=list)  # (allocation id, error)

    @property
    def clean(self) -> bool:
        return not self.untouched and not self.failed and not self.release_failed


def terminate_leftovers(stack: str, region: str) -> Leftovers:
    """Terminate instances still alive with this stack's tag, but ONLY those also tagged managed-by=llmdeploy."""
    result = Leftovers()
    ec2 = clients.client("ec2", region)
    for inst in stack_instances(stack, region, states=LIVE_STATES):
        iid = inst["InstanceId"]
        tag_map = _tags.tag_dict(inst.get("Tags"))
        if not _tags.is_managed(tag_map) or tag_map.get(_tags.STACK) != stack:
            result.untouched.append((iid, f"tagged {_tags.STACK}={stack} but not {_tags.MANAGED_BY}={_tags.MANAGED_BY_VALUE}"))
            continue
        try:
            ec2.terminate_instances(InstanceIds=[iid])
        except Exception as exc:
            if clients.error_code(exc) == "InvalidInstanceID.NotFound":
                continue
            result.failed.append((iid, clients.describe_failure(exc)))
            continue
        result.terminated.append(iid)
    release_leftover_addresses(stack, region, result)
    return result


def release_leftover_addresses(stack: str, region: str, result: Leftovers | None = None) -> Leftovers:
    """Release Elastic IPs tagged with this stack AND managed-by=llmdeploy AND purpose fine-tune.

    A multi-interface node's Elastic IP is billed while allocated, associated or not; ``pulumi destroy``
    releases it, and this catches what a failed or impossible destroy left. Anything without all three
    tags is never touched (not even listed: it may be another tool's).
    """
    result = result if result is not None else Leftovers()
    ec2 = clients.client("ec2", region)
    filters = [
        {"Name": f"tag:{_tags.STACK}", "Values": [stack]},
        {"Name": f"tag:{_tags.MANAGED_BY}", "Values": [_tags.MANAGED_BY_VALUE]},
        {"Name": f"tag:{_tags.PURPOSE}", "Values": [_ft.PURPOSE]},
        {"Name": "domain", "Values": ["vpc"]},
    ]
    try:
        addresses = ec2.describe_addresses(Filters=filters).get("Addresses", [])
    except Exception as exc:
        raise clients.cloud_error(exc, f"listing Elastic IPs of stack {stack!r} in {region}") from None
    for addr in sorted(addresses, key=lambda a: a.get("AllocationId", "")):
        alloc = addr.get("AllocationId")
        tag_map = _tags.tag_dict(addr.get("Tags"))
        # The filters said so; check again before releasing anything (a wrong filter must not free others' IPs).
        if not alloc or not _tags.is_managed(tag_map) or tag_map.get(_tags.STACK) != stack or tag_map.get(_tags.PURPOSE) != _ft.PURPOSE:
            continue
        try:
            if not release_address(ec2, addr):
                continue  # gone meanwhile (a destroy or the reaper got there first)
        except Exception as exc:
            result.release_failed.append((alloc, clients.describe_failure(exc)))
            continue
        result.released.append((alloc, str(addr.get("PublicIp", "?"))))
    return result


def release_address(ec2, addr: dict, *, call: Callable[[Callable[[], object]], object] = lambda f: f()) -> bool:
    """Disassociate ``addr`` (a ``describe_addresses`` entry) if it is still associated, then release it.

    True when released, False when it was already gone; raises anything else. The caller has already
    decided the address (and whatever it is attached to) may go: this checks no tags. ``call`` runs each
    API call (the reaper passes its throttling backoff). Shared by ``finetune down`` and ``llmdeploy reap``.
    """
    alloc = addr["AllocationId"]
    try:
        if addr.get("AssociationId"):  # a node still shutting down: an associated address can't be released
            try:
                call(lambda: ec2.disassociate_address(AssociationId=addr["AssociationId"]))
            except Exception as exc:
                if clients.error_code(exc) != "InvalidAssociationID.NotFound":  # already disassociated: fine
                    raise
        call(lambda: ec2.release_address(AllocationId=alloc))
    except Exception as exc:
        if clients.error_code(exc) == "InvalidAllocationID.NotFound":
            return False
        raise
    return True
