"""A config file cannot turn a safety default off, and a key it does not know is an error, not ignored.

`yes` (skip confirmation; make `reap` delete) comes only from the command line or LLMDEPLOY_ASSUME_YES;
`force` (overwrite an edited stack file) only from the command line. Pulumi is replaced by a recorder
(the Automation API calls `destroy` makes) so that what is asserted is whether the confirmation ran.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from llmdeploy.cli.options import ASSUME_YES_ENV, yes_option
from llmdeploy.stackconfig import write_stack_file
from tests.infra.mocks import stack_config

from . import assert_refused, invoke


@pytest.fixture
def user_config(tmp_path, monkeypatch):
    def write(text: str):
        path = tmp_path / "config.toml"
        path.write_text(text)
        monkeypatch.setenv("LLMDEPLOY_CONFIG", str(path))
        return path

    return write


YES_IN_FILE = ["yes = true", "[reap]\nyes = true", "[destroy]\nyes = true", "[finetune.down]\nyes = true",
               "[finetune]\nyes = true", "force = true", "[plan]\nforce = true", "yes = false"]
COMMANDS = [["reap"], ["destroy", "--stack", "dev"], ["finetune", "down"], ["plan"], ["finetune", "up", "--ttl", "6h"]]


@pytest.mark.parametrize("text", YES_IN_FILE)
@pytest.mark.parametrize("command", COMMANDS)
def test_yes_or_force_in_the_config_file_is_refused_with_the_reason(text, command, user_config):
    user_config(text)
    key = "force" if "force" in text else "yes"
    line = assert_refused(invoke(command), 2, f"'{key}'", "not allowed in a config file")
    assert ("LLMDEPLOY_ASSUME_YES" in line) if key == "yes" else ("--force" in line)


@pytest.fixture
def pulumi_recorder(monkeypatch, tmp_path):
    """Stands in for infra/automation.py's calls `destroy` makes (the Pulumi CLI is not installed here): it selects
    the stack and reads its outputs (read-only, to say what stops being paid), asks, then destroys."""
    from llmdeploy.infra import automation

    calls = []
    monkeypatch.setattr(automation, "pulumi_cli", lambda: "/usr/bin/pulumi")
    monkeypatch.setattr(automation, "select_stack", lambda name, **kw: calls.append(("select", name)) or name)
    monkeypatch.setattr(automation, "outputs", lambda stack: calls.append(("outputs", stack)) or {})
    monkeypatch.setattr(automation, "destroy", lambda stack, **kw: calls.append(("destroy", stack)))
    write_stack_file(tmp_path / "Pulumi.dev.yaml", stack_config("realtime"))
    return calls


@pytest.fixture
def terminal(monkeypatch):
    """A person at a terminal (CliRunner's stdin is none): `destroy` refuses to ask without one (issue 12)."""
    monkeypatch.setattr("llmdeploy.cli.deploy._can_ask", lambda: True)


def _destroyed(calls) -> bool:
    return ("destroy", "dev") in calls


def test_destroy_asks_without_yes_and_aborts_without_an_answer(pulumi_recorder, terminal, tmp_path):
    result = invoke(["destroy", "--stack", "dev", "--project-dir", tmp_path])
    assert result.exit_code == 1 and "Delete every resource" in result.output
    assert not _destroyed(pulumi_recorder)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_destroy_skips_the_question_with_the_flag_or_the_named_variable(how, pulumi_recorder, tmp_path, monkeypatch):
    args = ["destroy", "--stack", "dev", "--project-dir", tmp_path]
    if how == "flag":
        args.append("--yes")
    else:
        monkeypatch.setenv(ASSUME_YES_ENV, "1")
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "Delete every resource" not in result.output and _destroyed(pulumi_recorder)


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_the_variable_set_to_false_still_asks(value, pulumi_recorder, terminal, tmp_path, monkeypatch):
    monkeypatch.setenv(ASSUME_YES_ENV, value)
    result = invoke(["destroy", "--stack", "dev", "--project-dir", tmp_path])
    assert result.exit_code == 1 and "Delete every resource" in result.output and not _destroyed(pulumi_recorder)


@pytest.mark.parametrize("value", ["0", "false"])
def test_the_variable_set_to_false_without_a_terminal_refuses_before_anything(value, pulumi_recorder, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv(ASSUME_YES_ENV, value)
    assert_refused(invoke(["destroy", "--stack", "dev", "--project-dir", tmp_path]), 2, "no terminal", "--yes")
    assert pulumi_recorder == []


def test_yes_from_a_default_map_is_refused_whatever_fills_it():
    """Belt and braces for when the user config moves onto click's default_map wholesale (issue 12)."""

    @click.command()
    @yes_option
    def command(yes):
        click.echo(f"yes={yes}")

    result = CliRunner().invoke(command, [], default_map={"yes": True})
    assert_refused(result, 2, "--yes cannot come from a config file")
    assert CliRunner().invoke(command, ["--yes"], default_map={"yes": False}).output.strip() == "yes=True"
    assert CliRunner().invoke(command, [], default_map={"yes": False}).output.strip() == "yes=False"


def test_force_has_no_environment_variable(tmp_path, monkeypatch):
    assert invoke(["plan", "--mode", "reserved", "--stack", "dev", "--project-dir", tmp_path]).exit_code == 0
    for name in ("LLMDEPLOY_FORCE", ASSUME_YES_ENV):
        monkeypatch.setenv(name, "1")
    assert_refused(invoke(["plan", "--mode", "async", "--stack", "dev", "--project-dir", tmp_path]), 1, "--force")


UNKNOWN_KEYS = [
    ('regoin = "eu-west-1"', "Did you mean 'region'"),
    ('[plan]\nmdoe = "async"', "Did you mean 'mode'"),
    ("[plan]\nrequests-per-day = 5", "did you mean 'requests_per_day'"),
    ('[plna]\nmode = "async"', "Did you mean [plan]"),
    ('[finetune.upp]\nttl = "6h"', "Did you mean [finetune.up]"),
    ('[finetune.up]\nttll = "6h"', "Did you mean 'ttl'"),
    ("[prices.show]\njsn = true", "Did you mean 'as_json'"),
    ('[plan]\nttl = "6h"', "no option of 'llmdeploy plan'"),
    ("[plan.sub]\nmode = 1", "is not a command"),
    ("plan = 3", "must be a table"),
    ("[finetune]\nup = 3", "must be a table"),
    ('colour = "blue"', "no option of any command"),
]


@pytest.mark.parametrize("text, needle", UNKNOWN_KEYS)
@pytest.mark.parametrize("command", [["plan"], ["instances"], ["config", "show"]])
def test_unknown_user_config_keys_are_reported_with_a_did_you_mean(text, needle, command, user_config):
    user_config(text)
    assert_refused(invoke(command), 2, needle, "user config")


@pytest.mark.parametrize("text, option, needle", [
    ('[plan]\nactive_hours = "twelve"', "--active-hours", "whole number"),
    ("[plan]\nbuffer = inf", "--buffer", "finite"),
    ("[plan]\nlatency_target = -1", "--latency-target", "greater than 0"),
    ("[estimate]\nbatch = 0", "--batch", "at least 1"),
    ("[reap]\nconcurrency = 100000", "--concurrency", "at most 256"),
    ('[plan]\nmode = "cheap"', "--mode", "not one of"),
])
def test_bad_values_in_the_user_config_are_one_line_naming_the_file(text, option, needle, user_config):
    user_config(text)
    command = text.split("]")[0].lstrip("[")
    assert_refused(invoke([command]), 2, option, needle)


def test_a_group_table_applies_to_its_subcommands(user_config):
    """[finetune] region = ... used to be accepted and silently ignored (it reached no subcommand)."""
    user_config('[finetune]\nregion = "eu-west-1"\n[finetune.status]\nstack = "ft"\n')
    from llmdeploy.cli.main import cli

    ctx = cli.make_context("llmdeploy", ["finetune", "status"])
    with ctx:
        ctx.invoke(cli.callback)  # the root group's callback loads the file into default_map
    assert ctx.default_map["finetune"]["status"] == {"region": "eu-west-1", "stack": "ft"}
