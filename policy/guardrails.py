"""llmdeploy's guardrails as Pulumi policies (CrossGuard, the ``pulumi_policy`` SDK).

The policy pack in this folder (``PulumiPolicy.yaml``, ``__main__.py``) runs them in the engine:

    pulumi preview -s dev --policy-pack policy        # and pulumi up --policy-pack policy

Resource policies run on each resource before it is created or updated, on its inputs as the
engine hands them over (camelCase wire names, as pulumi-aws declares them; numbers as floats).
Stack policies run on every resource of the stack at the end of a preview or update, on the
outputs (in a preview: the planned ones, with unknowns for what only the cloud can compute).
References between resources are followed through the engine's ``property_dependencies`` and,
where values are known, by id / ARN / name.

- ``imdsv2-required``: launch templates and instances require IMDSv2 tokens.
- ``ebs-encrypted``: every EBS volume a launch template, instance or volume declares is encrypted.
- ``s3-encrypted``: every S3 bucket has a server-side encryption configuration (SSE-S3 or KMS).
- ``sagemaker-kms``: async endpoints write results encrypted with a KMS key; a KMS key, where set, is not empty.
- ``no-world-ssh``: no security group rule opens port 22 to 0.0.0.0/0 or ::/0.
- ``no-public-plain-http``: no internet-facing load balancer serves plain HTTP (a forward, not a
  redirect to HTTPS) on a port its security groups open to 0.0.0.0/0.
- ``llmdeploy-tags``: every taggable resource carries llmdeploy's tags (llmdeploy.tags.base_tags).
- ``monthly-budget``: the stack's resources, priced as ``llmdeploy preview --offline`` prices them
  (``offline_preview.line_items``: instances and their root volumes, load balancer and, internet-facing,
  its public IPv4 addresses, KMS key, serverless usage, CloudWatch alarms, dashboard and agent metrics), stay
  under ``llmdeploy:maxMonthlyUsd`` (the stack config the engine passes the pack in ``PULUMI_CONFIG``) and under the
  pack's own ``maxMonthlyUsd``
  (``--policy-pack-config``). A priced value only the update will know skips the check in a preview.

Each validate function takes pulumi_policy's own argument objects and is unit-tested on them
(tests/policy/); tests/policy/test_program_passes.py runs every policy over what the Pulumi
program registers under mocks in each mode.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from llmdeploy import tags as llm_tags

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
EBS_VOLUME = "aws:ebs/volume:Volume"
BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
BUCKET_SSE = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
              "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
AUTOSCALING_GROUP = "aws:autoscaling/group:Group"

SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")  # S3 PutBucketEncryption's SSEAlgorithm values
SSH_PORT = 22
UNKNOWN = object()  # what ``known`` returns, when asked to, for a value only the update will know
# The tags every llmdeploy resource carries (llmdeploy.tags.base_tags); managed-by must say llmdeploy.
REQUIRED_TAGS = (llm_tags.MANAGED_BY, llm_tags.STACK, llm_tags.MODE, llm_tags.PURPOSE, llm_tags.OWNER,
                 llm_tags.COST_CENTER)


# -- reading properties that may be unknown during a preview ----------------------------------------------


def known(props: Any, *path: Any, default: Any = None, unknown: Any = None) -> Any:
    """``props[path[0]][path[1]]...``: ``default`` when missing, ``unknown`` when only the update will know it."""
    value = props
    try:
        for key in path:
            if isinstance(key, int) or isinstance(value, Mapping) and key in value:
                value = value[key]
            else:
                return default
    except UnknownValueError:
        return unknown
    except (IndexError, KeyError, TypeError):
        return default
    return value


def _truthy(value: Any) -> bool:
    """pulumi-aws takes some booleans as strings (LaunchTemplate ebs.encrypted = "true")."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _items(value: Any) -> list:
    try:
        return list(value) if isinstance(value, Iterable) and not isinstance(value, (str, Mapping)) else []
    except UnknownValueError:
        return []


