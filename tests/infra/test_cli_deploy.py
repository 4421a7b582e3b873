"""`llmdeploy deploy / preview / destroy`: errors as one line with the right exit status."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy.cli import deploy as deploy_mod
from llmdeploy.cli.main import cli
from llmdeploy.stackconfig import write_stack_file

from .mocks import stack_config


@pytest.fixture
def project(tmp_path):
    write_stack_file(tmp_path / "Pulumi.dev.yaml", stack_config("realtime"))
    return tmp_path


@pytest.fixture
def no_pulumi(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("command", ["deploy", "preview"])
def test_without_the_pulumi_cli_exits_1_with_the_install_line(project, no_pulumi, command):
    result = CliRunner().invoke(cli, [command, "--stack", "dev", "--project-dir", str(project)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Pulumi CLI is not installed" in lines[0] and "get.pulumi.com" in lines[0]


def test_destroy_asks_first(project, monkeypatch):
    called = []
    monkeypatch.setattr(deploy_mod, "_select", lambda *a: called.append(a))
    result = CliRunner().invoke(cli, ["destroy", "--stack", "dev", "--project-dir", str(project)], input="n\n")
    assert result.exit_code == 1 and "Delete every resource of stack 'dev'" in result.output
    assert called == [], "destroy must not run without confirmation"


def test_destroy_with_yes_runs(project, monkeypatch):
    from llmdeploy.infra import automation

    seen = {}
    monkeypatch.setattr(deploy_mod, "_select", lambda stack, folder, config: "STACK")
    monkeypatch.setattr(automation, "destroy", lambda stack, on_output=None, remove=False: seen.update(stack=stack, remove=remove))
    result = CliRunner().invoke(cli, ["destroy", "--stack", "dev", "--project-dir", str(project), "--yes", "--remove"])
    assert result.exit_code == 0, result.output
    assert seen == {"stack": "STACK", "remove": True}


def test_deploy_streams_and_prints_the_invoke_command(project, monkeypatch):
    from llmdeploy.infra import automation

    def fake_up(stack, on_output=None):
        on_output("Updating (dev)\n")
        return {"endpoint_name": "serve-endpoint-123", "invoke_command": "aws sagemaker-runtime invoke-endpoint ..."}

    monkeypatch.setattr(deploy_mod, "_select", lambda stack, folder, config: "STACK")
    monkeypatch.setattr(automation, "up", fake_up)
    result = CliRunner().invoke(cli, ["deploy", "--stack", "dev", "--project-dir", str(project)])
    assert result.exit_code == 0, result.output
    assert "Updating (dev)" in result.output and "aws sagemaker-runtime invoke-endpoint" in result.output


def test_missing_stack_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["deploy", "--stack", "dev", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Pulumi.dev.yaml" in result.stderr and "llmdeploy plan --stack dev" in result.stderr


def test_stack_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMDEPLOY_STACK", raising=False)
    result = CliRunner().invoke(cli, ["deploy", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--stack" in result.stderr


def test_plan_writes_where_deploy_reads(tmp_path, monkeypatch):
    """plan --stack and preview/deploy agree on the folder: --project-dir, else the current one."""
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["plan", "--mode", "reserved", "--stack", "dev"]).exit_code == 0
    assert (tmp_path / "Pulumi.dev.yaml").is_file()
    result = CliRunner().invoke(cli, ["preview", "--offline", "--stack", "dev", "--json"])
    assert result.exit_code == 0, result.output
    other = tmp_path / "elsewhere"
    result = CliRunner().invoke(cli, ["preview", "--offline", "--stack", "dev", "--project-dir", str(other)])
    assert result.exit_code == 2 and str(other / "Pulumi.dev.yaml") in result.stderr


def test_help_imports_no_heavy_module():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from llmdeploy.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['deploy', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_aws', 'boto3') or m.startswith('sagemaker')]; "
            "print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
