"""`llmdeploy finetune up|status|down` with EC2 on a moto server and Pulumi stubbed out."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types

import aws_scenario as sc
import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli
from llmdeploy.infra import automation


def run_cli(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


class FakePulumi:
    """Stands in for the Automation API calls (the CLI cannot be installed here)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.outputs = {"instance_ids": ["i-aaa", "i-bbb"], "placement_group_name": "finetune-pg"}

    def install(self, monkeypatch):
        monkeypatch.setattr(automation, "pulumi_cli", lambda: "/usr/local/bin/pulumi")
        monkeypatch.setattr(automation, "select_stack", self.select_stack)
        monkeypatch.setattr(automation, "up", self.up)
        monkeypatch.setattr(automation, "destroy", self.destroy)
        return self

    def select_stack(self, name, *, project_name, program=None, work_dir=None, config=None):
        self.calls.append(("select", name, project_name, program, config))
        return types.SimpleNamespace(name=name)

    def up(self, stack, on_output=None):
        self.calls.append(("up", stack.name))
        return self.outputs

    def destroy(self, stack, on_output=None, remove=False):
        self.calls.append(("destroy", stack.name, remove))


@pytest.fixture
def pulumi_stub(monkeypatch):
    return FakePulumi().install(monkeypatch)


# -- up ---------------------------------------------------------------------------------------------


def test_up_prints_expiry_and_cost_then_creates(aws, pulumi_stub):
    result = run_cli("finetune", "up", "--instances", "2", "--ttl", "6h", "--idle", "30m", "--ssh-cidr", "203.0.113.7/32",
                     "--owner", "ana", "--stack", "ft1", "--yes")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2 x p4d.24xlarge (16 GPUs, EFA)" in out
    assert "$32.77/hour each, $65.55/hour in all" in out
    assert "Expires:" in out and "(in 6h)" in out and "at most $393.27" in out
    assert "after 30 min with GPUs idle" in out
    kinds = [c[0] for c in pulumi_stub.calls]
    assert kinds == ["select", "up"]
    _, name, project, program, config = pulumi_stub.calls[0]
    assert (name, project) == ("ft1", "llmdeploy-finetune")
    assert config["aws:region"] == "us-east-1" and config["llmdeploy:expires-at"].endswith("Z")
    assert callable(program), "the component is run as an inline program"
    assert "i-aaa, i-bbb" in out


def test_up_without_yes_asks(aws, pulumi_stub):
    result = run_cli("finetune", "up", "--instances", "1", "--ttl", "1h", input="n\n")
    assert result.exit_code == 1 and "Create it?" in result.output
    assert pulumi_stub.calls == [], "declining creates nothing"


def test_up_sizes_from_model(aws, pulumi_stub, monkeypatch):
    models = types.ModuleType("llmdeploy.models")
    models.load_model_config = lambda name: types.SimpleNamespace(name=name)
    sizing = types.ModuleType("llmdeploy.sizing")
    sizing.finetune_memory = lambda model, precision="bf16-mixed": types.SimpleNamespace(total_bytes=1.2e12)
    sizing.gpus_for_finetune = lambda ft, gpu: 20
    monkeypatch.setitem(sys.modules, "llmdeploy.models", models)
    monkeypatch.setitem(sys.modules, "llmdeploy.sizing", sizing)
    result = run_cli("finetune", "up", "--model", "flan-t5-xxl", "--ttl", "2h", "--yes")
    assert result.exit_code == 0, result.output
    assert "3 x p4d.24xlarge (24 GPUs, EFA, sized for flan-t5-xxl)" in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--instances", "1", "--ttl", "6 hours"], "--ttl '6 hours' is not a duration. Use a whole number of days, hours and/or minutes"),
        (["--instances", "1", "--ttl", "0h"], "--ttl '0h' is zero"),
        (["--instances", "1", "--ttl", "-1h"], "--ttl '-1h' is not a duration"),
        (["--instances", "1", "--ttl", "6h", "--idle", "soon"], "--idle 'soon' is not a duration"),
        (["--instances", "0", "--ttl", "6h"], "--instances 0 is not valid: a cluster needs at least 1 instance."),
        (["--instances", "-3", "--ttl", "6h"], "--instances -3 is not valid"),
        (["--instances", "1", "--ttl", "6h", "--instance-type", "m5.large"], "(m5.large has no GPU)"),
        (["--instances", "1", "--ttl", "6h", "--instance-type", "p4d.24xlarg"], "Did you mean 'p4d.24xlarge'?"),
        (["--instances", "1", "--ttl", "6h", "--region", "us-west-2"], "unknown GPU instance type in us-west-2 'p4d.24xlarge'"),
        (["--instances", "1", "--ttl", "6h", "--region", "us-east-l"], "unknown region 'us-east-l'. Did you mean 'us-east-1'?"),
        (["--instances", "1", "--ttl", "6h", "--ssh-cidr", "0.0.0.0/0"], "--ssh-cidr '0.0.0.0/0' opens SSH to the whole internet; refused."),
        (["--instances", "1", "--ttl", "6h", "--ssh-cidr", "::/0"], "opens SSH to the whole internet"),
        (["--ttl", "6h"], "pass --instances N, or --model NAME"),
    ],
)
def test_up_bad_input_one_line_exit_2_nothing_created(aws, boto, pulumi_stub, args, needle):
    result = run_cli("finetune", "up", *args, "--yes")
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert pulumi_stub.calls == [], "nothing is created on bad input"
    assert sc.live_instances(boto("ec2")) == set()


