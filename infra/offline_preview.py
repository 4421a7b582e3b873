"""What a stack would create and cost, from the Pulumi program itself, offline.

``llmdeploy preview --offline`` runs ``infra/__main__.py`` in this process under
the Pulumi SDK's mock runtime (``pulumi.runtime.set_mocks``): no Pulumi CLI, no
AWS. ``RecordingMocks`` records every resource with its type and inputs and
answers the data sources (AMI, default VPC, subnets, caller identity) with
plausible fakes. Each billable resource is then priced from its *own inputs*
with the same ``llmdeploy.costs`` line items ``llmdeploy plan`` sums, so the
total agrees with the plan when the program builds what the plan chose:

- EC2 Auto Scaling group: desired capacity x its launch template's instance type (stack term), and x
  the gp3 root volume its block device mapping sizes;
- Application Load Balancer: hours, and when it is internet-facing (not ``internal``) its public IPv4
  addresses, one per Availability Zone;
- SageMaker endpoint configuration: each instance variant's type x initial count, always on
  (realtime) or ``usageActiveHoursPerDay`` (async); serverless variants: memory size x usage;
- KMS key: one key-month;
- CloudWatch: each metric alarm by the metrics it reads, the dashboard, and the GPU metrics the
  reserved fleet's CloudWatch agent publishes (read from the launch template's user data).
Everything else (S3, SNS, IAM, autoscaling, CloudWatch API requests) is free or usage-billed below
a cent and, as in the plan, not counted.

The mock runtime is process-global: one run at a time (``run_program`` holds a lock).
Only Pulumi's public test API drives it (``set_mocks`` + ``pulumi.runtime.test``), on an event
loop of its own that is closed after each run (see ``_event_loop``); ``set_mocks`` is given a
``MockMonitor`` that also records what each registration says about ordering (``_recording_monitor``).
The price of one resource (``line_items``) is shared with the policy pack's budget policy (policy/);
``llmdeploy.plan.planned_line_items`` prices the stack config the same way before anything exists
(the program's budget check, ``llmdeploy.budget``), and tests/infra/test_budget.py holds the two equal.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmdeploy import costs
from llmdeploy import monitoring as mon
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.catalog import instance as cat_instance
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
    # What the engine would see of ordering (filled by the recording monitor): URN, the resources this one
    # depends on, per input, and the replacement options.
    urn: str = ""
    dependencies: tuple[str, ...] = ()
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()


# The default VPC the mocks answer with: one default subnet per AZ, and the AZs that offer each instance
# family (as DescribeInstanceTypeOfferings with location type availability-zone would). Every GPU family of the
# catalog is offered somewhere, as it is in every catalog region, so any instance plan picks can be previewed
# (the speed calibrations make g6 the cheapest fit for some plans); the larger and newer parts in fewer zones.
FAKE_SUBNETS = {"subnet-0aaa": "a", "subnet-0bbb": "b", "subnet-0ccc": "c"}
FAKE_OFFERINGS = {"g4dn": ("a", "b", "c"), "g5": ("a", "b"), "g6": ("a", "b", "c"), "g6e": ("a", "b"), "p3": ("a", "b"),
                  "p3dn": ("a",), "p4d": ("a", "b"), "p5": ("a",)}


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
                outputs.update(dnsName=f"{args.name}-1234567890.{self.region}.elb.amazonaws.com",
                               arnSuffix=f"app/{args.name}/0123456789abcdef")
            elif args.typ == "aws:lb/targetGroup:TargetGroup":
                outputs.update(arnSuffix=f"targetgroup/{args.name}/0123456789abcdef")
            elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
                outputs.update(latestVersion=1)
            elif args.typ == "aws:kms/key:Key":
                outputs.update(keyId=rid)
            elif args.typ == "aws:iam/role:Role":
                outputs.update(arn=f"arn:aws:iam::{FAKE_ACCOUNT}:role/{args.name}")
            elif args.typ == "aws:iam/instanceProfile:InstanceProfile":
                outputs.update(arn=f"arn:aws:iam::{FAKE_ACCOUNT}:instance-profile/{args.name}")
            elif args.typ == "random:index/randomId:RandomId":
                # Like the provider: new random bytes for new keepers (here a digest, so runs are reproducible).
                keepers = json.dumps(inputs.get("keepers"), sort_keys=True).encode()
                outputs.update(hex=hashlib.sha256(keepers).hexdigest()[:8])
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
                zones = next((f["values"] for f in args.args.get("filters", []) if f["name"] == "availability-zone"),
                             None)
                return {"id": self.region, "ids": [sid for sid, az in FAKE_SUBNETS.items()
                                                   if zones is None or f"{self.region}{az}" in zones]}
            if token == "aws:ec2/getSubnet:getSubnet":  # default subnets auto-assign public IPv4
                sid = args.args.get("id")
                return {"id": sid, "vpcId": "vpc-0123456789abcdef0", "mapPublicIpOnLaunch": sid in FAKE_SUBNETS,
                        "availabilityZone": f"{self.region}{FAKE_SUBNETS.get(sid, 'a')}", "defaultForAz": sid in FAKE_SUBNETS}
            if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
                types = next(f["values"] for f in args.args["filters"] if f["name"] == "instance-type")
                zones = sorted({f"{self.region}{az}" for t in types for az in FAKE_OFFERINGS.get(t.split(".")[0], ())})
                return {"id": self.region, "locations": zones, "locationTypes": ["availability-zone"] * len(zones),
                        "instanceTypes": [types[0]] * len(zones)}
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


def _recording_monitor(mocks):
    """A MockMonitor that also keeps what each RegisterResource request says about ordering (dependencies,
    per-property dependencies, deleteBeforeReplace, replaceOnChanges): what the engine plans replacements with."""
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            # Registrations run on several threads: find this request's record by type and name.
            res = next((r for r in reversed(mocks.resources) if r.type == request.type and r.name == request.name), None)
            if res is not None:
                res.urn = response.urn
                res.dependencies = tuple(request.dependencies)
                res.property_dependencies = {k: tuple(v.urns) for k, v in request.propertyDependencies.items()}
                res.delete_before_replace = bool(request.deleteBeforeReplace)
                res.replace_on_changes = tuple(request.replaceOnChanges)
            return response

    return RecordingMonitor(mocks)


def config_values(config: StackConfig) -> dict[str, str]:
    """The stack config as Pulumi hands it to a program: ``{"llmdeploy:key": "value"}`` strings."""
    values = {key: str(value) for key, value in config.to_mapping().items()}
    values["aws:region"] = config.region
    return values


def run_program(config: StackConfig | dict[str, str], *, stack: str = "preview", artifact_dir: str | None = None,
                mocks=None):
    """Run infra/__main__.py's ``main`` under fresh mocks with ``config``; returns the mocks (``.resources``).

    ``config`` is a StackConfig or the raw ``{"llmdeploy:key": "value"}`` map (raw maps
    let tests feed invalid settings). Exceptions from the program propagate. The resolved
    stack outputs land in ``mocks.outputs``.
    """
    import pulumi

    values = config_values(config) if isinstance(config, StackConfig) else dict(config)
    region = values.get(f"{NAMESPACE}:region") or values.get("aws:region") or "us-east-1"
    mocks = mocks or make_mocks(region)

    def program():
        from llmdeploy.infra.__main__ import main

        with tempfile.TemporaryDirectory(prefix="llmdeploy-preview-") as tmp:
            outputs = main(artifact_dir=artifact_dir or tmp)
        return pulumi.Output.all(**outputs).apply(lambda resolved: setattr(mocks, "outputs", resolved))

    run_with_mocks(program, mocks, stack=stack, config=values)
    return mocks


def run_with_mocks(program: Callable[[], Any], mocks, *, stack: str, config: Mapping[str, str],
                   project: str = "llmdeploy") -> None:
    """Run ``program`` under ``mocks`` the way Pulumi runs a program, with Pulumi's public test API only.

    - the config reaches it as Pulumi's Python language host hands it over: the ``PULUMI_CONFIG``
      environment variable, loaded with ``set_all_config(get_config_env())`` as
      pulumi-language-python-exec does (so ``read_config``'s typo check sees the whole map);
    - ``pulumi.runtime.set_mocks`` (with the recording monitor, which fills each record's URN and
      dependencies) then ``@pulumi.runtime.test``, which awaits what ``program`` returns (an Output,
      or None) and every registration;
    - in a thread of its own, with an event loop of its own (``_event_loop``): the root stack
      resource, settings and config live in that thread's context, so nothing leaks into the
      caller's Pulumi runtime or event loop, nor from one run into the next.
    Exceptions from the program propagate to the caller.
    """
    with _LOCK, _environment(PULUMI_CONFIG=json.dumps(dict(config))), \
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmdeploy-program") as runner:
        runner.submit(_run_in_this_thread, program, mocks, stack, project).result()


def _run_in_this_thread(program: Callable[[], Any], mocks, stack: str, project: str) -> None:
    import pulumi

    # The loop first: set_mocks creates the root stack resource, whose futures belong to the current loop.
    with _event_loop():
        pulumi.runtime.reset_options(project=project, stack=stack, preview=False)
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=_recording_monitor(mocks))
        pulumi.runtime.set_all_config(pulumi.runtime.get_config_env())
        pulumi.runtime.test(program)()


@contextlib.contextmanager
def _environment(**variables: str):
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _event_loop():
    """A fresh event loop for one run; afterwards it and every loop its worker threads used are closed.

    Pulumi's mock monitor answers RegisterResource on the loop's default executor, and each worker
    thread opens an event loop of its own there (``_sync_await`` -> ``new_event_loop``) that nothing
    ever closes. Left to the garbage collector, such a loop and its self-pipe socket are finalized in
    arbitrary order, and when the socket goes first ``BaseEventLoop.__del__`` fails with "Invalid file
    descriptor: -1" (about 1 run in 15 of ``preview --offline``, at exit). Here the worker threads get
    their loop from the executor's initializer, and all loops are closed explicitly once the threads
    have stopped.
    """
    thread_loops: list[asyncio.AbstractEventLoop] = []

    def give_thread_a_loop() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        thread_loops.append(loop)

    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="llmdeploy-mocks", initializer=give_thread_a_loop)
    loop = asyncio.new_event_loop()
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=True)
            asyncio.set_event_loop(None)
            loop.close()
            for thread_loop in thread_loops:
                thread_loop.close()


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
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("name", "metricName", "extendedStatistic", "statistic", "threshold",
                                               "evaluationPeriods"),
    "aws:cloudwatch/dashboard:Dashboard": ("dashboardName",),
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
    """``aws:sagemaker/endpointConfiguration:EndpointConfiguration`` -> ``sagemaker:EndpointConfiguration``;
    a provider's top-level module keeps the provider's name (``random:index/randomId:RandomId`` -> ``random:RandomId``)."""
    parts = token.split(":")
    if len(parts) != 3:
        return token
    module = parts[1].split("/")[0]
    return f"{parts[0] if module == 'index' else module}:{parts[2]}"


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


ASG = "aws:autoscaling/group:Group"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
KMS_KEY = "aws:kms/key:Key"
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"


def line_items(token: str, inputs: Mapping[str, Any], config: StackConfig, catalog: Catalog,
               launch_template: Callable[[], Mapping[str, Any]] | None = None) -> list[costs.LineItem]:
    """What one resource costs per month, from its own inputs (wire names); [] for the free ones.

    ``launch_template`` returns the inputs of an Auto Scaling group's launch template: its instance
    type is priced, each instance's EBS volumes as its block device mappings size them, and the GPU
    metrics of the CloudWatch agent its user data configures. A load balancer that is not internal
    adds its public IPv4 addresses. The term
    and the usage figures come from the stack config. Shared with the policy pack's budget policy
    (policy/), which prices what the engine sees.
    """
    region = config.region
    if token == ASG:
        template = launch_template() if launch_template else {}
        instance_type, count = template["instanceType"], int(inputs["desiredCapacity"])
        items = [costs.ec2_instances(catalog, region, instance_type, count, config.term)]
        for mapping in template.get("blockDeviceMappings") or []:  # each instance's volumes, as the template sizes them
            size = (mapping.get("ebs") or {}).get("volumeSize")
            if size:
                items.append(costs.root_volumes(catalog, region, count, int(size)))
        agent = mon.agent_config_from_user_data(base64.b64decode(template.get("userData") or "").decode())
        if agent:
            gpus = cat_instance(catalog, instance_type).gpu_count
            items += costs.monitoring(catalog, region, alarm_metrics=0, dashboards=0,
                                      custom_metrics=mon.custom_metrics_of_agent(agent, count, gpus))
        return items
    if token == METRIC_ALARM:  # billed per metric it reads: one, or each metric of a metric-math alarm
        reads = 1 if inputs.get("metricName") else sum(1 for q in inputs.get("metricQueries") or [] if q.get("metric") is not None)
        return costs.monitoring(catalog, region, alarm_metrics=reads, dashboards=0, custom_metrics=0)
    if token == DASHBOARD:
        return costs.monitoring(catalog, region, alarm_metrics=0, dashboards=1, custom_metrics=0)
    if token == LOAD_BALANCER:
        # An internet-facing ALB holds one public IPv4 address per Availability Zone of its subnets (the region's
        # default VPC, one subnet per zone, as the program picks them); an internal one has private addresses only.
        internal = inputs.get("internal")
        # Not (yet) known, as in a real preview's policy run: the stack config decides it, as the program does.
        public = not internal if isinstance(internal, bool) else config.internet_facing
        return [costs.load_balancer(catalog, region)] + ([costs.load_balancer_ipv4(catalog, region)] if public else [])
    if token == KMS_KEY:
        return [costs.kms_key(catalog, region)]
    if token != ENDPOINT_CONFIG:
        return []
    items = []
    is_async = bool(inputs.get("asyncInferenceConfig"))
    for variant in inputs.get("productionVariants") or []:
        if variant.get("serverlessConfig"):
            items += costs.serverless(catalog, region, int(variant["serverlessConfig"]["memorySizeInMb"]),
                                      config.usage_requests_per_month, config.usage_ms_per_request,
                                      config.usage_bytes_per_request)
        else:
            hours = config.usage_active_hours_per_day if is_async else 24
            items.append(costs.sagemaker_instances(catalog, region, variant["instanceType"],
                                                   int(variant["initialInstanceCount"]), hours))
    return items


def price_resources(resources: list[RecordedResource], config: StackConfig, catalog: Catalog) -> list[PricedResource]:
    """Price every custom resource from its own inputs (0 for the free ones)."""
    by_id = {r.id: r for r in resources}
    priced = []
    for res in resources:
        if not res.custom:
            continue  # components and the stack are not AWS resources

        def launch_template(res: RecordedResource = res) -> Mapping[str, Any]:
            return by_id[res.inputs["launchTemplate"]["id"]].inputs

        items = line_items(res.type, res.inputs, config, catalog, launch_template=launch_template)
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
        return costs.total([i for r in self.resources for i in r.items])

    def to_json(self) -> dict:
        return {"stack": self.stack, "mode": self.config.mode, "region": self.config.region,
                "resources": [r.to_json() for r in self.resources], "monthly_usd": round(self.monthly_usd, 2)}


def offline_preview(config: StackConfig, *, stack: str, catalog: Catalog | None = None) -> OfflinePreview:
    """Every resource the program would create, priced.

    The stack's budget (``maxMonthlyUsd``) is lifted for this run, so that a stack over it is
    still listed and priced; the callers (``preview``, ``deploy``) check the total against it.
    """
    catalog = catalog or load_catalog()
    mocks = run_program(dataclasses.replace(config, max_monthly_usd=0), stack=stack)
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
                  "(instances and their root volumes, load balancer and an internet-facing one's public IPv4 addresses, "
                  "KMS key, CloudWatch alarms, dashboard and agent metrics, and serverless usage as in 'llmdeploy plan'; "
                  "S3, SNS, CloudWatch API requests and the CloudWatch free tier, data transfer and ALB capacity units "
                  "not counted)"]
    return "\n".join(lines)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
