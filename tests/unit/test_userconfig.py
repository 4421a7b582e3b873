"""Configuration precedence: flag > environment > user config file > default, shown by `config show`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from llmdeploy.cli.main import cli


def _write_config(monkeypatch, tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(path))
    return path


def plan_json(*args):
    result = CliRunner().invoke(cli, ["plan", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_precedence_flag_env_file_default(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)  # the moto fixture exports one for the whole session
    assert plan_json()["region"] == "us-east-1"
    _write_config(monkeypatch, tmp_path, 'region = "eu-west-1"\n[plan]\nmode = "reserved"\nrequests_per_day = 50000\n')
    data = plan_json()
    assert (data["region"], data["mode"], data["traffic"]["requests_per_day"]) == ("eu-west-1", "reserved", 50000)
    monkeypatch.setenv("LLMDEPLOY_REGION", "us-west-2")
    assert plan_json()["region"] == "us-west-2"
    assert plan_json("--region", "us-east-1")["region"] == "us-east-1"


def test_config_show_names_each_source(monkeypatch, tmp_path):
    path = _write_config(monkeypatch, tmp_path, 'owner = "ml-platform"\n[plan]\nmode = "async"\n')
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    result = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by = {row["setting"]: row for row in data["settings"]}
    assert data["config_file"] == str(path) and data["config_file_exists"]
    assert (by["region"]["value"], by["region"]["source"]) == ("eu-west-1", "environment AWS_DEFAULT_REGION")
    assert (by["owner"]["value"], by["owner"]["source"]) == ("ml-platform", "file")
    assert (by["mode"]["value"], by["mode"]["source"]) == ("async", "file [plan]")
    assert by["model"]["source"] == "default"


def _context(path: tuple[str, ...], *args: str):
    """The context click makes to run `llmdeploy PATH ARGS`: the root's callback loads the file into default_map,
    each group's context takes its map from its parent's, the command parses ARGS against its own."""
    import click

    root = cli.make_context("llmdeploy", [*path, *args])
    root.invoke(cli.callback)
    ctx, command = root, cli
    for name in path[:-1]:
        command = command.get_command(ctx, name)
        ctx = click.Context(command, info_name=name, parent=ctx)
    command = command.get_command(ctx, path[-1])
    return command.make_context(path[-1], list(args), parent=ctx)


def test_every_command_with_a_region_takes_it_from_the_file_at_any_depth(monkeypatch, tmp_path):
    from click.core import ParameterSource

    from tests.unit.bad_input import REQUIRED, leaf_commands

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    _write_config(monkeypatch, tmp_path, 'region = "eu-west-1"\n[finetune]\nstack = "ft"\n[finetune.down]\nregion = "us-west-2"\n')
    with_region = [path for path, command in leaf_commands() if any(p.name == "region" for p in command.params)]
    assert {("plan",), ("finetune", "up"), ("finetune", "status"), ("finetune", "down")} <= set(with_region)
    for path in with_region:
        ctx = _context(path, *REQUIRED.get(path, []))
        want = "us-west-2" if path == ("finetune", "down") else "eu-west-1"
        assert (ctx.params["region"], ctx.get_parameter_source("region")) == (want, ParameterSource.DEFAULT_MAP), path
        if path[0] == "finetune":
            assert ctx.params["stack"] == "ft", path
    monkeypatch.setenv("LLMDEPLOY_REGION", "ap-south-1")
    ctx = _context(("finetune", "up"), "--ttl", "6h")
    assert (ctx.params["region"], ctx.get_parameter_source("region")) == ("ap-south-1", ParameterSource.ENVIRONMENT)
    ctx = _context(("finetune", "up"), "--ttl", "6h", "--region", "us-west-2")
    assert (ctx.params["region"], ctx.get_parameter_source("region")) == ("us-west-2", ParameterSource.COMMANDLINE)


def test_config_show_for_a_group_and_a_subcommand_names_the_table(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    _write_config(monkeypatch, tmp_path, 'region = "eu-west-1"\n[finetune]\nstack = "ft"\n[finetune.up]\nttl = "6h"\n')
    result = CliRunner().invoke(cli, ["config", "show", "--command", "finetune", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["command"], r["setting"]): (r["value"], r["source"]) for r in json.loads(result.output)["settings"]}
    for sub in ("up", "status", "down"):
        assert rows[(f"finetune {sub}", "region")] == ("eu-west-1", "file")
        assert rows[(f"finetune {sub}", "stack")] == ("ft", "file [finetune]")
    assert rows[("finetune up", "ttl")] == ("6h", "file [finetune.up]")
    assert rows[("finetune up", "instance_type")] == ("p4d.24xlarge", "default")
    assert ("finetune status", "now_text") not in rows, "hidden options are not settings"
    for spelling in ("finetune up", "finetune.up"):
        result = CliRunner().invoke(cli, ["config", "show", "--command", spelling, "--json"])
        assert result.exit_code == 0, result.output
        assert {r["command"] for r in json.loads(result.output)["settings"]} == {"finetune up"}


def test_config_show_refuses_a_bad_value_as_the_command_would(monkeypatch, tmp_path):
    _write_config(monkeypatch, tmp_path, "[plan]\nbuffer = inf\n")
    for args in (["plan"], ["config", "show", "--command", "plan"]):
        result = CliRunner().invoke(cli, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert "--buffer (from the user config file) must be a finite number" in errors[0]


def test_a_broken_config_file_is_one_line(monkeypatch, tmp_path):
    _write_config(monkeypatch, tmp_path, "region = \n")
    result = CliRunner().invoke(cli, ["plan"])
    assert result.exit_code == 2 and "is not valid TOML" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(tmp_path / "missing.toml"))
    result = CliRunner().invoke(cli, ["plan"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_version_and_completion():
    from llmdeploy import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    for shell in ("bash", "zsh", "fish"):
        result = CliRunner().invoke(cli, ["config", "completion", shell])
        assert result.exit_code == 0 and "_LLMDEPLOY_COMPLETE" in result.output


def test_every_command_has_help_with_examples():
    from tests.unit.bad_input import leaf_commands

    commands = [path for path, _ in leaf_commands(cli)]
    assert ("finetune", "up") in commands and ("prices", "refresh") in commands
    missing = []
    for path in commands:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Examples:" not in result.output:
            missing.append(" ".join(path))
    assert not missing, f"--help must show examples for: {', '.join(missing)}"