def _strings(value: Any) -> set[str]:
    """Every known string inside a property value (a reference may sit in a list or an object)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, Mapping):
        return set().union(*(_strings(known(value, k)) for k in list(value))) if value else set()
    return set().union(*(_strings(v) for v in _items(value))) if _items(value) else set()


def _identities(resource: PolicyResource) -> set[str]:
    return {v for key in ("id", "arn", "name", "bucket") if isinstance(v := known(resource.props, key), str) and v}


def referenced(resource: PolicyResource, prop: str, candidates: Iterable[PolicyResource]) -> list[PolicyResource]:
    """The candidates ``resource.prop`` refers to: through the engine's property dependencies, else by value."""
    candidates = list(candidates)
    deps = [d for d in (resource.property_dependencies or {}).get(prop, []) if any(d is c for c in candidates)]
    if deps:
        return deps
    wanted = _strings(known(resource.props, prop))
    return [c for c in candidates if wanted & _identities(c)] if wanted else []


# report_violation(message, urn): pulumi_policy's ReportViolation type takes the urn as a second positional argument.
# A resource policy names its own resource (args.urn), a stack policy the offending resource, a stack-wide finding None.

# -- IMDSv2 --------------------------------------------------------------------------------------------


def validate_imdsv2(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in (LAUNCH_TEMPLATE, INSTANCE):
        return
    tokens = known(args.props, "metadataOptions", "httpTokens", unknown=UNKNOWN)
    if tokens not in ("required", UNKNOWN):  # unknown in a preview: checked again before the update creates it
        report_violation(f"{args.name}: metadataOptions.httpTokens is {tokens!r}; set it to 'required' so only IMDSv2 "
                         "(session tokens) can read instance credentials.", args.urn)


# -- encryption at rest ----------------------------------------------------------------------------------


def validate_ebs_encrypted(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    props, name = args.props, args.name
    if args.resource_type == LAUNCH_TEMPLATE:
        for i, mapping in enumerate(_items(known(props, "blockDeviceMappings", default=[]))):
            ebs = known(mapping, "ebs")
            if ebs is not None and not _truthy(known(ebs, "encrypted")):
                report_violation(f"{name}: blockDeviceMappings[{i}] ({known(mapping, 'deviceName', default='?')}) "
                                 "is not encrypted; set ebs.encrypted to 'true'.", args.urn)
    elif args.resource_type == INSTANCE:
        root = known(props, "rootBlockDevice", unknown=UNKNOWN)
        if root is UNKNOWN:
            pass  # only known once the update runs: checked again then
        elif root is None and known(props, "launchTemplate") is None:
            report_violation(f"{name}: no rootBlockDevice and no launch template: the root volume would follow the AMI "
                             "and account default; declare rootBlockDevice with encrypted = true.", args.urn)
        elif root is not None and not _truthy(known(root, "encrypted")):
            report_violation(f"{name}: rootBlockDevice is not encrypted; set encrypted = true.", args.urn)
        for i, device in enumerate(_items(known(props, "ebsBlockDevices", default=[]))):
            if not _truthy(known(device, "encrypted")):
                report_violation(f"{name}: ebsBlockDevices[{i}] is not encrypted; set encrypted = true.", args.urn)
    elif args.resource_type == EBS_VOLUME and not _truthy(known(props, "encrypted")):
        report_violation(f"{name}: the EBS volume is not encrypted; set encrypted = true.", args.urn)


def validate_s3_encrypted(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    configs = [r for r in args.resources if r.resource_type in BUCKET_SSE]
    for config in configs:
        rules = _items(known(config.props, "rules", default=[]))
        algorithms = {known(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm") for rule in rules}
        if not rules or not algorithms <= set(SSE_ALGORITHMS):
            report_violation(f"{config.name}: every rule needs applyServerSideEncryptionByDefault.sseAlgorithm, one of "
                             f"{', '.join(SSE_ALGORITHMS)}; got {sorted(map(str, algorithms)) or 'no rule'}.", config.urn)
    for bucket in (r for r in args.resources if r.resource_type in BUCKETS):
        inline = known(bucket.props, "serverSideEncryptionConfiguration")  # the deprecated in-bucket form
        if inline or any(referenced(config, "bucket", [bucket]) for config in configs):
            continue
        report_violation(f"{bucket.name}: the bucket has no server-side encryption configuration; add an "
                         "aws.s3.BucketServerSideEncryptionConfiguration (AES256 or aws:kms) for it.", bucket.urn)


def validate_sagemaker_kms(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != ENDPOINT_CONFIG:
        return
    if known(args.props, "kmsKeyArn", default="(not set)", unknown="(unknown)") in ("", None):
        report_violation(f"{args.name}: kmsKeyArn is set but empty; name a KMS key or leave it out.", args.urn)
    if known(args.props, "asyncInferenceConfig", unknown="(unknown)") is not None and \
            known(args.props, "asyncInferenceConfig", "outputConfig", "kmsKeyId", unknown="(unknown)") in ("", None):
        report_violation(f"{args.name}: async inference writes results to S3 without a KMS key; set "
                         "asyncInferenceConfig.outputConfig.kmsKeyId.", args.urn)


# -- network ---------------------------------------------------------------------------------------------


def _world(cidrs: Iterable[Any]) -> list[str]:
    out = []
    for cidr in cidrs:
        try:
            if isinstance(cidr, str) and ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0:
                out.append(cidr)
        except ValueError:
            continue
    return out


def _covers(protocol: Any, from_port: Any, to_port: Any, port: int) -> bool:
    """Whether a rule (EC2's protocol / port range shapes) lets TCP ``port`` through."""
    protocol = str(protocol).lower() if protocol is not None else "tcp"
    if protocol in ("-1", "all"):
        return True
    if protocol not in ("tcp", "6"):
        return False
    try:
        low, high = int(float(from_port)), int(float(to_port))
    except (TypeError, ValueError):
        return True  # a port range only known at update time: assume the worst
    return low <= port <= high


def world_open_rules(resource_type: str, props: Any) -> list[tuple[str, list[str], Any, Any, Any]]:
    """(where, world CIDRs, protocol, from, to) of every ingress rule that admits 0.0.0.0/0 or ::/0."""
    found = []
    if resource_type == SECURITY_GROUP:
        for i, rule in enumerate(_items(known(props, "ingress", default=[]))):
            world = _world([*_items(known(rule, "cidrBlocks", default=[])), *_items(known(rule, "ipv6CidrBlocks", default=[]))])
            if world:
                found.append((f"ingress[{i}]", world, known(rule, "protocol"), known(rule, "fromPort"), known(rule, "toPort")))
    elif resource_type == SG_RULE and known(props, "type") == "ingress":
        world = _world([*_items(known(props, "cidrBlocks", default=[])), *_items(known(props, "ipv6CidrBlocks", default=[]))])
        if world:
            found.append(("rule", world, known(props, "protocol"), known(props, "fromPort"), known(props, "toPort")))
    elif resource_type == SG_INGRESS_RULE:
        world = _world([known(props, "cidrIpv4"), known(props, "cidrIpv6")])
        if world:
            found.append(("rule", world, known(props, "ipProtocol"), known(props, "fromPort"), known(props, "toPort")))
    return found


def validate_no_world_ssh(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for where, world, protocol, low, high in world_open_rules(args.resource_type, args.props):
        if _covers(protocol, low, high, SSH_PORT):
            report_violation(f"{args.name}: {where} opens SSH (port 22) to {', '.join(world)}; allow one office or VPN "
                             "CIDR, or none and use Session Manager.", args.urn)


def validate_no_public_plain_http(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    balancers = [r for r in args.resources if r.resource_type in LOAD_BALANCERS]
    groups = [r for r in args.resources if r.resource_type == SECURITY_GROUP]
    for listener in (r for r in args.resources if r.resource_type in LISTENERS):
        protocol = known(listener.props, "protocol", default="HTTP")
        actions = {known(a, "type") for a in _items(known(listener.props, "defaultActions", default=[]))}
        if protocol != "HTTP" or actions <= {"redirect", "fixed-response"}:
            continue  # TLS, or plain HTTP that only redirects to HTTPS (or answers a fixed text)
        port = known(listener.props, "port", default=80)
        if not isinstance(port, (int, float)):
            continue  # only known once the update runs; the check runs again on the update's outputs
        port = int(port)
        for balancer in referenced(listener, "loadBalancerArn", balancers):
            if known(balancer.props, "internal") is True:
                continue
            lb_groups = referenced(balancer, "securityGroups", groups)
            open_to = sorted({c for g in lb_groups for _, world, proto, low, high in world_open_rules(SECURITY_GROUP, g.props)
                              if _covers(proto, low, high, port) for c in world})
            if open_to or not lb_groups:
                report_violation(
                    f"{listener.name}: internet-facing load balancer {balancer.name} serves plain HTTP on port {port} to "
                    f"{', '.join(open_to) or 'anyone (no security group)'}; serve HTTPS (llmdeploy:certificateArn, then "
                    "port 80 only redirects) or narrow llmdeploy:ingressCidr.", listener.urn)


# -- tags ------------------------------------------------------------------------------------------------


@functools.cache
def is_taggable(token: str) -> bool:
    """Whether the pulumi-aws resource behind ``token`` takes ``tags`` (its constructor says so)."""
    parts = token.split(":")
    if len(parts) != 3 or parts[0] != "aws":
        return False
    import importlib

    try:
        module = importlib.import_module("pulumi_aws" if parts[1] == "index" else f"pulumi_aws.{parts[1].split('/')[0]}")
        cls = getattr(module, parts[2])
    except (ImportError, AttributeError):
        return False
    return "tags" in inspect.signature(cls._internal_init).parameters


def resource_tags(resource_type: str, props: Any) -> dict[str, str] | None:
    tags = known(props, "tags", unknown=UNKNOWN)
    if tags is UNKNOWN:
        return None
    if resource_type == AUTOSCALING_GROUP:  # ASGs take a list of {key, value, propagateAtLaunch}
        return {known(t, "key"): known(t, "value") for t in _items(tags)} if tags is not None else None
    return dict(tags) if isinstance(tags, Mapping) else None


def validate_tags(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if not is_taggable(args.resource_type):
        return
    if known(args.props, "tags", unknown=UNKNOWN) is UNKNOWN:
        return  # only known once the update runs: checked again then, before the resource is created
    tags = resource_tags(args.resource_type, args.props) or {}
    missing = [k for k in REQUIRED_TAGS if not tags.get(k)]
    if missing:
        report_violation(f"{args.name}: missing llmdeploy tags {', '.join(missing)} (teardown and the reaper act only on "
                         "tagged resources); pass llmdeploy.tags.base_tags(...) as its tags.", args.urn)
    elif tags[llm_tags.MANAGED_BY] != llm_tags.MANAGED_BY_VALUE:
        report_violation(f"{args.name}: tag {llm_tags.MANAGED_BY} is {tags[llm_tags.MANAGED_BY]!r}, "
                         f"not {llm_tags.MANAGED_BY_VALUE!r}.", args.urn)
    elif (stack := os.environ.get("PULUMI_STACK")) and tags[llm_tags.STACK] != stack:
        report_violation(f"{args.name}: tag {llm_tags.STACK} is {tags[llm_tags.STACK]!r}, but the stack is {stack!r}.", args.urn)


# -- the budget ------------------------------------------------------------------------------------------


def stack_config_from_engine():
    """The llmdeploy stack config the engine passed the pack (``PULUMI_CONFIG``), or None for other stacks."""
    import pulumi

    from llmdeploy.stackconfig import NAMESPACE, StackConfig

    raw = {k: v for k, v in pulumi.runtime.get_config_env().items() if k.startswith(f"{NAMESPACE}:")}
    if f"{NAMESPACE}:mode" not in raw:
        return None
    from llmdeploy.catalog import load_catalog

    return StackConfig.from_mapping(raw, catalog=load_catalog(), origin="the stack config")


def price_stack(resources: list[PolicyResource], config, catalog) -> float:
    """The monthly total of ``resources``, priced as ``llmdeploy preview --offline`` prices them."""
    from llmdeploy import costs
    from llmdeploy.infra.offline_preview import line_items

    templates = [r for r in resources if r.resource_type == LAUNCH_TEMPLATE]
    items = []
    for res in resources:
        def template(res=res) -> Mapping[str, Any]:
            found = referenced(res, "launchTemplate", templates) or (templates if len(templates) == 1 else [])
            if not found:
                raise LookupError(f"cannot find the launch template of {res.name}")
            return found[0].props
        items += line_items(res.resource_type, res.props, config, catalog, launch_template=template)
    return costs.total(items)  # one exactly rounded sum: the same cents as plan and the preview, in any order


def validate_budget(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    from llmdeploy import budget
    from llmdeploy.catalog import load_catalog
    from llmdeploy.errors import LlmdeployError

    try:
        config = stack_config_from_engine()
    except LlmdeployError as exc:
        report_violation(f"the stack config cannot be read: {exc}", None)
        return
    if config is None:
        args.not_applicable("not an llmdeploy hosting stack (no llmdeploy:mode in its config)")
    limits = budget.limits(config, origin="the stack config")
    if (pack_limit := known(args.get_config(), "maxMonthlyUsd")) is not None:
        limits.append(budget.Limit(float(pack_limit), "the policy pack's maxMonthlyUsd"))
    if not limits:
        args.not_applicable("no budget: llmdeploy:maxMonthlyUsd is 0 and the pack sets no maxMonthlyUsd")
    try:
        monthly = price_stack(args.resources, config, load_catalog())
    except LookupError as exc:
        report_violation(f"the stack cannot be priced: {exc}", None)
        return
    except UnknownValueError as exc:  # e.g. a launch template's user data in a preview: priced on the update's outputs
        args.not_applicable(f"the estimate needs a value only the update will know ({exc.message}); checked again then")
    try:
        budget.check(monthly, limits, stack=os.environ.get("PULUMI_STACK", "this stack"))
    except budget.OverBudgetError as exc:
        report_violation(str(exc), None)


# -- the policies ----------------------------------------------------------------------------------------

POLICIES = [
    ResourceValidationPolicy(
        name="imdsv2-required",
        description="EC2 launch templates and instances require IMDSv2 (metadataOptions.httpTokens = required).",
        validate=validate_imdsv2,
    ),
    ResourceValidationPolicy(
        name="ebs-encrypted",
        description="Every EBS volume (launch template mappings, instance root and data volumes, volumes) is encrypted.",
        validate=validate_ebs_encrypted,
    ),
    StackValidationPolicy(
        name="s3-encrypted",
        description="Every S3 bucket has a server-side encryption configuration (AES256 or aws:kms).",
        validate=validate_s3_encrypted,
    ),
    ResourceValidationPolicy(
        name="sagemaker-kms",
        description="SageMaker async results are encrypted with a KMS key; a KMS key, where set, is not empty.",
        validate=validate_sagemaker_kms,
    ),
    ResourceValidationPolicy(
        name="no-world-ssh",
        description="No security group rule opens SSH (port 22) to 0.0.0.0/0 or ::/0.",
        validate=validate_no_world_ssh,
    ),
    StackValidationPolicy(
        name="no-public-plain-http",
        description="No internet-facing load balancer serves plain HTTP to 0.0.0.0/0 (use HTTPS, or a narrower CIDR).",
        validate=validate_no_public_plain_http,
    ),
    ResourceValidationPolicy(
        name="llmdeploy-tags",
        description="Every taggable resource carries llmdeploy's tags (managed-by, stack, mode, purpose, owner, cost-center).",
        validate=validate_tags,
    ),
    StackValidationPolicy(
        name="monthly-budget",
        description="The stack's monthly estimate stays under llmdeploy:maxMonthlyUsd and the pack's maxMonthlyUsd.",
        validate=validate_budget,
        config_schema=PolicyConfigSchema(properties={"maxMonthlyUsd": {"type": "number", "exclusiveMinimum": 0}}),
    ),
]
PACK_NAME = "llmdeploy-guardrails"
ENFORCEMENT = EnforcementLevel.MANDATORY
