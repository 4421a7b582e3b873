"""`llmdeploy config`: where each setting comes from, the config file's path, shell completion."""

from __future__ import annotations

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table

SHELLS = ("bash", "zsh", "fish")


def _command_path(name: str) -> tuple[str, ...]:
    """'plan', 'finetune up' or 'finetune.up' -> its path; UnknownChoiceError (exit 2, did you mean) otherwise."""
    from llmdeploy.cli.main import cli
    from llmdeploy.errors import UnknownChoiceError

    path = tuple(name.replace(".", " ").split()) or ("",)
    command: click.Command = cli
    for depth, part in enumerate(path):
        prefix = path[:depth]
        ctx = click.Context(command)
        sub = _subcommand(command, ctx, part)
        if sub is None:  # a leaf followed by more words ('plan x'): the leaf is the only valid one
            names = command.list_commands(ctx) if isinstance(command, click.Group) else []
            raise UnknownChoiceError("command", " ".join(path[:depth + 1]) or name,
                                     [" ".join((*prefix, n)) for n in names] or [" ".join(prefix)],
                                     fix="Pass --command with one of these ('finetune up' or 'finetune.up' for a subcommand).")
        command = sub
    return path


def _subcommand(command: click.Command, ctx: click.Context, name: str) -> click.Command | None:
    """The subcommand ``name`` of ``command`` if it is a group that has one; None otherwise (a leaf has none)."""
    return command.get_command(ctx, name) if isinstance(command, click.Group) else None


def _contexts(parent: click.Context, command: click.Command, path: tuple[str, ...]):
    """(path, context) of every runnable command at or under ``path``, each made as click makes it to run the
    command with no arguments: its default_map looked up under its name in its parent's, its parameters
    resolved (command line, environment, default_map, default) with their sources recorded.

    resilient_parsing: a required option left out (``finetune up --ttl``) is no error here.
    """
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1], parent=parent)
        for name in command.list_commands(ctx):
            if (sub := command.get_command(ctx, name)) is not None:  # a listed name always has one
                yield from _contexts(ctx, sub, (*path, name))
    else:
        yield path, command.make_context(path[-1], [], parent=parent, resilient_parsing=True)


def _settings(ctx: click.Context, path: tuple[str, ...], raw: dict) -> list[dict]:
    """One row per parameter of the command: its value and where click took it from (ctx.get_parameter_source)."""
    from click.core import ParameterSource

    from llmdeploy.userconfig import table_of

    rows = []
    for param in ctx.command.params:
        if getattr(param, "hidden", False) or not param.name:
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        if source is ParameterSource.ENVIRONMENT:
            where = f"environment {opt.envvar_used(param)}"
            # resilient parsing dropped a bad value; convert it again so that it is refused as the command would
            value = param.type_cast_value(ctx, param.value_from_envvar(ctx))
        elif source is ParameterSource.DEFAULT_MAP:
            where = table_of(raw, path, param.name) or "file"
            value = param.type_cast_value(ctx, ctx.lookup_default(param.name))
        elif source is ParameterSource.DEFAULT:
            where = "default"
        else:
            where = source.name.lower() if source else "none"
        rows.append({"command": " ".join(path), "setting": param.name, "value": value, "source": where,
                     "environment": opt.envvars(param)})
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


@click.group(
    epilog="""\b
Examples:
  llmdeploy config show                         # every shared setting, its value and where it came from
  llmdeploy config show --command plan          # with the file's [plan] section applied
  llmdeploy config show --command 'finetune up' # a subcommand: top level, [finetune], [finetune.up]
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
  llmdeploy config show --command finetune      # each of finetune up, status and down
""")
@click.option("--command", "command_path", default="plan", show_default=True, metavar="COMMAND",
              callback=lambda ctx, p, v: _command_path(v),
              help="Whose settings to show: a command, a subcommand ('finetune up' or 'finetune.up'), or a group "
                   "(each of its commands).")
@opt.json_option
@click.pass_context
def show(ctx, command_path, as_json):
    """Each option of a command, its value and where click took it from (flag > environment > file > default)."""
    from llmdeploy.cli.main import cli
    from llmdeploy.userconfig import config_path, load_user_config

    path = config_path()
    raw = load_user_config(path)
    root = ctx.find_root()  # the llmdeploy group's context: its callback put the file into default_map
    command: click.Command = cli
    parent = root
    for depth, name in enumerate(command_path):
        sub = _subcommand(command, parent, name)
        assert sub is not None, f"--command's callback (_command_path) checked {command_path}"
        command = sub
        if depth < len(command_path) - 1:
            parent = click.Context(command, info_name=name, parent=parent)
    rows = [row for sub_path, sub_ctx in _contexts(parent, command, command_path) for row in _settings(sub_ctx, sub_path, raw)]
    if as_json:
        opt.emit_json({"config_file": str(path), "config_file_exists": path.is_file(), "settings": rows})
        return
    click.echo(f"Config file: {path} ({'found' if path.is_file() else 'not found'})")
    several = len({r["command"] for r in rows}) > 1
    click.echo(table((["command"] if several else []) + ["setting", "value", "from", "environment variables"],
                     [([r["command"]] if several else []) + [r["setting"], _cell(r["value"]), r["source"], ", ".join(r["environment"])]
                      for r in rows]))
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
@click.argument("shell", type=opt.Choice(SHELLS))
def completion(shell):
    """Print the shell code that enables tab completion for SHELL."""
    from click.shell_completion import get_completion_class

    from llmdeploy.cli.main import cli

    comp = get_completion_class(shell)(cli, {}, "llmdeploy", "_LLMDEPLOY_COMPLETE")
    click.echo(comp.source())
