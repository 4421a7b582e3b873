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


def _leaf_commands(group, path=()):
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _leaf_commands(cmd, (*path, name))
        else:
            yield (*path, name)


def test_every_command_has_help_with_examples():
    commands = list(_leaf_commands(cli))
    assert ("finetune", "up") in commands and ("prices", "refresh") in commands
    missing = []
    for path in commands:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Examples:" not in result.output:
            missing.append(" ".join(path))
    assert not missing, f"--help must show examples for: {', '.join(missing)}"
