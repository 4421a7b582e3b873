"""`llmdeploy preview`, `deploy` and `destroy`: the Pulumi program driven by the Automation API.

Each reads the stack config ``llmdeploy plan --stack NAME`` wrote
(``Pulumi.NAME.yaml``) and validates it before Pulumi runs, so a missing or bad
file is one line and exit 2. Pulumi state lives in ``PULUMI_BACKEND_URL`` or the
local file backend ``~/.llmdeploy/pulumi-state`` (llmdeploy.infra.automation).

The project folder (where ``Pulumi.NAME.yaml`` is read) is the one ``plan``
writes to: ``--project-dir`` / ``LLMDEPLOY_PROJECT_DIR``, else the current
folder (cli/options.py). When that folder has llmdeploy's ``Pulumi.yaml`` the
Pulumi CLI runs ``infra/`` from it; otherwise the program runs inline from the
installed package with the stack file's settings.

``preview --offline`` needs neither the Pulumi CLI nor AWS: it runs the program
under Pulumi's mock runtime and prices what it would create.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmdeploy.cli.options import emit_json, json_option, project_dir_option, resolve_project_dir, stack_option, yes_option
from llmdeploy.errors import MissingDependencyError, UsageError

PROJECT_NAME = "llmdeploy"

def _require_stack(stack: str | None) -> str:
    if not stack:
        raise UsageError("--stack NAME is required.", hint="Write a stack config first with 'llmdeploy plan --stack NAME'.")
    return stack


def _load(stack: str | None, project_dir: Path | None):
    """(stack name, project folder, validated StackConfig); ConfigError (exit 2) when the file is missing or bad."""
    from llmdeploy.catalog import load_catalog
    from llmdeploy.stackconfig import read_stack_file, stack_file

    stack = _require_stack(stack)
    folder = resolve_project_dir(project_dir)
    config = read_stack_file(stack_file(folder, stack), catalog=load_catalog())
    return stack, folder, config


def _select(stack: str, folder: Path, config):
    from llmdeploy.infra import automation

    automation.pulumi_cli()  # one line and exit 1 when the CLI is missing
    if _is_llmdeploy_project(folder):
        return automation.select_stack(stack, project_name=PROJECT_NAME, work_dir=folder)

    from llmdeploy.infra.offline_preview import config_values

    def program() -> None:
        from llmdeploy.infra.__main__ import main

        main()

    return automation.select_stack(stack, project_name=PROJECT_NAME, program=program, config=config_values(config))


def _is_llmdeploy_project(folder: Path) -> bool:
    return (folder / "Pulumi.yaml").is_file() and (folder / "infra" / "__main__.py").is_file()


def _echo_line(line: str) -> None:
    click.echo(line.rstrip("\n"))


@click.command()
@stack_option
@project_dir_option
@click.option("--offline", is_flag=True, help="No Pulumi CLI, no AWS: run the program under mocks and price each resource.")
@json_option
def preview(stack: str | None, project_dir: Path | None, offline: bool, as_json: bool) -> None:
    """Show what a stack would create; with --offline also what it costs per month.

    \b
    Examples:
      llmdeploy preview --offline --stack dev
      llmdeploy preview --offline --stack dev --json
      llmdeploy preview --stack dev          # pulumi preview against AWS
    """
    stack, folder, config = _load(stack, project_dir)
    if offline:
        try:
            from llmdeploy.infra.offline_preview import format_table, offline_preview
        except ImportError as exc:
            raise MissingDependencyError(f"the Pulumi SDK is not installed ({exc.name}).",
                                         hint="pip install 'llmdeploy[infra]'.") from None
        result = offline_preview(config, stack=stack)
        if as_json:
            emit_json(result.to_json())
        else:
            click.echo(format_table(result))
        return
    from llmdeploy.infra import automation

    summary = automation.preview(_select(stack, folder, config), on_output=_echo_line)
    if as_json:
        emit_json({"stack": stack, "change_summary": dict(getattr(summary, "change_summary", {}) or {})})


@click.command()
@stack_option
@project_dir_option
@json_option
def deploy(stack: str | None, project_dir: Path | None, as_json: bool) -> None:
    """Create or update a stack (pulumi up), streaming Pulumi's progress.

    \b
    Examples:
      llmdeploy plan --mode realtime --stack dev
      llmdeploy deploy --stack dev
    """
    stack, folder, config = _load(stack, project_dir)
    from llmdeploy.infra import automation

    outputs = automation.up(_select(stack, folder, config), on_output=None if as_json else _echo_line)
    if as_json:
        emit_json({"stack": stack, "outputs": outputs})
        return
    click.echo("")
    for key in ("endpoint_name", "url", "model_data_url"):
        if key in outputs:
            click.echo(f"{key}: {outputs[key]}")
    if "invoke_command" in outputs:
        click.echo(f"Try it:\n  {outputs['invoke_command']}")


@click.command()
@stack_option
@project_dir_option
@yes_option
@click.option("--remove", is_flag=True, help="Also delete the stack's Pulumi state afterwards.")
def destroy(stack: str | None, project_dir: Path | None, yes: bool, remove: bool) -> None:
    """Delete every resource of a stack (asks first unless --yes).

    \b
    Examples:
      llmdeploy destroy --stack dev
      llmdeploy destroy --stack dev --yes --remove
    """
    stack, folder, config = _load(stack, project_dir)
    if not yes:
        click.confirm(f"Delete every resource of stack {stack!r} ({config.mode}, {config.region})?", abort=True)
    from llmdeploy.infra import automation

    automation.destroy(_select(stack, folder, config), on_output=_echo_line, remove=remove)
    click.echo(f"Stack {stack!r} destroyed.")

