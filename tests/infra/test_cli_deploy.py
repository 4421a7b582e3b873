"""`llmdeploy deploy / preview / destroy`: show, then ask; budgets; errors as one line with the right exit status.

Pulumi itself is the stand-in of tests/infra/fake_pulumi.py (the Automation API's entry points, with the
SDK's own result and error classes; up and preview run the real program under mocks). The question is
asked on a real pseudo-terminal in test_deploy_answered_no_on_a_terminal_creates_nothing.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy.cli import deploy as deploy_mod
from llmdeploy.cli.main import cli
from llmdeploy.stackconfig import write_stack_file

from .fake_pulumi import FakeBackend
from .mocks import stack_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    """A folder with Pulumi.dev.yaml as plan writes it (realtime, 3 x ml.g4dn.xlarge, with recorded traffic)."""
    result = CliRunner().invoke(cli, ["plan", "--mode", "realtime", "--stack", "dev", "--project-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.fixture
def backend(tmp_path, monkeypatch):
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'state'}")
    fake = FakeBackend(tmp_path / "fake-bin")
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def terminal(monkeypatch):
    """Answers come from CliRunner's input, as if typed on a terminal (the real one: see the pty test)."""
    monkeypatch.setattr(deploy_mod, "_can_ask", lambda: True)


@pytest.fixture
def no_pulumi(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


# -- deploy: show, then ask ----------------------------------------------------------------------------------


def test_deploy_answered_no_shows_the_comparison_and_the_priced_resources_and_creates_nothing(project, backend, terminal):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, input="n\n")
    assert result.exit_code == 1, result.output
    out = result.output
    # 1. plan's comparison for the recorded traffic: the table of every option, break-even and recommendation
    assert "Self-hosted or managed?" in out
    for label in ("reserved (on-demand)", "reserved (1-year RI)", "reserved (3-year RI)", "realtime", "async", "serverless"):
        assert label in out, f"the comparison lists {label}"
    assert "Recommended:" in out and "Break-even against self-hosting:" in out and "Choice (--mode realtime)" in out
    assert "Cheapest option by traffic" in out, "the whole range, as plan prints it (issue 11)"
    # 2. the resources it will create, priced, with the monthly total
    assert "sagemaker:EndpointConfiguration" in out and "Total: $" in out
    # 3. no running stack: said so; then the question, and the answer kept
    assert "is not deployed yet" in out
    assert "Deploy stack 'dev' (realtime, us-east-1) for about $" in out
    assert "Not deployed: nothing was created or changed." in out
    assert backend.names() == ["select_stack"], "only a look-up: no stack created, nothing previewed or deployed"
    assert "dev" not in backend.stacks


def test_deploy_prices_the_stack_like_plan(project, backend, terminal):
    plan = json.loads(_invoke("plan", "--mode", "realtime", "--json").stdout)
    out = _invoke("deploy", "--stack", "dev", "--project-dir", project, input="n\n").output
    assert f"for about ${plan['choice']['monthly_usd']:,.2f}/month?" in out, "deploy asks about plan's own figure"


def test_deploy_answered_yes_creates_the_stack_and_prints_its_outputs(project, backend, terminal):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, input="y\n")
    assert result.exit_code == 0, result.output
    assert backend.names() == ["select_stack", "create_or_select_stack", "up"]
    outputs = backend.stacks["dev"]
    assert f"monthly_estimate_usd: {outputs['monthly_estimate_usd']}" in result.output
    assert "aws sagemaker-runtime invoke-endpoint" in result.output


def test_deploy_of_a_running_stack_shows_pulumis_preview_before_asking(project, backend, terminal):
    backend.stacks["dev"] = {"monthly_estimate_usd": 1.0}
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, input="n\n")
    assert result.exit_code == 1
    assert "Changes against the running stack 'dev' (pulumi preview):" in result.output
    assert "Previewing update (dev)" in result.output
    assert backend.names() == ["select_stack", "preview"], "previewed, not deployed"


def test_deploy_without_a_terminal_and_without_yes_refuses_in_one_line(project, backend):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project)
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no terminal to ask on" in lines[0] and "--yes" in lines[0]
    assert backend.calls == []


def test_deploy_yes_without_a_terminal_deploys(project, backend):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes")
    assert result.exit_code == 0, result.output
    assert backend.names()[-1] == "up" and "Total: $" in result.output


def test_deploy_json_needs_yes_and_prints_one_document(project, backend):
    assert _invoke("deploy", "--stack", "dev", "--project-dir", project, "--json").exit_code == 2
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--json", "--yes")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["comparison"]["choice"]["mode"] == "realtime"
    assert {r["type"] for r in doc["resources"]} >= {"aws:sagemaker/endpointConfiguration:EndpointConfiguration"}
    assert doc["outputs"]["monthly_estimate_usd"] == doc["monthly_usd"]


def test_deploy_without_the_pulumi_cli_shows_everything_then_says_how_to_install_it(project, no_pulumi):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes")
    assert result.exit_code == 1, result.output
    assert "Recommended:" in result.stdout and "Total: $" in result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Pulumi CLI is not installed" in lines[0] and "get.pulumi.com" in lines[0]


# -- budgets ---------------------------------------------------------------------------------------------------


