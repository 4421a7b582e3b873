"""Realtime: model, endpoint config and endpoint, with invocation-based autoscaling."""

from .mocks import of_type, one, run_mode, stack_config


def test_variant_uses_the_stack_instance_type_and_count():
    mocks = run_mode("realtime")
    cfg = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration")
    (variant,) = cfg.inputs["productionVariants"]
    expected = stack_config("realtime")
    assert variant["instanceType"] == expected.instance_type
    assert variant["initialInstanceCount"] == expected.instance_count, "initial instance count must equal instanceCount"
    assert variant["modelName"] == one(mocks, "aws:sagemaker/model:Model").outputs["name"]
    assert "serverlessConfig" not in variant and "asyncInferenceConfig" not in cfg.inputs
    endpoint = one(mocks, "aws:sagemaker/endpoint:Endpoint")
    assert endpoint.inputs["endpointConfigName"] == cfg.outputs["name"]


def test_realtime_scales_on_invocations_per_instance_between_min_and_count():
    mocks = run_mode("realtime")
    expected = stack_config("realtime")
    target = one(mocks, "aws:appautoscaling/target:Target")
    endpoint = one(mocks, "aws:sagemaker/endpoint:Endpoint")
    assert target.inputs["resourceId"] == f"endpoint/{endpoint.outputs['name']}/variant/AllTraffic"
    assert target.inputs["scalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target.inputs["minCapacity"] == expected.min_instances, "min capacity must be minInstances"
    assert target.inputs["maxCapacity"] == expected.instance_count, "max capacity must be instanceCount"
    policy = one(mocks, "aws:appautoscaling/policy:Policy")
    assert policy.inputs["policyType"] == "TargetTrackingScaling"
    tt = policy.inputs["targetTrackingScalingPolicyConfiguration"]
    assert tt["predefinedMetricSpecification"]["predefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tt["targetValue"] == expected.target_invocations_per_instance
    assert policy.inputs["resourceId"] == target.inputs["resourceId"]
    # Target tracking needs no alarm of ours (the stack's monitoring alarms are test_monitoring.py's).
    assert not [a for a in of_type(mocks, "aws:cloudwatch/metricAlarm:MetricAlarm") if a.name.startswith("serve-")]


def test_outputs_give_an_invoke_command():
    mocks = run_mode("realtime")
    name = one(mocks, "aws:sagemaker/endpoint:Endpoint").outputs["name"]
    assert mocks.outputs["endpoint_name"] == name
    assert mocks.outputs["invoke_command"].startswith(
        f"aws sagemaker-runtime invoke-endpoint --region us-east-1 --endpoint-name {name} ")
