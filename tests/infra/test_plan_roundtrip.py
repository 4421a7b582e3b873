"""plan -> stack config -> program -> resources, and the offline preview's total equals the plan's.

Uses the `llmdeploy plan` CLI contract: ``plan --mode X --stack NAME --project-dir DIR --json``
writes DIR/Pulumi.NAME.yaml and prints ``choice`` = {mode, instance_type, instance_count, monthly_usd, ...}.
"""

import json

import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli
from llmdeploy.stackconfig import read_stack_file, stack_file

from .mocks import of_type, one, run

# Serverless cannot hold FLAN-T5-XL (16 GB > 6 GB): plan it for FLAN-T5-small.
PLAN_ARGS = {
    "reserved": [],
    "realtime": [],
    "async": [],
    "serverless": ["--model", "flan-t5-small", "--requests-per-day", "2000"],
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """{mode: (choice, StackConfig, project dir)} from the real plan command."""
    out = {}
    runner = CliRunner()
    for mode, extra in PLAN_ARGS.items():
        folder = tmp_path_factory.mktemp(f"plan-{mode}")
        result = runner.invoke(cli, ["plan", "--mode", mode, "--stack", f"t-{mode}", "--project-dir", str(folder), "--json", *extra])
        assert result.exit_code == 0, result.output
        choice = json.loads(result.stdout)["choice"]
        out[mode] = (choice, read_stack_file(stack_file(folder, f"t-{mode}")), folder)
    return out


def _instances(mocks, mode):
    if mode == "reserved":
        asg = one(mocks, "aws:autoscaling/group:Group")
        template = one(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
        return template.inputs["instanceType"], asg.inputs["desiredCapacity"]
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    return variant.get("instanceType"), variant.get("initialInstanceCount")


@pytest.mark.parametrize("mode", list(PLAN_ARGS))
def test_program_builds_what_the_plan_chose(planned, mode):
    choice, config, _ = planned[mode]
    assert choice["mode"] == mode and choice["feasible"], choice
    mocks = run(config, stack=f"t-{mode}")
    assert mocks.outputs["mode"] == choice["mode"], "the program must deploy the plan's mode"
    instance_type, count = _instances(mocks, mode)
    if mode == "serverless":
        assert instance_type is None and not of_type(mocks, "aws:autoscaling/group:Group")
        (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
        assert variant["serverlessConfig"]["memorySizeInMb"] == choice["serverless_memory_mb"]
    else:
        assert instance_type == choice["instance_type"], "the program must deploy the plan's instance type"
        assert count == choice["instance_count"], "the program must deploy the plan's instance count"


@pytest.mark.parametrize("mode", list(PLAN_ARGS))
def test_offline_preview_total_equals_the_plan(planned, mode):
    from llmdeploy import budget
    from llmdeploy.catalog import load_catalog

    choice, config, folder = planned[mode]
    assert budget.monthly_estimate(config, load_catalog()) == pytest.approx(choice["monthly_usd"], abs=0.005), (
        "the budget the program checks must be plan's figure")
    result = CliRunner().invoke(cli, ["preview", "--offline", "--stack", f"t-{mode}", "--project-dir", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert preview["monthly_usd"] == pytest.approx(choice["monthly_usd"], abs=0.005), (
        f"offline preview ({preview['monthly_usd']}) must price the stack like plan ({choice['monthly_usd']})")
    billable = [r for r in preview["resources"] if r["monthly_usd"]]
    assert billable, "the preview must price the billable resources"
    for r in preview["resources"]:
        assert set(r) >= {"type", "name", "settings", "monthly_usd"}


# -- plan's batch is the batch the deployed server runs ------------------------------------------------------------


def _served(config, stack: str, tmp_path):
    """(mocks, serving.properties as the handler parses them, the raw properties) of the archive the program
    uploads for ``config``."""
    import tarfile

    from llmdeploy.handlers.serving_config import parse_properties

    mocks = run(config, stack=stack, artifact_dir=str(tmp_path))
    source = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2").inputs["source"]
    with tarfile.open(source.path) as tar:
        text = tar.extractfile("serving.properties").read().decode()
    raw = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return mocks, parse_properties(raw), raw


@pytest.mark.parametrize("mode", list(PLAN_ARGS))
def test_the_packaged_batch_is_the_plan_s(planned, mode, tmp_path):
    """plan --stack -> Pulumi.NAME.yaml -> the program under mocks -> model.tar.gz: the handler reads plan's batch
    where DJL takes it, and caps that let a request of the planned size through. batching auto (plan leaves it
    there): on a GPU instance type static batches (plan's batch is DJL's batch_size, the batches plan's speed model
    times), on serverless (CPUs) the rolling batch (option.max_rolling_batch_size)."""
    from llmdeploy.catalog import instance, load_catalog

    choice, config, _ = planned[mode]
    assert config.max_batch_size == choice["batch_size"] >= 1 and config.batching == "auto"
    mocks, served, raw = _served(config, f"t-{mode}", tmp_path)
    if mode == "serverless":
        assert served.rolling_batch and raw["option.max_rolling_batch_size"] == str(choice["batch_size"])
        assert raw["batch_size"] == "1", "DJL's own batch stays 1 under the rolling batch"
    else:
        assert instance(load_catalog(), choice["instance_type"]).gpu_count >= 1, "plan picks GPU types for flan-t5-xl"
        assert not served.rolling_batch and raw["option.rolling_batch"] == "disable"
        assert raw["batch_size"] == str(choice["batch_size"]) and "option.max_rolling_batch_size" not in raw
        assert served.max_batch_delay_ms == config.max_batch_delay_ms
    assert served.max_batch_size == choice["batch_size"], "the server must decode plan's batch together"
    assert served.max_new_tokens_cap >= 64 and served.max_request_tokens >= 64, "plan's requests (64 tokens) pass"
    if mode == "async":  # SageMaker hands each instance as many requests at once as its batch holds
        (cfg,) = [r.inputs["asyncInferenceConfig"] for r in of_type(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration")]
        assert cfg["clientConfig"]["maxConcurrentInvocationsPerInstance"] == choice["batch_size"]


def test_batching_continuous_in_the_stack_file_keeps_the_rolling_batch_on_a_gpu(planned, tmp_path):
    """A user who sets batching: continuous gets iteration-level batching on the GPU, and plan keeps the key."""
    import yaml

    choice, _, folder = planned["realtime"]
    path = stack_file(folder, "t-realtime")
    doc = yaml.safe_load(path.read_text())
    assert doc["config"]["llmdeploy:batching"] == "auto", "a new stack file holds every setting, batching auto"
    doc["config"]["llmdeploy:batching"] = "continuous"
    path.write_text(yaml.safe_dump(doc))
    again = CliRunner().invoke(cli, ["plan", "--mode", "realtime", "--stack", "t-realtime", "--project-dir",
                                     str(folder), "--json", "--force"])
    assert again.exit_code == 0, again.output
    config = read_stack_file(path)
    assert config.batching == "continuous", "plan keeps the user's batching"
    _, served, raw = _served(config, "t-realtime", tmp_path)
    assert served.rolling_batch and raw["option.rolling_batch"] == "llmdeploy"
    assert raw["option.max_rolling_batch_size"] == str(choice["batch_size"]) and raw["batch_size"] == "1"
    doc["config"]["llmdeploy:batching"] = "auto"  # the module's fixture is shared: put it back
    path.write_text(yaml.safe_dump(doc))


def test_busy_traffic_and_static_batches_get_the_plan_s_batch_too(tmp_path):
    """At high traffic plan picks a larger batch; with the user's backend ctranslate2 (static batches, a key plan
    keeps) the same batch is DJL's batch_size. Long outputs raise the token caps with them."""
    import yaml

    runner = CliRunner()
    args = ["plan", "--mode", "reserved", "--stack", "busy", "--project-dir", str(tmp_path), "--json",
            "--requests-per-day", "2000000", "--output-tokens", "300", "--latency-target", "30"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["choice"]
    path = stack_file(tmp_path, "busy")
    doc = yaml.safe_load(path.read_text())
    assert doc["config"]["llmdeploy:maxBatchSize"] == choice["batch_size"] > 4
    doc["config"]["llmdeploy:backend"] = "ctranslate2"
    path.write_text(yaml.safe_dump(doc))
    again = runner.invoke(cli, [*args, "--force"])
    assert again.exit_code == 0, again.output
    config = read_stack_file(path)
    assert config.backend == "ctranslate2", "plan keeps the user's backend"
    _, served, raw = _served(config, "busy", tmp_path / "build")
    assert not served.rolling_batch and raw["batch_size"] == str(choice["batch_size"])
    assert served.max_batch_size == choice["batch_size"] and "option.max_rolling_batch_size" not in raw
    assert served.max_new_tokens_cap == 300 and served.max_request_tokens >= 300
