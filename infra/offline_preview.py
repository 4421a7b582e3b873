"""What a stack would create and cost, from the Pulumi program itself, offline.

``llmdeploy preview --offline`` runs ``infra/__main__.py`` in this process under
the Pulumi SDK's mock runtime (``pulumi.runtime.set_mocks``): no Pulumi CLI, no
AWS. ``RecordingMocks`` records every resource with its type and inputs and
answers the data sources (AMI, default VPC, subnets, caller identity) with
plausible fakes. Each billable resource is then priced from its *own inputs*
with the same ``llmdeploy.costs`` line items ``llmdeploy plan`` sums, so the
total agrees with the plan when the program builds what the plan chose:

- EC2 Auto Scaling group: desired capacity x its launch template's instance type (stack term);
- Application Load Balancer: hours;
- SageMaker endpoint configuration: each instance variant's type x initial count, always on
  (realtime) or ``usageActiveHoursPerDay`` (async); serverless variants: memory size x usage;
- KMS key: one key-month.
Everything else (S3, SNS, IAM, alarms, autoscaling) is free or usage-billed below a cent
and, as in the plan, not counted.

The mock runtime is process-global: one run at a time (``run_program`` holds a lock).
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from llmdeploy import costs
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.stackconfig import NAMESPACE, StackConfig

FAKE_ACCOUNT = "123456789012"
_LOCK = threading.Lock()


@dataclass
class RecordedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    id: str
    outputs: dict[str, Any] = field(default_factory=dict)


def _make_mocks_class():
    import pulumi

    class RecordingMocks(pulumi.runtime.Mocks):
        """Records resources; fills the outputs a real provider would compute (name, arn, id...)."""

        def __init__(self, region: str = "us-east-1"):
            self.region = region
            self.resources: list[RecordedResource] = []
            self.calls: list[tuple[str, dict]] = []
            self.outputs: dict[str, Any] = {}

        def new_resource(self, args):
            inputs = dict(args.inputs)
            service = args.typ.split(":")[1].split("/")[0] if ":" in args.typ else "x"
            rid = f"{args.name}-id"
            outputs = dict(inputs)
            outputs.setdefault("name", inputs.get("name") or args.name)
            outputs.setdefault("arn", f"arn:aws:{service}:{self.region}:{FAKE_ACCOUNT}:{args.name}")
            outputs["id"] = rid
            if args.typ == "aws:s3/bucket:Bucket":
                outputs.update(bucket=args.name, arn=f"arn:aws:s3:::{args.name}")
            elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
                outputs.update(dnsName=f"{args.name}-1234567890.{self.region}.elb.amazonaws.com")
            elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
                outputs.update(latestVersion=1)
            elif args.typ == "aws:kms/key:Key":
                outputs.update(keyId=rid)
            elif args.typ == "aws:iam/role:Role":
                outputs.update(arn=f"arn:aws:iam::{FAKE_ACCOUNT}:role/{args.name}")
            self.resources.append(RecordedResource(args.typ, args.name, inputs, bool(args.custom), rid, outputs))
            return rid, outputs

        def call(self, args):
            self.calls.append((args.token, dict(args.args)))
            token = args.token
            if token == "aws:ec2/getAmi:getAmi":
                return {"id": "ami-0123456789abcdef0", "imageId": "ami-0123456789abcdef0", "rootDeviceName": "/dev/xvda",
                        "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023) 20261115",
                        "architecture": "x86_64", "ownerId": "898082745236"}
            if token == "aws:ec2/getVpc:getVpc":
                return {"id": "vpc-0123456789abcdef0", "cidrBlock": "172.31.0.0/16", "default": True}
            if token == "aws:ec2/getSubnets:getSubnets":
                return {"id": self.region, "ids": ["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"]}
            if token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"id": FAKE_ACCOUNT, "accountId": FAKE_ACCOUNT, "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:user/preview",
                        "userId": "AIDAPREVIEW"}
            if token == "aws:index/getRegion:getRegion":
                return {"id": self.region, "name": self.region, "region": self.region}
            if token == "aws:index/getPartition:getPartition":
                return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"}
            if token == "aws:iam/getPolicyDocument:getPolicyDocument":
                return {"id": "doc", "json": json.dumps({"Version": "2012-10-17", "Statement": []})}
            return {}

    return RecordingMocks


def make_mocks(region: str = "us-east-1"):
    return _make_mocks_class()(region)


def config_values(config: StackConfig) -> dict[str, str]:
    """The stack config as Pulumi hands it to a program: ``{"llmdeploy:key": "value"}`` strings."""
    values = {key: str(value) for key, value in config.to_mapping().items()}
    values["aws:region"] = config.region
    return values


def run_program(config: StackConfig | dict[str, str], *, stack: str = "preview", artifact_dir: str | None = None,
                mocks=None):
    """Run infra/__main__.py's ``main`` under fresh mocks with ``config``; returns the mocks (``.resources``).

    ``config`` is a StackConfig or the raw ``{"llmdeploy:key": "value"}`` map (raw maps
    let tests feed invalid settings). Exceptions from the program propagate.
    """
    import pulumi
    from pulumi.runtime import mocks as mocks_mod
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    values = config_values(config) if isinstance(config, StackConfig) else dict(config)
    region = values.get(f"{NAMESPACE}:region") or values.get("aws:region") or "us-east-1"
    from pulumi.runtime import config as runtime_config

    with _LOCK:
        previous_config = dict(runtime_config.CONFIG.get())
        mocks = mocks or make_mocks(region)
        # A fresh monitor and settings per run: nothing leaks from the previous program.
        mocks_mod.set_mocks(mocks, project="llmdeploy", stack=stack, preview=False)
        pulumi.runtime.set_all_config(values)
        from llmdeploy.infra.__main__ import main

        def program() -> None:
            outputs = main(artifact_dir=artifact_dir or tmp)
            # Resolve the stack outputs too (as pulumi.runtime.test does), for tests and the preview.
            mocks.outputs = _sync_await(pulumi.Output.all(**outputs).future())

        try:
            with tempfile.TemporaryDirectory(prefix="llmdeploy-preview-") as tmp:
                _sync_await(run_pulumi_func(program))
        finally:
            pulumi.runtime.set_all_config(previous_config)  # leave the process' config as it was
    return mocks


# -- pricing -----------------------------------------------------------------------------------------


@dataclass
class PricedResource:
    type: str
    name: str
    settings: dict[str, Any]
    items: list[costs.LineItem]

    @property
    def monthly_usd(self) -> float:
        return costs.total(self.items)

    def to_json(self) -> dict:
        return {"type": self.type, "name": self.name, "settings": self.settings, "monthly_usd": round(self.monthly_usd, 2),
                "line_items": [{"kind": i.kind, "description": i.description, "quantity": i.quantity, "unit": i.unit,
                                "unit_usd": i.unit_usd, "monthly_usd": round(i.monthly_usd, 2)} for i in self.items]}


# The settings worth showing per type (wire names as the mocks see them).
_KEY_SETTINGS = {
    "aws:autoscaling/group:Group": ("desiredCapacity", "minSize", "maxSize"),
    "aws:ec2/launchTemplate:LaunchTemplate": ("instanceType", "imageId", "metadataOptions"),
    "aws:lb/loadBalancer:LoadBalancer": ("loadBalancerType", "internal"),
    "aws:lb/targetGroup:TargetGroup": ("port", "healthCheck"),
    "aws:lb/listener:Listener": ("port", "protocol"),
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": ("productionVariants", "asyncInferenceConfig"),
    "aws:sagemaker/model:Model": ("primaryContainer",),
    "aws:appautoscaling/target:Target": ("minCapacity", "maxCapacity", "resourceId"),
    "aws:appautoscaling/policy:Policy": ("policyType",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold", "evaluationPeriods"),
    "aws:kms/key:Key": ("enableKeyRotation",),
    "aws:s3/bucketObjectv2:BucketObjectv2": ("key",),
    "aws:ec2/securityGroup:SecurityGroup": ("ingress",),
}
_SHOW_VARIANT = ("instanceType", "initialInstanceCount", "serverlessConfig")


def _plain(value: Any) -> Any:
    """Numbers come back from the mock runtime as floats: show 2, not 2.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def short_type(token: str) -> str:
    """``aws:sagemaker/endpointConfiguration:EndpointConfiguration`` -> ``sagemaker:EndpointConfiguration``."""
    parts = token.split(":")
    return f"{parts[1].split('/')[0]}:{parts[2]}" if len(parts) == 3 else token


