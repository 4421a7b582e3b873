"""Serverless: memory and concurrency from the stack, a CPU image, no instances."""

from llmdeploy.infra.artifact import artifact_key

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


def test_serverless_runs_our_artifact_in_the_lmi_cpu_image():
    """Same handler, same model.tar.gz as every other mode; the CPU build of the pinned LMI version."""
    mocks = run_mode("serverless")
    container = one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]
    assert container["image"].endswith("/djl-inference:0.36.0-cpu-full"), "serverless has no GPU: the LMI CPU build"
    bucket = one(mocks, "aws:s3/bucket:Bucket").outputs["bucket"]
    sha = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2").inputs["sourceHash"]
    # The content-addressed key every mode uses (issue 10: model/<sha256>/model.tar.gz).
    assert container["modelDataUrl"] == f"s3://{bucket}/{artifact_key(sha)}"
    assert not container.get("environment"), "no HF_MODEL_ID / HF_TASK: the handler reads serving.properties"
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert "inferenceAmiVersion" not in variant, "no instances, no host AMI"


def test_serverless_artifact_is_the_same_tarball_as_realtime_but_for_its_batching(tmp_path):
    """One model.tar.gz for every mode given the same settings; batching auto differs by target only in the
    batch lines of serving.properties (serverless: iteration-level on CPUs; realtime on ml.g4dn: static)."""
    import tarfile

    from llmdeploy.infra.offline_preview import run_program

    def build(mode, folder, **settings):
        run_program(stack_config(mode, model="flan-t5-small", **settings), stack=f"same-{mode}",
                    artifact_dir=str(tmp_path / folder))
        return tmp_path / folder / "model.tar.gz"

    pinned = {mode: build(mode, f"{mode}-pinned", batching="continuous").read_bytes() for mode in ("serverless", "realtime")}
    assert pinned["serverless"] == pinned["realtime"], "one model.tar.gz for every mode"

    def members(path):
        with tarfile.open(path) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}

    auto = {mode: members(build(mode, f"{mode}-auto")) for mode in ("serverless", "realtime")}
    assert auto["serverless"].keys() == auto["realtime"].keys()
    differing = {name for name in auto["serverless"] if auto["serverless"][name] != auto["realtime"][name]}
    assert differing == {"serving.properties"}
    lines = {mode: set(auto[mode]["serving.properties"].decode().splitlines()) for mode in auto}
    assert lines["serverless"] - lines["realtime"] == {"option.rolling_batch=llmdeploy", "batch_size=1",
                                                       "option.max_rolling_batch_size=32"}
    assert lines["realtime"] - lines["serverless"] == {"option.rolling_batch=disable", "batch_size=32",
                                                       "max_batch_delay=50"}


def test_serverless_needs_a_version_with_a_cpu_build():
    import pytest

    from llmdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="no CPU build of LMI 0.34.0"):
        run(stack_config("serverless", lmi_version="0.34.0"), stack="serverless-034")


def test_serverless_limits_the_artifact_must_respect():
    """What the CPU image must fit: 10 GB image, 4 MB payload, 60 s, memory sizes; no GPU (catalog limits)."""
    from llmdeploy.catalog import load_catalog

    limits = load_catalog().serverless_limits
    assert (limits.max_image_gb, limits.max_payload_mb, limits.timeout_s, limits.gpu) == (10, 4, 60, False)
    assert stack_config("serverless").serverless_memory_mb in limits.memory_sizes_mb
