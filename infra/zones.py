"""Which availability zones offer an instance type: one DescribeInstanceTypeOfferings query, shared by the
reserved fleet (infra/reserved_endpoint.py) and the fine-tune cluster (infra/finetune_cluster.py).

RunInstances in a zone that does not offer the type fails with "Unsupported"; both components place
their instances only in the zones this returns. Each caller words the error for its own input (a stack
setting or a command-line flag) when the list is empty.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def offered_zones(instance_type: str, *, opts: pulumi.InvokeOptions | None = None) -> list[str]:
    """The zones of the provider's region that offer ``instance_type`` (location type availability-zone), sorted;
    empty when none does."""
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[instance_type])], opts=opts)
    return sorted(set(offerings.locations))