def _settings(res: RecordedResource) -> dict[str, Any]:
    out = {}
    for key in _KEY_SETTINGS.get(res.type, ()):
        if key not in res.inputs:
            continue
        value = res.inputs[key]
        if key == "productionVariants":
            value = [{k: v[k] for k in _SHOW_VARIANT if k in v} for v in value]
        elif key == "primaryContainer":
            value = {"image": value.get("image"), "modelDataUrl": value.get("modelDataUrl")}
        elif key == "asyncInferenceConfig":
            value = {"maxConcurrentInvocationsPerInstance":
                     value.get("clientConfig", {}).get("maxConcurrentInvocationsPerInstance")}
        elif key == "ingress":
            value = [{k: r.get(k) for k in ("fromPort", "toPort", "cidrBlocks", "securityGroups") if r.get(k)} for r in value]
        out[key] = _plain(value)
    return out


def price_resources(resources: list[RecordedResource], config: StackConfig, catalog: Catalog) -> list[PricedResource]:
    """Price every custom resource from its own inputs (0 for the free ones)."""
    by_id = {r.id: r for r in resources}
    region = config.region
    priced = []
    for res in resources:
        if not res.custom:
            continue  # components and the stack are not AWS resources
        items: list[costs.LineItem] = []
        if res.type == "aws:autoscaling/group:Group":
            template = by_id[res.inputs["launchTemplate"]["id"]]
            count = int(res.inputs["desiredCapacity"])
            items.append(costs.ec2_instances(catalog, region, template.inputs["instanceType"], count, config.term))
            for mapping in template.inputs.get("blockDeviceMappings", []):  # each instance's volumes, as the template sizes them
                size = (mapping.get("ebs") or {}).get("volumeSize")
                if size:
                    items.append(costs.root_volumes(catalog, region, count, int(size)))
        elif res.type == "aws:lb/loadBalancer:LoadBalancer":
            # One public IPv4 address per Availability Zone of the region's default VPC (the program's subnets).
            items += [costs.load_balancer(catalog, region), costs.load_balancer_ipv4(catalog, region)]
        elif res.type == "aws:kms/key:Key":
            items.append(costs.kms_key(catalog, region))
        elif res.type == "aws:sagemaker/endpointConfiguration:EndpointConfiguration":
            is_async = bool(res.inputs.get("asyncInferenceConfig"))
            for variant in res.inputs.get("productionVariants", []):
                if variant.get("serverlessConfig"):
                    items += costs.serverless(catalog, region, int(variant["serverlessConfig"]["memorySizeInMb"]),
                                              config.usage_requests_per_month, config.usage_ms_per_request,
                                              config.usage_bytes_per_request)
                else:
                    hours = config.usage_active_hours_per_day if is_async else 24
                    items.append(costs.sagemaker_instances(catalog, region, variant["instanceType"],
                                                           int(variant["initialInstanceCount"]), hours))
        priced.append(PricedResource(res.type, res.name, _settings(res), items))
    # Registration order depends on when outputs resolve: sort for a stable listing.
    return sorted(priced, key=lambda r: (r.name, r.type))


