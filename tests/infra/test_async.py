"""Async: S3 results, SNS notifications, a KMS key, and scaling to and from zero."""

import json

from .mocks import of_type, one, run_mode, stack_config


def _policies(mocks):
    return {p.inputs["policyType"]: p for p in of_type(mocks, "aws:appautoscaling/policy:Policy")}


def test_async_config_writes_results_under_the_artifact_bucket_with_kms_and_sns():
    mocks = run_mode("async")
    bucket = one(mocks, "aws:s3/bucket:Bucket").outputs["bucket"]
    key = one(mocks, "aws:kms/key:Key")
    cfg = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration")
    async_cfg = cfg.inputs["asyncInferenceConfig"]
    out = async_cfg["outputConfig"]
    assert out["s3OutputPath"] == f"s3://{bucket}/async-output/", "results must go to a prefix of the artifact bucket"
    assert out["s3FailurePath"] == f"s3://{bucket}/async-failures/"
    assert out["kmsKeyId"] == key.outputs["arn"], "async results must be encrypted with the stack's KMS key"
    topics = {t.name: t for t in of_type(mocks, "aws:sns/topic:Topic") if t.name.startswith("serve-")}  # not the alarms' topic
    assert set(topics) == {"serve-success", "serve-error"}
    assert out["notificationConfig"]["successTopic"] == topics["serve-success"].outputs["arn"]
    assert out["notificationConfig"]["errorTopic"] == topics["serve-error"].outputs["arn"]
    for topic in topics.values():
        assert topic.inputs.get("kmsMasterKeyId") == key.outputs["arn"], "SNS topics must be KMS-encrypted"
    assert async_cfg["clientConfig"]["maxConcurrentInvocationsPerInstance"] == stack_config("async").async_max_concurrent_invocations


def test_kms_key_rotates():
    assert one(run_mode("async"), "aws:kms/key:Key").inputs["enableKeyRotation"] is True, "the KMS key must rotate"


def test_async_scales_to_zero():
    mocks = run_mode("async")
    target = one(mocks, "aws:appautoscaling/target:Target")
    assert target.inputs["minCapacity"] == 0, "async endpoint must scale to zero (min capacity 0)"
    assert target.inputs["maxCapacity"] == stack_config("async").instance_count
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert variant["initialInstanceCount"] >= 1, "SageMaker creates instance variants with at least one instance"


def test_backlog_target_tracking_on_approximate_backlog_size_per_instance():
    mocks = run_mode("async")
    endpoint = one(mocks, "aws:sagemaker/endpoint:Endpoint").outputs["name"]
    tt = _policies(mocks)["TargetTrackingScaling"].inputs["targetTrackingScalingPolicyConfiguration"]
    spec = tt["customizedMetricSpecification"]
    assert spec["metricName"] == "ApproximateBacklogSizePerInstance"
    assert spec["namespace"] == "AWS/SageMaker"
    assert spec["dimensions"] == [{"name": "EndpointName", "value": endpoint}]


def test_async_endpoint_can_scale_up_from_zero():
    mocks = run_mode("async")
    target = one(mocks, "aws:appautoscaling/target:Target")
    step = _policies(mocks).get("StepScaling")
    assert step is not None, "async endpoint cannot scale up from zero: no step scaling policy"
    assert step.inputs["resourceId"] == target.inputs["resourceId"]
    cfg = step.inputs["stepScalingPolicyConfiguration"]
    assert cfg["adjustmentType"] == "ChangeInCapacity"
    assert any(a["scalingAdjustment"] >= 1 for a in cfg["stepAdjustments"]), "the step policy must add capacity"
    alarms = [a for a in of_type(mocks, "aws:cloudwatch/metricAlarm:MetricAlarm") if a.inputs["metricName"] == "HasBacklogWithoutCapacity"]
    assert alarms, "async endpoint cannot scale up from zero: no HasBacklogWithoutCapacity alarm"
    alarm = alarms[0].inputs
    assert alarm["namespace"] == "AWS/SageMaker"
    assert alarm["dimensions"] == {"EndpointName": one(mocks, "aws:sagemaker/endpoint:Endpoint").outputs["name"]}
    assert alarm["comparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["threshold"] == 1
    assert alarm["evaluationPeriods"] == 1
    assert alarm["alarmActions"] == [step.outputs["arn"]], "async endpoint cannot scale up from zero: alarm not wired to the step policy"


def test_scalable_target_is_built_from_the_endpoint():
    mocks = run_mode("async")
    endpoint = one(mocks, "aws:sagemaker/endpoint:Endpoint").outputs["name"]
    assert one(mocks, "aws:appautoscaling/target:Target").inputs["resourceId"] == f"endpoint/{endpoint}/variant/AllTraffic"


def test_execution_role_can_write_results_publish_and_use_the_key():
    mocks = run_mode("async")
    bucket_arn = one(mocks, "aws:s3/bucket:Bucket").outputs["arn"]
    doc = json.loads(one(mocks, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid["WriteResults"]["Resource"]) == {f"{bucket_arn}/async-output/*", f"{bucket_arn}/async-failures/*"}
    assert f"{bucket_arn}/async-input/*" in by_sid["ReadObjects"]["Resource"], "SageMaker reads async inputs with the role"
    assert set(by_sid["Notify"]["Resource"]) == {t.outputs["arn"] for t in of_type(mocks, "aws:sns/topic:Topic")
                                                 if t.name.startswith("serve-")}, "the endpoint publishes to its own two topics only"
    assert by_sid["UseOutputKey"]["Resource"] == [one(mocks, "aws:kms/key:Key").outputs["arn"]]


def test_outputs_give_an_async_invoke_command_with_an_s3_input():
    mocks = run_mode("async")
    bucket = one(mocks, "aws:s3/bucket:Bucket").outputs["bucket"]
    command = mocks.outputs["invoke_command"]
    assert "aws sagemaker-runtime invoke-endpoint-async" in command
    assert f"--input-location s3://{bucket}/async-input/request.json" in command
