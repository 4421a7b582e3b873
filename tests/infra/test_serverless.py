"""Serverless: memory and concurrency from the stack, a CPU image, no instances."""

from .mocks import of_type, one, run, run_mode, stack_config


def test_serverless_config_from_the_stack():
    mocks = run_mode("serverless")
    expected = stack_config("serverless")
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert variant["serverlessConfig"] == {"memorySizeInMb": expected.serverless_memory_mb,
                                           "maxConcurrency": expected.serverless_max_concurrency}
    assert "instanceType" not in variant and "initialInstanceCount" not in variant
    assert not of_type(mocks, "aws:appautoscaling/target:Target"), "serverless scales by itself"


def test_provisioned_concurrency_only_when_asked():
    mocks = run(stack_config("serverless", serverless_provisioned_concurrency=2), stack="provisioned")
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert variant["serverlessConfig"]["provisionedConcurrency"] == 2


def test_serverless_runs_a_cpu_image_serving_the_hub_model():
    container = one(run_mode("serverless"), "aws:sagemaker/model:Model").inputs["primaryContainer"]
    assert "-cpu-" in container["image"], "serverless has no GPU: the image must be a CPU build"
    assert container["environment"]["HF_MODEL_ID"] == "google/flan-t5-small"
    assert container["environment"]["HF_TASK"] == "text2text-generation"
