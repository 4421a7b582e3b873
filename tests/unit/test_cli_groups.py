"""Every command group's own --help shows examples, like every leaf command's (test_userconfig.py)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import COMMANDS, cli


def _groups() -> list[str]:
    ctx = click.Context(cli)
    return [name for name in COMMANDS if isinstance(cli.get_command(ctx, name), click.Group)]


def test_the_groups_are_found():
    assert {"config", "finetune", "prices"} <= set(_groups())


@pytest.mark.parametrize("group", _groups())
def test_group_help_shows_examples(group):
    result = CliRunner().invoke(cli, [group, "--help"])
    assert result.exit_code == 0, result.output
    examples = result.output.split("Examples:", 1)
    assert len(examples) == 2, f"'llmdeploy {group} --help' has no examples"
    assert f"llmdeploy {group} " in examples[1], "the examples call the group's own subcommands"
