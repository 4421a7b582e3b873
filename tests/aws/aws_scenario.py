"""Build llmdeploy-looking resources on the moto server with plain boto3 (Pulumi cannot run here)."""

from __future__ import annotations

NOW = "2026-11-22T12:00:00Z"
PAST = "2026-11-22T10:00:00Z"
FUTURE = "2026-11-22T20:00:00Z"
ROLE = "arn:aws:iam::123456789012:role/llmdeploy-test"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"


def managed(expires: str | None = PAST, *, stack: str = "dev", protect: bool = False, **extra: str) -> dict[str, str]:
    tags = {"managed-by": "llmdeploy", "llmdeploy:stack": stack}
    if expires is not None:
        tags["expires-at"] = expires
    if protect:
        tags["llmdeploy:protect"] = "true"
    tags.update(extra)
    return tags


def _tag_list(tags: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in (tags or {}).items()]


def instance(ec2, tags: dict[str, str] | None, itype: str = "m5.large", count: int = 1) -> list[str]:
    kwargs = {"ImageId": "ami-12c6146b", "InstanceType": itype, "MinCount": count, "MaxCount": count}
    if tags:
        kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": _tag_list(tags)}]
    return [i["InstanceId"] for i in ec2.run_instances(**kwargs)["Instances"]]


def endpoint(sm, name: str, tags: dict[str, str] | None, *, itype: str = "ml.m5.large", count: int = 1,
             config_tags: dict[str, str] | None = "same", model_tags: dict[str, str] | None = "same",
             model: str | None = None) -> str:
    """Model ``<name>-model`` (or the existing ``model``), config ``<name>-config`` and the endpoint."""
    config_tags = tags if config_tags == "same" else config_tags
    model_tags = tags if model_tags == "same" else model_tags
    leftovers(sm, name, config_tags, model_tags=model_tags, itype=itype, count=count, model=model)
    return sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=_tag_list(tags))["EndpointArn"]


def leftovers(sm, name: str, tags: dict[str, str] | None, *, model_tags: dict[str, str] | None = "same",
              config: bool = True, itype: str = "ml.m5.large", count: int = 1, model: str | None = None) -> None:
    """What a deploy that stopped before its endpoint leaves: ``<name>-model`` and (``config``) ``<name>-config``."""
    if model is None:
        model = f"{name}-model"
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE},
                        Tags=_tag_list(tags if model_tags == "same" else model_tags))
    if config:
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-config",
            ProductionVariants=[{"VariantName": "main", "ModelName": model, "InstanceType": itype, "InitialInstanceCount": count}],
            Tags=_tag_list(tags),
        )


def live_instances(ec2) -> set[str]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )
    return {i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]}


def endpoints(sm) -> set[str]:
    return {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}


def configs(sm) -> set[str]:
    return {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}


def models(sm) -> set[str]:
    return {m["ModelName"] for m in sm.list_models()["Models"]}


def address(ec2, tags: dict[str, str] | None, *, instance: str | None = None) -> str:
    """A VPC Elastic IP with ``tags`` (tags on the address itself), associated with ``instance`` if given."""
    kwargs = {"Domain": "vpc"}
    if tags:
        kwargs["TagSpecifications"] = [{"ResourceType": "elastic-ip", "Tags": _tag_list(tags)}]
    alloc = ec2.allocate_address(**kwargs)["AllocationId"]
    if instance is not None:
        ec2.associate_address(AllocationId=alloc, InstanceId=instance)
    return alloc


def addresses(ec2) -> dict[str, str | None]:
    """Allocated Elastic IPs: allocation id -> the instance it is associated with (None: unattached)."""
    return {a["AllocationId"]: a.get("InstanceId") or None for a in ec2.describe_addresses()["Addresses"]}
