"""The `llmdeploy` command: a lazy group, so `llmdeploy plan` imports only what plan needs.

Each subcommand lives in its own module and is imported the first time it is
invoked (click's documented LazyGroup pattern). The short help shown by
`llmdeploy --help` is kept here so listing commands imports none of them.
This is also the one place `LlmdeployError` is caught and turned into one
line and an exit status.
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from llmdeploy import __version__
from llmdeploy.errors import LlmdeployError

# name -> (module, attribute, short help). Order is the order `--help` shows.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "estimate": ("llmdeploy.cli.estimate", "estimate", "Memory, fit and speed of a model, from its config."),
    "plan": ("llmdeploy.cli.plan", "plan", "Cost of every hosting mode for a traffic profile; pick one."),
    "instances": ("llmdeploy.cli.instances", "instances", "List catalog GPU instances with their prices."),
    "calibrate": ("llmdeploy.cli.calibrate", "calibrate", "Measure the handler here and write a speed calibration."),
    "preview": ("llmdeploy.cli.deploy", "preview", "Show what a stack would create (and cost, with --offline)."),
    "deploy": ("llmdeploy.cli.deploy", "deploy", "Create or update a stack with Pulumi."),
    "destroy": ("llmdeploy.cli.deploy", "destroy", "Delete every resource of a stack."),
    "status": ("llmdeploy.cli.status", "status", "Health, alarms and month-to-date cost of a deployed stack."),
    "package": ("llmdeploy.cli.package", "package", "Build a reproducible model.tar.gz for the LMI container."),
    "serve": ("llmdeploy.cli.serve", "serve", "Run the SageMaker-compatible endpoint locally."),
    "finetune": ("llmdeploy.cli.finetune", "finetune", "Bring fine-tune GPU clusters up, watch them, take them down."),
    "reap": ("llmdeploy.cli.reap", "reap", "Delete expired llmdeploy-managed resources in every region."),
    "prices": ("llmdeploy.cli.prices", "prices", "Show or refresh the price catalog."),
    "config": ("llmdeploy.cli.config", "config", "Show the effective configuration and where each value came from."),
}


# Modules that come with an optional extra: a command that needs one says which extra to install.
EXTRA_OF_MODULE = {
    "pulumi": "infra", "pulumi_aws": "infra", "sagemaker": "infra", "boto3": "infra", "botocore": "infra",
    "torch": "serve", "transformers": "serve", "tokenizers": "serve", "safetensors": "serve", "aiohttp": "serve",
    "matplotlib": "chart", "ctranslate2": "ctranslate2", "bitsandbytes": "int8",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above: listing commands must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])

    def resolve_command(self, ctx, args):
        # Unknown command: one line with a "did you mean" (click's own message lists nothing).
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-"):
            from llmdeploy.errors import did_you_mean

            hint = did_you_mean(name, COMMANDS)
            ctx.fail(f"No such command {name!r}." + (f" Did you mean {hint!r}?" if hint else "") + " See 'llmdeploy --help'.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LlmdeployError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
            if extra is None:
                raise  # not an optional dependency: a bug, keep the traceback
            command = ctx.invoked_subcommand or "this command"
            click.echo(
                f"Error: 'llmdeploy {command}' needs the Python package {exc.name!r}, which is not installed. "
                f"Install the extra: pip install 'llmdeploy[{extra}]'"
                + (" (install torch first: pip install torch==2.13.0)" if extra == "serve" else "") + ".",
                err=True,
            )
            ctx.exit(1)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  llmdeploy estimate flan-t5-xl
  llmdeploy plan --mode reserved
  llmdeploy plan --mode auto --requests-per-day 50000 --stack dev
  llmdeploy instances --region eu-west-1
""",
)
@click.version_option(__version__, "--version", prog_name="llmdeploy")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Size, price, provision and serve LLMs on AWS.

    Options come from flags, then LLMDEPLOY_* environment variables, then the
    user config file (see 'llmdeploy config show'), then built-in defaults.
    """
    from llmdeploy.userconfig import check_keys, config_path, default_map, load_user_config

    try:
        raw = load_user_config()
        if raw:
            tree = option_names(ctx)
            check_keys(raw, tree, path=config_path())
            ctx.default_map = default_map(raw, tree)  # click hands each command, at any depth, its own map
    except LlmdeployError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(exc.exit_code)


def option_names(ctx: click.Context) -> dict:
    """{command: its option names} ({group: {subcommand: ...}}): what the user config may set.

    Imports every command module (click and llmdeploy only: no SDK), so it runs only when a config file exists.
    """

    def walk(group: click.Group) -> dict:
        names: dict = {}
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                names[name] = walk(command)
            elif command is not None:  # a listed name always has one
                names[name] = {p.name for p in command.params if p.name and p.name != "help"}
        return names

    return walk(cli)


def _terminate(signum, frame) -> None:
    """SIGTERM ends the command the way Ctrl-C does: by an exception, so every cleanup (temp files) runs."""
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    # Only in the real process (the console script), not under CliRunner: a test must not own the signal.
    # `llmdeploy serve` installs its own handlers on its event loop, which take over while it runs.
    signal.signal(signal.SIGTERM, _terminate)
    cli.main(args=argv, prog_name="llmdeploy")


if __name__ == "__main__":
    main(sys.argv[1:])
