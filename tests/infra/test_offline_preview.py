"""`llmdeploy preview --offline`: every resource with its settings, priced from its own inputs."""

import json

import pytest
from click.testing import CliRunner

from llmdeploy import costs
from llmdeploy.catalog import load_catalog
from llmdeploy.cli.main import cli
from llmdeploy.infra.offline_preview import offline_preview
from llmdeploy.stackconfig import write_stack_file

from .mocks import stack_config


def _plan_items(mode):
    """What plan sums for the same stack (llmdeploy/plan.py's line items)."""
    c, cat = stack_config(mode), load_catalog()
    if mode == "reserved":
        from llmdeploy.assumptions import load_assumptions

        return costs.reserved_fleet(cat, c.region, c.instance_type, c.instance_count, c.term, load_assumptions().root_volume_gb)
    if mode == "realtime":
        return [costs.sagemaker_instances(cat, c.region, c.instance_type, c.instance_count, 24)]
    if mode == "async":
        return [costs.sagemaker_instances(cat, c.region, c.instance_type, c.instance_count, c.usage_active_hours_per_day),
                costs.kms_key(cat, c.region)]
    return costs.serverless(cat, c.region, c.serverless_memory_mb, c.usage_requests_per_month, c.usage_ms_per_request,
                            c.usage_bytes_per_request)


@pytest.mark.parametrize("mode", ["reserved", "realtime", "async", "serverless"])
def test_preview_prices_each_billable_resource_like_the_plan(mode):
    result = offline_preview(stack_config(mode), stack=f"p-{mode}")
    assert result.monthly_usd == pytest.approx(costs.total(_plan_items(mode)), abs=1e-9)
    billable = {r.type for r in result.resources if r.items}
    expected = {
        "reserved": {"aws:autoscaling/group:Group", "aws:lb/loadBalancer:LoadBalancer"},
        "realtime": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration"},
        "async": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration", "aws:kms/key:Key"},
        "serverless": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration"},
    }[mode]
    assert billable == expected


def test_preview_cli_table_and_json(tmp_path):
    write_stack_file(tmp_path / "Pulumi.dev.yaml", stack_config("reserved"))
    runner = CliRunner()
    table = runner.invoke(cli, ["preview", "--offline", "--stack", "dev", "--project-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "autoscaling:Group" in table.output and "Total: $" in table.output
    data = json.loads(runner.invoke(cli, ["preview", "--offline", "--stack", "dev", "--project-dir", str(tmp_path), "--json"]).stdout)
    assert data["mode"] == "reserved"
    types = {r["type"] for r in data["resources"]}
    assert "aws:ec2/launchTemplate:LaunchTemplate" in types and "aws:lb/loadBalancer:LoadBalancer" in types
    asg = next(r for r in data["resources"] if r["type"] == "aws:autoscaling/group:Group")
    assert asg["settings"]["desiredCapacity"] == 2 and asg["monthly_usd"] > 0
    assert data["monthly_usd"] == round(sum(r["monthly_usd"] for r in data["resources"]), 2) or abs(
        data["monthly_usd"] - sum(r["monthly_usd"] for r in data["resources"])) < 0.02


def test_preview_of_a_missing_stack_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["preview", "--offline", "--stack", "nope", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Pulumi.nope.yaml" in result.stderr and "llmdeploy plan --stack nope" in result.stderr
    assert "Traceback" not in result.output


def test_preview_of_a_bad_stack_file_exits_2(tmp_path):
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  llmdeploy:mode: serverless\n  llmdeploy:serverlessMemoryMb: 5000\n")
    result = CliRunner().invoke(cli, ["preview", "--offline", "--stack", "bad", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2 and "5000" in result.stderr
