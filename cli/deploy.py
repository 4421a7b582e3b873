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

``deploy`` shows, then asks: plan's comparison for the traffic the stack recorded
(llmdeploy.stackplan), the priced resources (``preview --offline``), Pulumi's own
preview against a running stack; nothing is created before the answer is yes.
A budget (``llmdeploy:maxMonthlyUsd``, ``--max-monthly-usd``) refuses a stack whose
estimate is higher (llmdeploy.budget). ``preview --offline`` needs neither the Pulumi
CLI nor AWS: it runs the program under Pulumi's mock runtime and prices what it would create.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmdeploy.cli.options import (
    Number,
    emit_json,
    json_option,
    project_dir_option,
    resolve_project_dir,
    stack_option,
    yes_option,
)
from llmdeploy.errors import LlmdeployError, MissingDependencyError, UsageError

PROJECT_NAME = "llmdeploy"
ESTIMATE_OUTPUT = "monthly_estimate_usd"  # the stack output infra/__main__.py exports

# deploy and preview share it; only ever tightens the stack's own llmdeploy:maxMonthlyUsd.
max_monthly_usd_option = click.option(
    "--max-monthly-usd",
    type=Number(above=0),  # finite: nan or 1e400 would compare as no limit / every limit
    envvar="LLMDEPLOY_MAX_MONTHLY_USD",
    metavar="USD",
    help="Refuse when the monthly estimate is higher (on top of the stack's own llmdeploy:maxMonthlyUsd).",
)


def _require_stack(stack: str | None) -> str:
    if not stack:
        raise UsageError("--stack NAME is required.", hint="Write a stack config first with 'llmdeploy plan --stack NAME'.")
    return stack


def _load(stack: str | None, project_dir: Path | None):
    """(stack name, project folder, validated StackConfig, the file's name); ConfigError (exit 2) when missing or bad."""
    from llmdeploy.catalog import load_catalog
    from llmdeploy.stackconfig import read_stack_file, stack_file

    stack = _require_stack(stack)
    folder = resolve_project_dir(project_dir)
    path = stack_file(folder, stack)
    config = read_stack_file(path, catalog=load_catalog())
    return stack, folder, config, path.name


def _can_ask() -> bool:
    """Whether a person can answer a question: stdin is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def _refuse_without_a_terminal(command: str, stack: str, yes: bool) -> None:
    if not yes and not _can_ask():
        raise UsageError(f"{command} asks before it changes anything, and there is no terminal to ask on.",
                         hint=f"Review 'llmdeploy preview --offline --stack {stack}', then pass --yes.")


def _open(stack: str, folder: Path, config, *, create: bool):
    """The Automation API stack (None when ``create`` is False and it does not exist); exit 1 without the CLI."""
    from llmdeploy.infra import automation

    automation.pulumi_cli()  # one line and exit 1 when the CLI is missing
    if _is_llmdeploy_project(folder):
        return automation.select_stack(stack, project_name=PROJECT_NAME, work_dir=folder, create=create)

    from llmdeploy.infra.offline_preview import config_values

    def program() -> None:
        from llmdeploy.infra.__main__ import main

        main()

    return automation.select_stack(stack, project_name=PROJECT_NAME, program=program, config=config_values(config),
                                   create=create)


def _is_llmdeploy_project(folder: Path) -> bool:
    return (folder / "Pulumi.yaml").is_file() and (folder / "infra" / "__main__.py").is_file()


def _echo_line(line: str) -> None:
    click.echo(line.rstrip("\n"))


def _offline_preview(config, stack: str):
    try:
        from llmdeploy.infra.offline_preview import offline_preview
    except ImportError as exc:
        raise MissingDependencyError(f"the Pulumi SDK is not installed ({exc.name}).",
                                     hint="pip install 'llmdeploy[infra]'.") from None
    return offline_preview(config, stack=stack)


def _limits(config, origin: str, cli_limit: float | None):
    from llmdeploy import budget

    return budget.limits(config, origin=origin, cli_limit=cli_limit)


def _budget_line(monthly_usd: float, limits) -> str | None:
    if not limits:
        return None
    return "Budget: " + "; ".join(f"${lim.usd:,.2f}/month ({lim.source})" for lim in limits) + \
        f"; this stack: ${monthly_usd:,.2f}/month"


def _comparison(config) -> tuple[dict | None, str | None]:
    """(plan's JSON for the stack's recorded traffic, None) or (None, why there is none)."""
    from llmdeploy import report, stackplan
    from llmdeploy.catalog import load_catalog

    try:
        found = stackplan.plan_for_stack(config, load_catalog())
    except LlmdeployError as exc:
        return None, str(exc)
    return {**report.plan_to_dict(found.plan), "notes": list(found.notes)}, None


def _show_comparison(data: dict | None, why: str | None) -> None:
    """Plan's table, break-even and recommendation, rendered as 'llmdeploy plan' renders them."""
    from llmdeploy.cli.plan import render_plan

    click.echo("Self-hosted or managed? What 'llmdeploy plan' finds today for the traffic this stack was planned for:")
    if data is None:
        click.echo(f"  (no comparison: {why})")
        return
    render_plan(data)
    for note in data["notes"]:
        click.echo(f"Note: {note}")


