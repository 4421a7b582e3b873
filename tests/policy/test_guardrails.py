"""Each guardrail on resource arguments: the good shape passes, each bad shape is reported, unknowns don't crash.

Property names and shapes are pulumi-aws's wire names (camelCase), as the mocks record them from the program
(tests/policy/test_program_passes.py feeds the real ones); numbers arrive as floats, as from the engine.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from llmdeploy.catalog import load_catalog
from llmdeploy.infra.offline_preview import config_values
from llmdeploy.stackconfig import StackConfig

from .helpers import UNKNOWN, by_name, policy_resource, resource_args, stack_args, violations

LT = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
SG = "aws:ec2/securityGroup:SecurityGroup"
TAGS = {"managed-by": "llmdeploy", "llmdeploy:stack": "dev", "llmdeploy:mode": "reserved", "llmdeploy:purpose": "inference",
        "owner": "ml-platform", "cost-center": "cc-42"}


# -- imdsv2-required ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [LT, INSTANCE])
def test_imdsv2_required(token):
    policy = by_name("imdsv2-required")
    assert violations(policy, resource_args(token, {"metadataOptions": {"httpTokens": "required"}})) == []
    for bad in ({"metadataOptions": {"httpTokens": "optional"}}, {"metadataOptions": {"httpEndpoint": "enabled"}}, {}):
        [message] = violations(policy, resource_args(token, bad, name="node"))
        assert message.startswith("node: metadataOptions.httpTokens") and "'required'" in message


def test_imdsv2_ignores_other_types():
    assert violations(by_name("imdsv2-required"), resource_args("aws:s3/bucket:Bucket", {})) == []


# -- ebs-encrypted -----------------------------------------------------------------------------------------------


def test_launch_template_volumes_must_be_encrypted():
    policy = by_name("ebs-encrypted")
    good = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeSize": 200.0}}]}
    assert violations(policy, resource_args(LT, good)) == []
    assert violations(policy, resource_args(LT, {})) == [], "no mapping declared: nothing to check here"
    bad = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}},
                                   {"deviceName": "/dev/sdb", "ebs": {"volumeSize": 100.0}}]}
    found = violations(policy, resource_args(LT, bad, name="lt"))
    assert len(found) == 2 and "/dev/xvda" in found[0] and "/dev/sdb" in found[1]


def test_instance_volumes_must_be_encrypted():
    policy = by_name("ebs-encrypted")
    assert violations(policy, resource_args(INSTANCE, {"rootBlockDevice": {"encrypted": True}})) == []
    assert violations(policy, resource_args(INSTANCE, {"launchTemplate": {"id": "lt-1"}})) == []
    assert "no rootBlockDevice" in violations(policy, resource_args(INSTANCE, {}))[0]
    assert "rootBlockDevice is not encrypted" in violations(policy, resource_args(INSTANCE, {"rootBlockDevice": {}}))[0]
    found = violations(policy, resource_args(INSTANCE, {"rootBlockDevice": {"encrypted": True},
                                                        "ebsBlockDevices": [{"encrypted": False}]}))
    assert found and "ebsBlockDevices[0]" in found[0]
    assert violations(policy, resource_args("aws:ebs/volume:Volume", {"encrypted": True})) == []
    assert violations(policy, resource_args("aws:ebs/volume:Volume", {})) != []


# -- s3-encrypted ------------------------------------------------------------------------------------------------

BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
AES = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}, "bucketKeyEnabled": True}]


def test_every_bucket_has_sse_found_by_value():
    policy = by_name("s3-encrypted")
    bucket = policy_resource(BUCKET, {"id": "model-bucket-1a2b", "bucket": "model-bucket-1a2b"}, name="model-bucket")
    sse = policy_resource(SSE, {"bucket": "model-bucket-1a2b", "rules": AES}, name="model-encryption")
    assert violations(policy, stack_args([bucket, sse])) == []
    [message] = violations(policy, stack_args([bucket]))
    assert message.startswith("model-bucket: the bucket has no server-side encryption")


def test_every_bucket_has_sse_found_through_property_dependencies_in_a_preview():
    """In a preview a new bucket's name is unknown: the engine's property dependencies link the two."""
    policy = by_name("s3-encrypted")
    bucket = policy_resource(BUCKET, {"id": UNKNOWN, "bucket": UNKNOWN}, name="model-bucket")
    sse = policy_resource(SSE, {"bucket": UNKNOWN, "rules": AES}, name="model-encryption", deps={"bucket": [bucket]})
    other = policy_resource(BUCKET, {"id": UNKNOWN, "bucket": UNKNOWN}, name="logs")
    assert violations(policy, stack_args([bucket, sse])) == []
    [message] = violations(policy, stack_args([bucket, sse, other]))
    assert message.startswith("logs:")


def test_sse_rules_need_an_algorithm():
    policy = by_name("s3-encrypted")
    bucket = policy_resource(BUCKET, {"id": "b"}, name="b")
    for rules in ([], [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "none"}}], [{"bucketKeyEnabled": True}]):
        found = violations(policy, stack_args([bucket, policy_resource(SSE, {"bucket": "b", "rules": rules}, name="enc")]))
        assert len(found) == 1 and found[0].startswith("enc: every rule needs")
    kms = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:k"}}]
    assert violations(policy, stack_args([bucket, policy_resource(SSE, {"bucket": "b", "rules": kms})])) == []


# -- sagemaker-kms -----------------------------------------------------------------------------------------------

EPC = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"


def test_async_results_need_a_kms_key():
    policy = by_name("sagemaker-kms")
    output = {"s3OutputPath": "s3://b/async-out/"}
    def with_key(key):
        return {"asyncInferenceConfig": {"outputConfig": {**output, "kmsKeyId": key}}}

    assert violations(policy, resource_args(EPC, with_key("arn:aws:kms:us-east-1:123456789012:key/k"))) == []
    assert violations(policy, resource_args(EPC, with_key(UNKNOWN))) == [], \
        "a key created in the same update is unknown in a preview, not missing"
    [message] = violations(policy, resource_args(EPC, {"asyncInferenceConfig": {"outputConfig": output}}, name="cfg"))
    assert "cfg: async inference writes results to S3 without a KMS key" in message
    assert violations(policy, resource_args(EPC, {"productionVariants": [{"instanceType": "ml.g4dn.xlarge"}]})) == []
    assert violations(policy, resource_args(EPC, {"kmsKeyArn": ""})) != []


# -- no-world-ssh ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token, rule", [
    (SG, {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/0"]}]}),
    (SG, {"ingress": [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0, "ipv6CidrBlocks": ["::/0"]}]}),
    (SG, {"ingress": [{"protocol": "tcp", "fromPort": 0.0, "toPort": 1024.0, "cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"]}]}),
    ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", {"ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                                                                  "cidrIpv4": "0.0.0.0/0"}),
    ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", {"ipProtocol": "-1", "cidrIpv6": "::/0"}),
    ("aws:ec2/securityGroupRule:SecurityGroupRule", {"type": "ingress", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                                                     "cidrBlocks": ["0.0.0.0/0"]}),
])
def test_world_open_ssh_is_reported(token, rule):
    [message] = violations(by_name("no-world-ssh"), resource_args(token, rule, name="sg"))
    assert message.startswith("sg:") and "SSH (port 22)" in message


@pytest.mark.parametrize("token, rule", [
    (SG, {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["203.0.113.7/32"]}]}),
    (SG, {"ingress": [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "cidrBlocks": ["0.0.0.0/0"]}]}),
    (SG, {"ingress": [{"protocol": "udp", "fromPort": 0.0, "toPort": 65535.0, "cidrBlocks": ["0.0.0.0/0"]}]}),
    (SG, {"ingress": [{"protocol": "tcp", "fromPort": 8080.0, "toPort": 8080.0, "securityGroups": ["sg-alb"]}]}),
    ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", {"ipProtocol": "-1", "referencedSecurityGroupId": "sg-self"}),
    ("aws:ec2/securityGroupRule:SecurityGroupRule", {"type": "egress", "protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}),
])
def test_other_rules_pass(token, rule):
    assert violations(by_name("no-world-ssh"), resource_args(token, rule)) == []


# -- no-public-plain-http ----------------------------------------------------------------------------------------

LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"


def _web(cidr="0.0.0.0/0", *, internal=False, protocol="HTTP", action="forward", known_ids=True):
    ident = (lambda v: v) if known_ids else (lambda v: UNKNOWN)
    sg = policy_resource(SG, {"id": ident("sg-alb"), "ingress": [{"protocol": "tcp", "fromPort": 80.0, "toPort": 80.0,
                                                                  "cidrBlocks": [cidr]}]}, name="alb-sg")
    lb = policy_resource(LB, {"arn": ident("arn:lb"), "internal": internal, "securityGroups": [ident("sg-alb")]}, name="alb",
                         deps={} if known_ids else {"securityGroups": [sg]})
    listener = policy_resource(LISTENER, {"loadBalancerArn": ident("arn:lb"), "port": 80.0, "protocol": protocol,
                                          "defaultActions": [{"type": action}]}, name="http",
                               deps={} if known_ids else {"loadBalancerArn": [lb]})
    return [sg, lb, listener]


@pytest.mark.parametrize("known_ids", [True, False], ids=["values", "preview-dependencies"])
def test_public_plain_http_is_reported(known_ids):
    [message] = violations(by_name("no-public-plain-http"), stack_args(_web(known_ids=known_ids)))
    assert message.startswith("http: internet-facing load balancer alb serves plain HTTP on port 80 to 0.0.0.0/0")
    assert "certificateArn" in message and "ingressCidr" in message


@pytest.mark.parametrize("change", [dict(cidr="10.0.0.0/8"), dict(internal=True), dict(action="redirect"),
                                    dict(protocol="HTTPS")], ids=["private-cidr", "internal", "redirect", "https"])
def test_https_redirects_private_cidrs_and_internal_balancers_pass(change):
    assert violations(by_name("no-public-plain-http"), stack_args(_web(**change))) == []


# -- llmdeploy-tags ----------------------------------------------------------------------------------------------


def test_taggable_resources_carry_the_llmdeploy_tags(monkeypatch):
    policy = by_name("llmdeploy-tags")
    assert violations(policy, resource_args("aws:s3/bucket:Bucket", {"tags": TAGS})) == []
    [missing] = violations(policy, resource_args("aws:s3/bucket:Bucket", {"tags": {"owner": "x"}}, name="b"))
    assert missing.startswith("b: missing llmdeploy tags managed-by, llmdeploy:stack")
    [wrong] = violations(policy, resource_args("aws:kms/key:Key", {"tags": {**TAGS, "managed-by": "terraform"}}))
    assert "'terraform'" in wrong
    monkeypatch.setenv("PULUMI_STACK", "prod")  # the engine tells the pack which stack it checks
    [other] = violations(policy, resource_args("aws:kms/key:Key", {"tags": TAGS}))
    assert "'dev', but the stack is 'prod'" in other


def test_asg_tags_are_a_list_and_untaggable_types_are_skipped():
    policy = by_name("llmdeploy-tags")
    asg_tags = [{"key": k, "value": v, "propagateAtLaunch": True} for k, v in TAGS.items()]
    assert violations(policy, resource_args("aws:autoscaling/group:Group", {"tags": asg_tags})) == []
    assert violations(policy, resource_args("aws:autoscaling/group:Group", {})) != []
    assert violations(policy, resource_args("aws:iam/rolePolicy:RolePolicy", {})) == [], "RolePolicy takes no tags"
    assert violations(policy, resource_args("llmdeploy:ec2:ReservedEndpoint", {})) == [], "components are not AWS resources"


# -- monthly-budget ----------------------------------------------------------------------------------------------


def _reserved_resources(count=2.0, *, through_dependencies=False, user_data=None):
    """What the program registers for a reserved stack without ingressCidr/certificateArn (wire names): a launch
    template with its gp3 root volume (infra/reserved_endpoint.py), the group, and an internal load balancer."""
    from llmdeploy.assumptions import load_assumptions

    root = [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": load_assumptions().root_volume_gb, "volumeType": "gp3",
                                                "encrypted": "true", "deleteOnTermination": "true"}}]
    template = policy_resource(LT, {"id": UNKNOWN if through_dependencies else "lt-1", "instanceType": "g4dn.xlarge",
                                    "blockDeviceMappings": root,
                                    **({"userData": user_data} if user_data is not None else {})}, name="serve-template")
    asg = policy_resource("aws:autoscaling/group:Group",
                          {"desiredCapacity": count, "launchTemplate": {"id": UNKNOWN if through_dependencies else "lt-1"}},
                          name="serve-asg", deps={"launchTemplate": [template]} if through_dependencies else {})
    return [template, asg, policy_resource(LB, {"internal": True}, name="serve-alb")]


def _engine_config(monkeypatch, **settings):
    config = StackConfig(mode="reserved", instance_type="g4dn.xlarge", instance_count=2, min_instances=2, term="1y", **settings)
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config_values(config)))  # what the engine hands the pack
    monkeypatch.setenv("PULUMI_STACK", "dev")
    return config


def _priced_as_plan(config, monitored) -> float:
    """What plan's pricing rule (llmdeploy.plan.hosting_items) says the stack's resources cost."""
    from llmdeploy import costs
    from llmdeploy.plan import hosting_items

    return costs.total(hosting_items(load_catalog(), config.region, config.mode, instance_type=config.instance_type,
                                     count=config.instance_count, gpus=1, term=config.term,
                                     internet_facing=config.internet_facing, monitored=monitored))


@pytest.mark.parametrize("through_dependencies", [False, True], ids=["values", "preview-dependencies"])
def test_budget_prices_the_resources_it_sees(monkeypatch, through_dependencies):
    from llmdeploy import monitoring as mon

    config = _engine_config(monkeypatch, max_monthly_usd=300)
    # 2 x g4dn.xlarge 1y RI + their root volumes + ALB (~ $520): only what it is shown, no monitoring resources
    monthly = _priced_as_plan(config, mon.Billable(0, 0, 0))
    assert monthly > 300
    [message] = violations(by_name("monthly-budget"), stack_args(_reserved_resources(through_dependencies=through_dependencies)))
    assert f"would cost ${monthly:,.2f}/month, over the budget of $300.00/month (llmdeploy:maxMonthlyUsd" in message
    assert violations(by_name("monthly-budget"), stack_args(_reserved_resources(count=1.0))) == [], "one instance fits"


def test_budget_prices_an_internet_facing_load_balancers_addresses(monkeypatch):
    """internal=False, as the program registers it for a stack with an ingressCidr: its public IPv4 addresses count."""
    from llmdeploy import monitoring as mon

    config = _engine_config(monkeypatch, max_monthly_usd=300, ingress_cidr="203.0.113.0/24")
    public = [r if r.resource_type != LB else policy_resource(LB, {"internal": False}, name="serve-alb")
              for r in _reserved_resources()]
    monthly = _priced_as_plan(config, mon.Billable(0, 0, 0))
    [message] = violations(by_name("monthly-budget"), stack_args(public))
    assert f"would cost ${monthly:,.2f}/month" in message
    assert monthly == pytest.approx(_priced_as_plan(replace(config, ingress_cidr=""), mon.Billable(0, 0, 0)) + 21.9)


def test_budget_prices_the_monitoring_it_sees(monkeypatch):
    """Alarms by the metrics they read, the dashboard, and the GPU metrics of the agent the user data installs."""
    import base64

    from llmdeploy import monitoring as mon

    config = _engine_config(monkeypatch, max_monthly_usd=300)
    script = "\n".join(["#!/bin/bash", *mon.agent_setup_lines(json.dumps(mon.agent_config("dev")))])
    resources = [*_reserved_resources(user_data=base64.b64encode(script.encode()).decode()),
                 policy_resource("aws:cloudwatch/metricAlarm:MetricAlarm", {"metricName": "UnHealthyHostCount"}, name="a1"),
                 policy_resource("aws:cloudwatch/metricAlarm:MetricAlarm", {"metricQueries": [
                     {"id": "e", "expression": "m1/m2"}, {"id": "m1", "metric": {}}, {"id": "m2", "metric": {}}]}, name="a2"),
                 policy_resource("aws:cloudwatch/dashboard:Dashboard", {"dashboardName": "llmdeploy-dev"}, name="d")]
    monthly = _priced_as_plan(config, mon.Billable(3, 1, mon.custom_metric_count("reserved", 2, 1)))
    [message] = violations(by_name("monthly-budget"), stack_args(resources))
    assert f"would cost ${monthly:,.2f}/month" in message
    assert monthly > _priced_as_plan(config, mon.Billable(0, 0, 0)) + 3, "the dashboard alone is $3"


def test_budget_waits_for_a_value_only_the_update_knows(monkeypatch):
    """In a preview the launch template's user data (the agent's metrics) may be unknown: no guess, no crash."""
    _engine_config(monkeypatch, max_monthly_usd=300)
    assert violations(by_name("monthly-budget"), stack_args(_reserved_resources(user_data=UNKNOWN))) == "not applicable"


def test_budget_from_the_pack_config(monkeypatch):
    _engine_config(monkeypatch)  # no budget in the stack
    policy = by_name("monthly-budget")
    assert violations(policy, stack_args(_reserved_resources())) == "not applicable"
    [message] = violations(policy, stack_args(_reserved_resources(), config={"maxMonthlyUsd": 100}))
    assert "over the budget of $100.00/month (the policy pack's maxMonthlyUsd)" in message


def test_budget_is_not_applicable_to_other_stacks(monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"aws:region": "us-east-1"}))
    assert violations(by_name("monthly-budget"), stack_args(_reserved_resources(), config={"maxMonthlyUsd": 1})) == \
        "not applicable"


def test_values_only_known_after_the_update_never_crash_a_policy(monkeypatch):
    """In a preview every property may be unknown: no policy may raise (the SDK would report it as an error)."""
    props = {key: UNKNOWN for key in ("metadataOptions", "blockDeviceMappings", "rootBlockDevice", "kmsKeyArn",
                                      "asyncInferenceConfig", "ingress", "tags", "cidrIpv4", "port", "protocol")}
    from pulumi_policy import ResourceValidationPolicy

    from llmdeploy.policy.guardrails import POLICIES

    for token in (LT, INSTANCE, EPC, SG, LISTENER, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        for policy in POLICIES:
            if isinstance(policy, ResourceValidationPolicy):
                # unknown is not wrong: each is checked again, with known values, before the update creates it
                assert violations(policy, resource_args(token, props)) == [], (policy.name, token)
    unknown_listener = policy_resource(LISTENER, {**props, "defaultActions": [{"type": "forward"}]}, name="l")
    assert violations(by_name("no-public-plain-http"), stack_args([*_web()[:2], unknown_listener])) == []


def test_a_resource_policy_names_its_resource():
    """report_violation(message, urn): a resource policy passes its resource's own urn (AnalyzeDiagnostic.urn)."""
    from .helpers import urn

    found: list[tuple[str, str | None]] = []
    token = "aws:ec2/launchTemplate:LaunchTemplate"
    by_name("imdsv2-required").validate(resource_args(token, {"metadataOptions": {"httpTokens": "optional"}}, name="node"),
                                        lambda message, urn=None: found.append((message, urn)))
    assert [u for _, u in found] == [urn(token, "node")]