def _set(project: Path, key: str, value) -> None:
    import yaml

    path = project / "Pulumi.dev.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"][f"llmdeploy:{key}"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_deploy_over_the_stacks_budget_is_refused_before_pulumi_runs(project, backend, terminal):
    _set(project, "maxMonthlyUsd", 100)
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes")
    assert result.exit_code == 1
    assert "Total: $" in result.stdout, "the priced list is still shown"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "over the budget of $100.00/month (llmdeploy:maxMonthlyUsd in Pulumi.dev.yaml)" in lines[0]
    assert backend.calls == [], "nothing reached Pulumi"


def test_deploy_over_the_flag_budget_is_refused(project, backend):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes", "--max-monthly-usd", "500")
    assert result.exit_code == 1 and "(--max-monthly-usd)" in result.stderr and backend.calls == []


def test_deploy_within_budget_goes_ahead(project, backend):
    _set(project, "maxMonthlyUsd", 100_000)
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes")
    assert result.exit_code == 0, result.output
    assert "Budget: $100,000.00/month (llmdeploy:maxMonthlyUsd in Pulumi.dev.yaml); this stack: $" in result.output


def test_max_monthly_usd_must_be_positive(project):
    result = _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes", "--max-monthly-usd", "0")
    assert result.exit_code == 2 and "--max-monthly-usd" in result.stderr


def test_preview_offline_over_budget_lists_then_fails(project):
    _set(project, "maxMonthlyUsd", 100)
    result = _invoke("preview", "--offline", "--stack", "dev", "--project-dir", project)
    assert result.exit_code == 1 and "Total: $" in result.stdout and "over the budget" in result.stderr
    result = _invoke("preview", "--offline", "--stack", "dev", "--project-dir", project, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["within_budget"] is False and doc["budget"][0]["max_monthly_usd"] == 100


def test_preview_offline_budget_from_the_environment(project, monkeypatch):
    monkeypatch.setenv("LLMDEPLOY_MAX_MONTHLY_USD", "250")
    result = _invoke("preview", "--offline", "--stack", "dev", "--project-dir", project)
    assert result.exit_code == 1 and "over the budget of $250.00/month (--max-monthly-usd)" in result.stderr


# -- destroy: what stops being paid, then ask ------------------------------------------------------------------


def test_destroy_says_what_stops_being_paid_then_asks(project, backend, terminal):
    assert _invoke("deploy", "--stack", "dev", "--project-dir", project, "--yes").exit_code == 0
    monthly = backend.stacks["dev"]["monthly_estimate_usd"]
    result = _invoke("destroy", "--stack", "dev", "--project-dir", project, input="n\n")
    assert result.exit_code == 1
    assert f"Destroying stack 'dev' (realtime, us-east-1) stops about ${monthly:,.2f}/month" in result.output
    assert "destroy" not in backend.names()
    result = _invoke("destroy", "--stack", "dev", "--project-dir", project, "--yes", "--remove")
    assert result.exit_code == 0, result.output
    assert ("destroy", "dev", True) in backend.calls and "dev" not in backend.stacks


def test_destroy_of_a_stack_without_the_output_estimates_from_the_file(project, backend, terminal):
    backend.stacks["dev"] = {"endpoint_name": "x"}  # deployed before monthly_estimate_usd existed
    result = _invoke("destroy", "--stack", "dev", "--project-dir", project, input="n\n")
    assert "(estimated from Pulumi.dev.yaml: the stack has no monthly_estimate_usd output)" in result.output


def test_destroy_of_a_missing_stack_exits_2(project, backend, terminal):
    result = _invoke("destroy", "--stack", "dev", "--project-dir", project, "--yes")
    assert result.exit_code == 2 and "nothing to destroy" in result.stderr


def test_destroy_without_a_terminal_and_without_yes_refuses(project, backend):
    result = _invoke("destroy", "--stack", "dev", "--project-dir", project)
    assert result.exit_code == 2 and "no terminal" in result.stderr and backend.calls == []


# -- on a real terminal ----------------------------------------------------------------------------------------

DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.infra.fake_pulumi import FakeBackend
FakeBackend(Path({bin!r}), log=Path({log!r})).install()
from llmdeploy.cli.main import main
main(["deploy", "--stack", "dev", "--project-dir", {project!r}])
"""


def _run_on_a_pty(argv: list[str], answer: bytes, env: dict, timeout: float = 240) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdin/stdout/stderr; type ``answer`` at the question."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        os.execve(argv[0], argv, env)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[y/N]" in out:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_deploy_answered_no_on_a_terminal_creates_nothing(project, tmp_path):
    log = tmp_path / "pulumi-calls.jsonl"
    code = DRIVER.format(root=str(ROOT), bin=str(tmp_path / "bin"), log=str(log), project=str(project))
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}", "COLUMNS": "200"}
    status, out = _run_on_a_pty([sys.executable, "-c", code], b"n\n", env)
    assert status == 1, out
    assert "Recommended:" in out and "Total: $" in out and "[y/N]" in out
    assert "Not deployed: nothing was created or changed." in out
    calls = [json.loads(line)[0] for line in log.read_text().splitlines()]
    assert calls == ["select_stack"], f"nothing but a look-up may reach Pulumi: {calls}"


# -- unchanged contracts ---------------------------------------------------------------------------------------


def test_missing_stack_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["deploy", "--stack", "dev", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Pulumi.dev.yaml" in result.stderr and "llmdeploy plan --stack dev" in result.stderr


def test_stack_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMDEPLOY_STACK", raising=False)
    result = CliRunner().invoke(cli, ["deploy", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--stack" in result.stderr


def test_preview_without_the_pulumi_cli_exits_1_with_the_install_line(tmp_path, no_pulumi):
    write_stack_file(tmp_path / "Pulumi.dev.yaml", stack_config("realtime"))
    result = CliRunner().invoke(cli, ["preview", "--stack", "dev", "--project-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Pulumi CLI is not installed" in lines[0] and "get.pulumi.com" in lines[0]


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
    code = ("import sys; from click.testing import CliRunner; from llmdeploy.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['deploy', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_aws', 'boto3') "
            "or m.startswith('sagemaker')]; "
            "print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
