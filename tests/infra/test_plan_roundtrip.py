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