@click.command()
@stack_option
@project_dir_option
@click.option("--offline", is_flag=True, help="No Pulumi CLI, no AWS: run the program under mocks and price each resource.")
@max_monthly_usd_option
@json_option
def preview(stack: str | None, project_dir: Path | None, offline: bool, max_monthly_usd: float | None, as_json: bool) -> None:
    """Show what a stack would create; with --offline also what it costs per month.

    Over a budget (the stack's llmdeploy:maxMonthlyUsd or --max-monthly-usd) it
    still shows everything, then says so in one line and exits 1: a CI check.

    \b
    Examples:
      llmdeploy preview --offline --stack dev
      llmdeploy preview --offline --stack dev --json
      llmdeploy preview --offline --stack prod --max-monthly-usd 2000   # fails over budget
      llmdeploy preview --stack dev          # pulumi preview against AWS
    """
    from llmdeploy import budget

    stack, folder, config, origin = _load(stack, project_dir)
    limits = _limits(config, origin, max_monthly_usd)
    if offline:
        result = _offline_preview(config, stack)
        if as_json:
            emit_json({**result.to_json(), "budget": [{"max_monthly_usd": lim.usd, "source": lim.source} for lim in limits],
                       "within_budget": all(round(result.monthly_usd, 2) <= lim.usd for lim in limits)})
        else:
            from llmdeploy.infra.offline_preview import format_table

            click.echo(format_table(result))
            if line := _budget_line(result.monthly_usd, limits):
                click.echo(line)
        budget.check(result.monthly_usd, limits, stack=stack)
        return
    from llmdeploy.catalog import load_catalog
    from llmdeploy.infra import automation

    budget.check(budget.monthly_estimate(config, load_catalog()), limits, stack=stack)
    summary = automation.preview(_open(stack, folder, config, create=True), on_output=_echo_line)
    if as_json:
        emit_json({"stack": stack, "change_summary": dict(getattr(summary, "change_summary", {}) or {})})


