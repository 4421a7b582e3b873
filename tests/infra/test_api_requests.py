"""Every resource the program registers becomes API requests AWS's service models accept.

Pulumi's mocks accept any value; AWS does not. Each resource is mapped to the request(s) the provider sends
(tests/infra/aws_requests.py) and validated against botocore's model of that API: required members, types,
ranges, lengths, enums and patterns. Covers every mode (with a certificate, an open ingress and an alarm e-mail
subscription for reserved), the monitoring component's alarms (single-metric and metric-math), dashboard and
topic, and a fine-tune cluster.
"""

from __future__ import annotations

import pytest

from .aws_requests import requests_for, validate
from .mocks import MODES, run, run_mode, stack_config

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def _check(resources) -> list[str]:
    by_id = {r.id: r for r in resources}
    problems, unknown = [], []
    for res in resources:
        if not res.custom:
            continue
        requests = requests_for(res, by_id)
        if requests is None:
            unknown.append(res.type)
            continue
        for service, operation, params in requests:
            problems += [f"{res.type} {res.name} -> {operation}: {p}" for p in validate(service, operation, params)]
    assert not unknown, f"resource types with no request mapping (add them to aws_requests.py): {sorted(set(unknown))}"
    return problems


@pytest.mark.parametrize("mode", MODES)
def test_every_request_of_each_mode_validates_against_botocore(mode):
    pytest.importorskip("regex")
    problems = _check(run_mode(mode).resources)
    assert not problems, "AWS would reject these requests:\n" + "\n".join(problems)


def test_reserved_with_tls_and_an_open_ingress_validates():
    mocks = run(stack_config("reserved", certificate_arn=CERT, ingress_cidr="0.0.0.0/0", service_port=9000,
                             alarm_email="oncall@example.com"), stack="api-tls")
    types = {r.type for r in mocks.resources}
    assert {"aws:sns/topicSubscription:TopicSubscription", "aws:cloudwatch/dashboard:Dashboard"} <= types
    problems = _check(mocks.resources)
    assert not problems, "AWS would reject these requests:\n" + "\n".join(problems)


def test_async_kept_warm_validates():
    problems = _check(run(stack_config("async", min_instances=1), stack="api-async1").resources)
    assert not problems, "\n".join(problems)


def test_the_validator_is_not_vacuous():
    assert validate("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "x", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 1}],
        "AsyncInferenceConfig": {"ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1001},
                                 "OutputConfig": {"S3OutputPath": "s3://b/o/"}}})
    assert validate("elbv2", "CreateTargetGroup", {"Name": "tg", "Port": 70000})
    assert validate("sagemaker", "CreateEndpoint", {"EndpointName": "e"})  # EndpointConfigName is required
    assert validate("iam", "CreateRole", {"RoleName": "r", "AssumeRolePolicyDocument": "{}",
                                          "Tags": [{"Key": "owner", "Value": "o(brien)"}]})
    assert validate("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "x", "ProductionVariants": [
        {"VariantName": "v", "ModelName": "m", "InstanceType": "ml.nope.xlarge", "InitialInstanceCount": 1}]})
    # A metric-math alarm's MetricStat needs its Stat and Period; a dashboard needs its body.
    assert validate("cloudwatch", "PutMetricAlarm", {"AlarmName": "a", "EvaluationPeriods": 1, "ComparisonOperator":
                    "GreaterThanThreshold", "Threshold": 1.0, "Metrics": [{"Id": "m", "MetricStat": {
                        "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount"}}}]})
    assert validate("cloudwatch", "PutDashboard", {"DashboardName": "d"})


def _finetune_resources(**overrides):
    """A fine-tune cluster (p4d: 4 EFAs, Elastic IPs) under the same recording mocks as the serving program."""
    import datetime as dt

    from llmdeploy.infra import offline_preview
    from llmdeploy.infra.finetune_cluster import FinetuneCluster, FinetuneClusterArgs

    args = dict(expires_at=dt.datetime(2026, 11, 22, 18, tzinfo=dt.UTC), instance_type="p4d.24xlarge",
                instance_count=2, ssh_cidr="203.0.113.0/24", idle_minutes=30, owner="ana", cost_center="ml-42",
                stack="ft", checkpoint_uri="s3://art-bucket/checkpoints/ft/")
    args.update(overrides)
    mocks = offline_preview.make_mocks()
    offline_preview.run_with_mocks(lambda: FinetuneCluster("ft", FinetuneClusterArgs(**args)).instance_ids, mocks,
                                   stack="ft", config={}, project="llmdeploy-finetune")
    return mocks.resources


def test_fine_tune_cluster_requests_validate():
    pytest.importorskip("regex")
    resources = _finetune_resources()
    assert {r.type for r in resources} >= {"aws:ec2/instance:Instance", "aws:ec2/eip:Eip", "aws:iam/instanceProfile:InstanceProfile"}
    problems = _check(resources)
    assert not problems, "AWS would reject these requests:\n" + "\n".join(problems)
