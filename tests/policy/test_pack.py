"""The policy folder is a pack the Pulumi engine can run: started and spoken to the way the engine does it.

`pulumi preview --policy-pack policy` starts Pulumi's `pulumi-analyzer-policy-python` shim, which runs
`<virtualenv>/bin/python -u -m pulumi.policy <engine address> <pack dir>` in the pack folder (the shim's
source: pulumi/pulumi sdk/python/dist/pulumi-analyzer-policy-python), with the stack's config in PULUMI_CONFIG
and PULUMI_STACK / PULUMI_PROJECT / PULUMI_DRY_RUN set (pkg/resource/plugin/analyzer_plugin.go, constructEnv).
The pack prints its gRPC port and serves the Analyzer service (pulumi/proto/analyzer.proto): this test
starts it the same way and calls GetAnalyzerInfo, Analyze and AnalyzeStack over gRPC, as the engine does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc, plugin_pb2

from llmdeploy.infra.offline_preview import config_values
from llmdeploy.policy.guardrails import POLICIES
from llmdeploy.stackconfig import StackConfig

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policy"


def test_the_folder_is_a_python_policy_pack_using_the_projects_virtualenv():
    project = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    program = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    # The shim resolves the virtualenv relative to the pack folder: it must be the program's own.
    venv = project["runtime"]["options"]["virtualenv"]
    assert (PACK / venv).resolve() == (ROOT / program["runtime"]["options"]["virtualenv"]).resolve()
    assert (PACK / "__main__.py").is_file()
    assert any(line.startswith("pulumi-policy") for line in (PACK / "requirements.txt").read_text().splitlines())
    example = json.loads((PACK / "budget.example.json").read_text())
    assert set(example) <= {p.name for p in POLICIES} and example["monthly-budget"]["maxMonthlyUsd"] > 0


def _struct(values: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


@pytest.fixture(scope="module")
def analyzer():
    """The pack, started as pulumi-analyzer-policy-python starts it, for a reserved stack with a $300 budget."""
    config = StackConfig(mode="reserved", instance_type="g4dn.xlarge", instance_count=2, min_instances=2, max_monthly_usd=300)
    env = {"PATH": "/usr/bin:/bin", "PULUMI_CONFIG": json.dumps(config_values(config)), "PULUMI_STACK": "dev",
           "PULUMI_PROJECT": "llmdeploy", "PULUMI_DRY_RUN": "true"}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=PACK, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"the pack did not start: {proc.stderr.read() if proc.poll() is not None else port}"
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_pack_lists_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=60)
    assert info.name == "llmdeploy-guardrails"
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in POLICIES)
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}
    assert isinstance(analyzer.GetPluginInfo(empty_pb2.Empty(), timeout=60), plugin_pb2.PluginInfo)


def test_the_engine_gets_a_mandatory_violation_for_a_bad_resource(analyzer):
    token = "aws:ec2/launchTemplate:LaunchTemplate"
    request = analyzer_pb2.AnalyzeRequest(type=token, name="lt", urn=f"urn:pulumi:dev::llmdeploy::{token}::lt",
                                          properties=_struct({"metadataOptions": {"httpTokens": "optional"}}))
    response = analyzer.Analyze(request, timeout=60)
    found = {d.policyName: d for d in response.diagnostics}
    assert set(found) == {"imdsv2-required", "llmdeploy-tags"}
    assert found["imdsv2-required"].enforcementLevel == analyzer_pb2.MANDATORY
    assert "lt: metadataOptions.httpTokens is 'optional'" in found["imdsv2-required"].message


def test_the_budget_is_read_from_the_stack_config_the_engine_passes(analyzer):
    def resource(token, name, props):
        return analyzer_pb2.AnalyzerResource(type=token, name=name, urn=f"urn:pulumi:dev::llmdeploy::{token}::{name}",
                                             properties=_struct(props))

    resources = [
        resource("aws:ec2/launchTemplate:LaunchTemplate", "serve-template", {"id": "lt-1", "instanceType": "g4dn.xlarge"}),
        resource("aws:autoscaling/group:Group", "serve-asg", {"desiredCapacity": 2, "launchTemplate": {"id": "lt-1"}}),
        resource("aws:lb/loadBalancer:LoadBalancer", "serve-alb", {"internal": True}),
    ]
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=60)
    [diagnostic] = [d for d in response.diagnostics if d.policyName == "monthly-budget"]
    assert "over the budget of $300.00/month (llmdeploy:maxMonthlyUsd in the stack config)" in diagnostic.message
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY


def test_the_ci_example_runs_the_pack_with_its_budget():
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions-pulumi.yml").read_text())
    assert float(workflow["env"]["LLMDEPLOY_MAX_MONTHLY_USD"]) > 0
    pulumi_steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])
                    if s.get("uses", "").startswith("pulumi/actions@")]
    assert {s["with"]["command"] for s in pulumi_steps} == {"preview", "up"}
    for step in pulumi_steps:
        assert step["with"]["policyPacks"] == "policy"
        assert step["with"]["policyPackConfigs"].endswith("/policy-config.json")
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job.get("steps", [])]
    written = [run for run in runs if "policy-config.json" in run]
    assert len(written) == 2 and all('"monthly-budget": {"maxMonthlyUsd": %s}' in run for run in written)