@click.command()
@stack_option
@project_dir_option
@yes_option
@max_monthly_usd_option
@json_option
@click.pass_context
def deploy(ctx: click.Context, stack: str | None, project_dir: Path | None, yes: bool, max_monthly_usd: float | None,
           as_json: bool) -> None:
    """Show what a stack costs against the alternatives, ask, then create or update it (pulumi up).

    \b
    Before anything is created it prints:
      1. plan's comparison of self-hosted and managed options for the traffic
         the stack recorded (table, break-even, recommendation);
      2. every resource the program will create, priced, and the monthly total
         (what 'preview --offline' prints);
      3. what changes against the running stack, when there is one (pulumi preview).
    Then it asks; --yes skips the question, and without a terminal --yes is required.
    A stack whose estimate is over its budget (llmdeploy:maxMonthlyUsd in the
    stack, --max-monthly-usd here) is refused before Pulumi runs.

    \b
    Examples:
      llmdeploy plan --mode realtime --stack dev
      llmdeploy deploy --stack dev
      llmdeploy deploy --stack prod --yes --max-monthly-usd 2000     # CI
    """
    from llmdeploy import budget
    from llmdeploy.infra import automation

    stack, folder, config, origin = _load(stack, project_dir)
    if as_json and not yes:
        raise UsageError("deploy --json prints one document and cannot ask first.", hint="Add --yes to deploy without asking.")
    _refuse_without_a_terminal("deploy", stack, yes)
    limits = _limits(config, origin, max_monthly_usd)

    comparison, why = _comparison(config)
    if not as_json:
        _show_comparison(comparison, why)
    result = _offline_preview(config, stack)
    if not as_json:
        from llmdeploy.infra.offline_preview import format_table

        click.echo("\nWhat it creates, priced:")
        click.echo(format_table(result))
        if line := _budget_line(result.monthly_usd, limits):
            click.echo(line)
    budget.check(result.monthly_usd, limits, stack=stack)

    running = _open(stack, folder, config, create=False)
    if running is None:
        if not as_json:
            click.echo(f"\nStack {stack!r} is not deployed yet ({automation.backend_url()}): "
                       "every resource above will be created.")
    else:
        if not as_json:
            click.echo(f"\nChanges against the running stack {stack!r} (pulumi preview):")
        automation.preview(running, on_output=None if as_json else _echo_line)

    if not yes and not click.confirm(
            f"\nDeploy stack {stack!r} ({config.mode}, {config.region}) for about ${result.monthly_usd:,.2f}/month?",
            default=False):
        click.echo("Not deployed: nothing was created or changed.")
        ctx.exit(1)

    target = running if running is not None else _open(stack, folder, config, create=True)
    outputs = automation.up(target, on_output=None if as_json else _echo_line)
    if as_json:
        emit_json({"stack": stack, "monthly_usd": round(result.monthly_usd, 2), "comparison": comparison,
                   "comparison_unavailable": why, "resources": result.to_json()["resources"], "outputs": outputs})
        return
    click.echo("")
    for key in ("endpoint_name", "url", "model_data_url", ESTIMATE_OUTPUT):
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
    """Delete every resource of a stack: says what stops being paid, then asks (unless --yes).

    \b
    Examples:
      llmdeploy destroy --stack dev
      llmdeploy destroy --stack dev --yes --remove
    """
    from llmdeploy.infra import automation

    stack, folder, config, origin = _load(stack, project_dir)
    _refuse_without_a_terminal("destroy", stack, yes)
    running = _open(stack, folder, config, create=False)
    if running is None:
        raise UsageError(f"stack {stack!r} does not exist in {automation.backend_url()}: there is nothing to destroy.",
                         hint="Check --stack and PULUMI_BACKEND_URL.")
    click.echo(_what_stops(stack, config, origin, automation.outputs(running)))
    if not yes:
        click.confirm(f"Delete every resource of stack {stack!r} ({config.mode}, {config.region})?", abort=True)
    automation.destroy(running, on_output=_echo_line, remove=remove)
    click.echo(f"Stack {stack!r} destroyed.")


def _what_stops(stack: str, config, origin: str, outputs: dict) -> str:
    """One line: the monthly bill that ends, from the stack's own output, else estimated from its file."""
    where = f"stack {stack!r} ({config.mode}, {config.region})"
    deployed = outputs.get(ESTIMATE_OUTPUT)
    if isinstance(deployed, (int, float)) and not isinstance(deployed, bool):
        return f"Destroying {where} stops about ${deployed:,.2f}/month (its {ESTIMATE_OUTPUT} output, priced when deployed)."
    from llmdeploy import budget
    from llmdeploy.catalog import load_catalog

    estimate = budget.monthly_estimate(config, load_catalog())
    return (f"Destroying {where} stops about ${estimate:,.2f}/month (estimated from {origin}: "
            f"the stack has no {ESTIMATE_OUTPUT} output).")
