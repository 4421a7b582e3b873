"""`llmdeploy config`: where each setting comes from, the config file's path, shell completion."""

from __future__ import annotations

import os

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table

# Settings shared by several commands: (option name, environment variables, built-in default).
SHARED = (
    ("region", ("LLMDEPLOY_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), opt.DEFAULT_REGION),
    ("model", ("LLMDEPLOY_MODEL",), opt.DEFAULT_MODEL),
    ("dtype", ("LLMDEPLOY_DTYPE",), "the model's own"),
    ("mode", ("LLMDEPLOY_MODE",), "auto"),
    ("stack", ("LLMDEPLOY_STACK",), None),
    ("owner", ("LLMDEPLOY_OWNER",), "unknown"),
    ("cost_center", ("LLMDEPLOY_COST_CENTER",), "unassigned"),
    ("catalog", ("LLMDEPLOY_CATALOG",), "bundled or refreshed"),
)
SHELLS = ("bash", "zsh", "fish")


def _command(name: str) -> str:
    """A command whose [section] the file may have; UnknownChoiceError (exit 2, did you mean) otherwise."""
    from llmdeploy.cli.main import COMMANDS
    from llmdeploy.errors import UnknownChoiceError

    if name not in COMMANDS:
        raise UnknownChoiceError("command", name, COMMANDS, fix="Pass --command with one of these.")
    return name


@click.group(
    epilog="""\b
Examples:
  llmdeploy config show                         # every shared setting, its value and where it came from
  llmdeploy config show --command plan          # with the file's [plan] section applied
  LLMDEPLOY_REGION=eu-west-1 llmdeploy config show --json
  $EDITOR "$(llmdeploy config path)"             # edit the user config file
  eval "$(llmdeploy config completion bash)"    # tab completion, in ~/.bashrc
"""
)
def config():
    """Show the effective configuration, the config file, and shell completion.

    Every option comes from the command line first, then its LLMDEPLOY_*
    environment variable, then the user config file (TOML, at
    'llmdeploy config path'), then the built-in default.
    """


@config.command(epilog="""\b
Examples:
  llmdeploy config show
  LLMDEPLOY_REGION=eu-west-1 llmdeploy config show --command plan --json
""")
@click.option("--command", "command_name", default="plan", show_default=True, callback=lambda ctx, p, v: _command(v),
              help="Whose [section] of the config file to apply.")
@opt.json_option
def show(command_name, as_json):
    """Each shared setting, its value and where it came from (flag > environment > file > default)."""
    from llmdeploy.userconfig import config_path, load_user_config

    path = config_path()
    raw = load_user_config(path)
    section = raw.get(command_name, {}) if isinstance(raw.get(command_name), dict) else {}
    rows = []
    for name, envvars, default in SHARED:
        env = next((e for e in envvars if os.environ.get(e)), None)
        if env:
            value, source = os.environ[env], f"environment {env}"
        elif name in section:
            value, source = section[name], f"file [{command_name}]"
        elif name in raw and not isinstance(raw[name], dict):
            value, source = raw[name], "file"
        else:
            value, source = default, "default"
        rows.append({"setting": name, "value": value, "source": source, "environment": list(envvars)})
    if as_json:
        opt.emit_json({"config_file": str(path), "config_file_exists": path.is_file(), "settings": rows})
        return
    click.echo(f"Config file: {path} ({'found' if path.is_file() else 'not found'})")
    click.echo(table(["setting", "value", "from", "environment variables"],
                     [[r["setting"], "-" if r["value"] is None else r["value"], r["source"], ", ".join(r["environment"])] for r in rows]))
    click.echo("\nA flag on the command line overrides all of these.")


@config.command(epilog="""\b
Examples:
  llmdeploy config path
  $EDITOR "$(llmdeploy config path)"
""")
def path():
    """Print the user config file's path."""
    from llmdeploy.userconfig import config_path

    click.echo(str(config_path()))


@config.command(epilog="""\b
Examples:
  eval "$(llmdeploy config completion bash)"       # add to ~/.bashrc
  llmdeploy config completion fish > ~/.config/fish/completions/llmdeploy.fish
""")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the shell code that enables tab completion for SHELL."""
    from click.shell_completion import get_completion_class

    from llmdeploy.cli.main import cli

    comp = get_completion_class(shell)(cli, {}, "llmdeploy", "_LLMDEPLOY_COMPLETE")
    click.echo(comp.source())