@dataclass
class OfflinePreview:
    stack: str
    config: StackConfig
    resources: list[PricedResource]

    @property
    def monthly_usd(self) -> float:
        return sum(r.monthly_usd for r in self.resources)

    def to_json(self) -> dict:
        return {"stack": self.stack, "mode": self.config.mode, "region": self.config.region,
                "resources": [r.to_json() for r in self.resources], "monthly_usd": round(self.monthly_usd, 2)}


def offline_preview(config: StackConfig, *, stack: str, catalog: Catalog | None = None) -> OfflinePreview:
    catalog = catalog or load_catalog()
    mocks = run_program(config, stack=stack)
    return OfflinePreview(stack, config, price_resources(mocks.resources, config, catalog))


def format_table(preview: OfflinePreview) -> str:
    """The people's view: one row per resource, billable ones with their monthly price."""
    rows = [(short_type(r.type), r.name, f"${r.monthly_usd:,.2f}" if r.items else "-",
             ", ".join(f"{k}={_short(v)}" for k, v in r.settings.items())) for r in preview.resources]
    headers = ("TYPE", "NAME", "MONTHLY", "SETTINGS")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers[:3])]
    lines = [f"Stack {preview.stack!r} ({preview.config.mode}, {preview.config.region}): "
             f"{len(preview.resources)} resources, offline preview (Pulumi mocks, no AWS calls)", ""]
    fmt = "  ".join(f"{{:{'>' if i == 2 else '<'}{w}}}" for i, w in enumerate(widths)) + "  {}"
    lines.append(fmt.format(*headers))
    lines += [fmt.format(*row).rstrip() for row in rows]
    lines += ["", f"Total: ${preview.monthly_usd:,.2f}/month "
                  "(instances, load balancer, KMS key and serverless usage as in 'llmdeploy plan'; "
                  "S3, SNS, CloudWatch, data transfer, ALB capacity units and public IPv4 addresses not counted)"]
    return "\n".join(lines)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
