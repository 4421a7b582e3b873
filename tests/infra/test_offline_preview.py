"""`llmdeploy preview --offline`: every resource with its settings, priced from its own inputs."""

import json

import pytest
from click.testing import CliRunner

from llmdeploy import costs
from llmdeploy.catalog import load_catalog
from llmdeploy.cli.main import cli
from llmdeploy.infra.offline_preview import offline_preview
from llmdeploy.plan import planned_line_items
from llmdeploy.stackconfig import write_stack_file

from .mocks import stack_config


def _plan_items(mode):
    """What plan sums for the same stack (llmdeploy/plan.py's line items, priced from the stack config)."""
    return planned_line_items(stack_config(mode), load_catalog())


@pytest.mark.parametrize("mode", ["reserved", "realtime", "async", "serverless"])
def test_preview_prices_each_billable_resource_like_the_plan(mode):
    result = offline_preview(stack_config(mode), stack=f"p-{mode}")
    assert result.monthly_usd == pytest.approx(costs.total(_plan_items(mode)), abs=1e-9)
    billable = {r.type for r in result.resources if r.items}
    cloudwatch = {"aws:cloudwatch/metricAlarm:MetricAlarm", "aws:cloudwatch/dashboard:Dashboard"}
    expected = {
        "reserved": {"aws:autoscaling/group:Group", "aws:lb/loadBalancer:LoadBalancer"},
        "realtime": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration"},
        "async": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration", "aws:kms/key:Key"},
        "serverless": {"aws:sagemaker/endpointConfiguration:EndpointConfiguration"},
    }[mode] | cloudwatch
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


def test_a_run_leaves_no_event_loop_open_and_no_thread_behind():
    """The cause of the old "Exception ignored in BaseEventLoop.__del__ ... Invalid file descriptor" at exit:
    Pulumi's mock monitor opens an event loop in each executor thread and nothing closed them, so the garbage
    collector finalized them, and their self-pipe sockets, in arbitrary order. Every loop is closed now."""
    import asyncio
    import gc
    import threading

    before = {id(o) for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)}
    offline_preview(stack_config("async"), stack="loops")
    gc.collect()
    opened = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and id(o) not in before]
    assert [loop for loop in opened if not loop.is_closed()] == []
    assert not [t for t in threading.enumerate() if t.name.startswith("llmdeploy-")]


def test_the_cli_exits_without_an_unclosed_event_loop(tmp_path):
    """In Python's development mode an event loop finalized while still open is a ResourceWarning: none at exit."""
    import subprocess
    import sys

    write_stack_file(tmp_path / "Pulumi.dev.yaml", stack_config("realtime"))
    run = subprocess.run([sys.executable, "-X", "dev", "-W", "ignore::DeprecationWarning", "-m", "llmdeploy.cli.main",
                          "preview", "--offline", "--stack", "dev", "--project-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Total: $" in run.stdout
    assert "unclosed event loop" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("setting", [{"ingress_cidr": "203.0.113.0/24"},
                                     {"certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/"
                                                         "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}])
def test_an_internet_facing_load_balancer_is_priced_with_its_public_addresses(setting):
    """Issue 10 made the reserved ALB internal by default (no public IPv4); ingressCidr or certificateArn make it
    internet-facing: the program registers internal=False, and preview and plan both add its addresses."""
    from dataclasses import replace

    config = replace(stack_config("reserved"), **setting)
    result = offline_preview(config, stack="p-public")
    alb = next(r for r in result.resources if r.type == "aws:lb/loadBalancer:LoadBalancer")
    assert alb.settings["internal"] is False and [i.kind for i in alb.items] == ["load-balancer", "public-ipv4"]
    assert result.monthly_usd == pytest.approx(costs.total(planned_line_items(config, load_catalog())), abs=1e-9)
    internal = offline_preview(stack_config("reserved"), stack="p-internal")
    assert next(r for r in internal.resources if r.type == "aws:lb/loadBalancer:LoadBalancer").settings["internal"] is True
    assert result.monthly_usd - internal.monthly_usd == pytest.approx(alb.items[1].monthly_usd)


def test_plan_stack_says_what_a_kept_ingress_cidr_adds_and_preview_agrees(tmp_path):
    runner = CliRunner()
    args = ["plan", "--mode", "reserved", "--stack", "dev", "--project-dir", str(tmp_path)]
    assert runner.invoke(cli, args).exit_code == 0
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("llmdeploy:ingressCidr: ''", "llmdeploy:ingressCidr: 203.0.113.0/24"))
    text = runner.invoke(cli, [*args, "--force"])
    assert text.exit_code == 0 and "public IPv4 addresses" in text.output and "as written costs" in text.output
    data = json.loads(runner.invoke(cli, [*args, "--json", "--force"]).stdout)
    assert [i["kind"] for i in data["stack_extra_line_items"]] == ["public-ipv4"]
    assert data["stack_monthly_usd"] == pytest.approx(data["choice"]["monthly_usd"] + data["stack_extra_line_items"][0]["monthly_usd"],
                                                      abs=0.011)
    preview = json.loads(runner.invoke(cli, ["preview", "--offline", "--stack", "dev", "--project-dir", str(tmp_path), "--json"]).stdout)
    assert preview["monthly_usd"] == data["stack_monthly_usd"]


def test_the_mocks_offer_every_gpu_family_the_catalog_prices():
    """plan may pick any priced type (a g6.xlarge once speed is calibrated): preview must be able to place it."""
    from llmdeploy.infra.offline_preview import FAKE_OFFERINGS

    families = {itype.split(".")[0] for (_, itype) in load_catalog().ec2}
    assert families <= set(FAKE_OFFERINGS), f"no fake offering for {families - set(FAKE_OFFERINGS)}"