def test_up_without_pulumi_cli_says_how_to_install(aws, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = run_cli("finetune", "up", "--instances", "1", "--ttl", "6h", "--yes")
    assert result.exit_code == 1
    assert "the Pulumi CLI is not installed (no 'pulumi' on PATH). Install it: curl -fsSL https://get.pulumi.com | sh" in result.stderr


# -- status -------------------------------------------------------------------------------------------


def _launch_time(ec2, iid) -> dt.datetime:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["LaunchTime"]


def test_status_reads_ec2_by_tags(aws, boto):
    ec2 = boto("ec2")
    ours = sc.instance(ec2, sc.managed(sc.FUTURE, stack="ft1"), itype="p4d.24xlarge", count=2)
    sc.instance(ec2, sc.managed(sc.FUTURE, stack="other"), itype="p4d.24xlarge")
    sc.instance(ec2, {"llmdeploy:stack": "ft1"})  # not managed: not ours to report
    launched = _launch_time(ec2, ours[0])
    now = launched + dt.timedelta(hours=2)
    result = run_cli("finetune", "status", "--stack", "ft1", "--json", "--now", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {i["instance_id"] for i in doc["instances"]} == set(ours)
    row = doc["instances"][0]
    assert row["state"] == "running" and row["age_s"] == pytest.approx(7200, abs=2)
    assert row["accrued_usd"] == pytest.approx(2 * 32.7726, abs=0.05), "accrued = running time x on-demand price"
    # moto stamps each instance's launch time itself: the two can be a second apart
    running_s = sum((now - _launch_time(ec2, i)).total_seconds() for i in ours)
    assert doc["accrued_usd"] == pytest.approx(running_s / 3600 * 32.7726, abs=0.005)
    assert doc["accrued_usd"] == pytest.approx(4 * 32.7726, abs=0.1)
    assert doc["usd_per_hour"] == pytest.approx(2 * 32.7726)
    expected_left = (dt.datetime(2026, 11, 22, 20, tzinfo=dt.UTC) - now).total_seconds()
    assert row["time_left_s"] == pytest.approx(expected_left, abs=2)

    table = run_cli("finetune", "status", "--stack", "ft1", "--now", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert table.exit_code == 0 and "2 instance(s)" in table.stdout
    assert f"${doc['accrued_usd']:,.2f}" in table.stdout  # $131.09, or $131.08 when they were a second apart


def test_status_empty(aws):
    result = run_cli("finetune", "status", "--stack", "nothing-here")
    assert result.exit_code == 0 and "No llmdeploy instances of stack 'nothing-here'" in result.stdout


# -- down ---------------------------------------------------------------------------------------------


def test_down_destroys_then_terminates_only_managed_leftovers(aws, boto, pulumi_stub):
    ec2 = boto("ec2")
    leftovers = sc.instance(ec2, sc.managed(sc.FUTURE, stack="ft1"), itype="p4d.24xlarge", count=2)
    stranger = sc.instance(ec2, {"llmdeploy:stack": "ft1", "owner": "someone"})  # stack tag but not managed
    other = sc.instance(ec2, sc.managed(sc.FUTURE, stack="ft2"))
    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert ("destroy", "ft1", True) in pulumi_stub.calls, "the stack is destroyed through the Automation API"
    live = sc.live_instances(ec2)
    assert not set(leftovers) & live, "managed instances of the stack still running after destroy are terminated"
    assert stranger[0] in live, "an instance without the managed tag is never terminated"
    assert other[0] in live, "other stacks are untouched"
    assert all(f"Terminated leftover instance {i}" in result.stdout for i in leftovers)
    assert f"Left alone {stranger[0]}" in result.stderr
    assert "Final accrued cost" in result.stdout
    assert result.exit_code == 1, "something of the stack is still running: exit 1"


def test_down_clean(aws, boto, pulumi_stub):
    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert result.exit_code == 0, result.output
    assert "no instance of stack ft1 left running" in result.stdout
    assert "Final accrued cost (EC2 on-demand, catalog prices): $0.00." in result.stdout


def test_down_without_pulumi_still_terminates_and_says_how_to_install(aws, boto, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ec2 = boto("ec2")
    ours = sc.instance(ec2, sc.managed(sc.FUTURE, stack="ft1"))
    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert result.exit_code == 1
    assert ours[0] not in sc.live_instances(ec2), "instances are terminated even when the stack cannot be destroyed"
    assert "get.pulumi.com" in result.stderr


def test_down_asks_first(aws, boto, pulumi_stub):
    ours = sc.instance(boto("ec2"), sc.managed(sc.FUTURE, stack="ft1"))
    result = run_cli("finetune", "down", "--stack", "ft1", input="n\n")
    assert result.exit_code == 1 and pulumi_stub.calls == []
    assert ours[0] in sc.live_instances(boto("ec2"))


# -- public IPv4 ----------------------------------------------------------------------------------------


@pytest.fixture
def captured_args(monkeypatch):
    """The FinetuneClusterArgs `finetune up` hands to the inline program."""
    from llmdeploy.infra import finetune_cluster

    seen: list = []

    def program(args, name="finetune"):
        seen.append(args)
        return lambda: None

    monkeypatch.setattr(finetune_cluster, "program", program)
    return seen


def test_up_no_public_ip_flag_reaches_the_cluster(aws, pulumi_stub, captured_args):
    result = run_cli("finetune", "up", "--instances", "1", "--ttl", "2h", "--subnet", "subnet-0abc", "--no-public-ip", "--yes")
    assert result.exit_code == 0, result.output
    assert captured_args[0].public_ip is False, "--no-public-ip: no public IP, no Elastic IP (private subnet behind a NAT gateway)"
    assert "Public IP: none (--no-public-ip)" in result.stdout and "NAT gateway" in result.stdout


def test_up_public_ip_defaults_to_the_subnet(aws, pulumi_stub, captured_args):
    pulumi_stub.outputs["public_ips"] = ["198.51.100.7", None]
    result = run_cli("finetune", "up", "--instances", "1", "--ttl", "2h", "--yes")
    assert result.exit_code == 0, result.output
    assert captured_args[0].public_ip is None, "without the flag the subnet decides (a default VPC's auto-assigns)"
    assert "Public IP: AWS's own auto-assigned one" in result.stdout, "the fake catalog's p4d has one network card: one interface"
    assert "Public IPs: 198.51.100.7." in result.stdout


def test_up_plan_mentions_elastic_ips_for_multi_interface_nodes(aws, pulumi_stub, captured_args, monkeypatch):
    import dataclasses

    from llmdeploy import finetune as ft

    real = ft.plan_cluster  # the fake catalog's p4d states no network cards: pretend it has p4d's 4
    monkeypatch.setattr(ft, "plan_cluster", lambda *a, **kw: dataclasses.replace(real(*a, **kw), network_cards=4))
    result = run_cli("finetune", "up", "--instances", "2", "--ttl", "2h", "--public-ip", "--yes")
    assert result.exit_code == 0, result.output
    assert captured_args[0].public_ip is True
    out = result.stdout
    assert "one Elastic IP per node (4 network interfaces: AWS auto-assigns none)" in out, "the plan says Elastic IPs will be allocated"
    assert "billed hourly while allocated" in out, "the plan says Elastic IPs cost money while allocated"


_address = sc.address


def _allocated(ec2) -> set[str]:
    return set(sc.addresses(ec2))


def _fine_tune(stack: str, **extra: str) -> dict[str, str]:
    return sc.managed(sc.FUTURE, stack=stack, **{"llmdeploy:purpose": "fine-tune", **extra})


def test_down_releases_only_managed_elastic_ips_of_the_stack(aws, boto, pulumi_stub):
    ec2 = boto("ec2")
    (node,) = sc.instance(ec2, _fine_tune("ft1"), itype="p4d.24xlarge")
    ours = _address(ec2, _fine_tune("ft1"))
    associated = _address(ec2, _fine_tune("ft1"))
    ec2.associate_address(AllocationId=associated, InstanceId=node)
    stranger = _address(ec2, {"llmdeploy:stack": "ft1", "llmdeploy:purpose": "fine-tune"})  # stack tag, not managed
    other_stack = _address(ec2, _fine_tune("ft2"))
    inference = _address(ec2, sc.managed(sc.FUTURE, stack="ft1"))  # managed, same stack name, not a fine-tune resource
    untagged = _address(ec2, None)

    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert result.exit_code == 0, result.output
    left = _allocated(ec2)
    assert not {ours, associated} & left, "managed Elastic IPs of the stack are released (they are billed while allocated)"
    assert {stranger, other_stack, inference, untagged} <= left, (
        "only Elastic IPs tagged managed-by=llmdeploy AND this stack (fine-tune) are ever released")
    assert "Released leftover Elastic IP" in result.stdout and ours in result.stdout and associated in result.stdout


def test_down_without_pulumi_still_releases_elastic_ips(aws, boto, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ec2 = boto("ec2")
    ours = _address(ec2, _fine_tune("ft1"))
    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert result.exit_code == 1, "the stack could not be destroyed: exit 1"
    assert ours not in _allocated(ec2), "without the Pulumi CLI the leftover check still releases the stack's Elastic IPs"


def test_down_reports_an_elastic_ip_it_could_not_release(aws, boto, pulumi_stub, monkeypatch):
    from botocore.exceptions import ClientError

    from llmdeploy.aws import clients

    ours = _address(boto("ec2"), _fine_tune("ft1"))
    real_client = clients.client

    class Refusing:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def release_address(self, **kw):
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}, "ReleaseAddress")

    monkeypatch.setattr(clients, "client", lambda service, region: Refusing(real_client(service, region)) if service == "ec2" else real_client(service, region))
    result = run_cli("finetune", "down", "--stack", "ft1", "--yes")
    assert result.exit_code == 1, "an Elastic IP left allocated is a failure: it is still billed"
    assert f"Could not release Elastic IP {ours}: UnauthorizedOperation: not allowed" in result.stderr
    assert ours in _allocated(boto("ec2"))


# -- the user config file reaches the subcommands (issue 12) -----------------------------------------------


def test_up_plans_and_deploys_in_the_user_config_files_region(aws, pulumi_stub, captured_args, tmp_path, monkeypatch):
    """A top-level `region` reaches `finetune up` as it reaches `plan` (it used to plan in us-east-1); an owner from
    LLMDEPLOY_OWNER still beats the file's (it used to be read inside the built-in default, below the file)."""
    config = tmp_path / "config.toml"
    config.write_text('region = "us-west-2"\nowner = "from-file"\n[finetune]\nstack = "ft-file"\n'
                      '[finetune.up]\ninstance_type = "g4dn.xlarge"\n')
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(config))
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # the moto fixture's: an environment variable ranks above the file
    monkeypatch.setenv("LLMDEPLOY_OWNER", "from-env")
    result = run_cli("finetune", "up", "--instances", "1", "--ttl", "2h", "--yes")
    assert result.exit_code == 0, result.output
    assert "Stack ft-file in us-west-2: 1 x g4dn.xlarge" in result.stdout
    _, name, _, _, config_values = pulumi_stub.calls[0]
    assert (name, config_values["aws:region"]) == ("ft-file", "us-west-2")
    assert captured_args[0].owner == "from-env" and captured_args[0].stack == "ft-file"
