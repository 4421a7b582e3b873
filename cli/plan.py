"""`llmdeploy plan`: what every hosting mode costs for a traffic profile, which one to use, and its stack config."""

from __future__ import annotations

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table, usd
from llmdeploy.enums import Mode, Term
from llmdeploy.fileio import check_output_path, write_atomic
from llmdeploy.plan import AUTO, PLAN_MODES


@click.command(
    epilog="""\b
Examples:
  llmdeploy plan --mode reserved                      # FLAN-T5-XL, us-east-1, 10k requests/day
  llmdeploy plan --model flan-t5-small --mode serverless --requests-per-day 2000
  llmdeploy plan --model Qwen/Qwen2.5-1.5B --revision main --stack dev   # any Hub id; the stack records its commit
  llmdeploy plan --mode auto --requests-per-day 200000 --active-hours 24 --json
  llmdeploy plan --mode async --stack dev             # also writes Pulumi.dev.yaml
  llmdeploy plan --mode reserved --instance-type g4dn.2xlarge --instance-type g5.2xlarge
  llmdeploy plan --model flan-t5-small --calibration cpu.json   # serverless speed from your own calibration
  llmdeploy plan --markdown >> $GITHUB_STEP_SUMMARY
"""
)
@click.option("--mode", type=opt.Choice(PLAN_MODES), default=AUTO, show_default=True, envvar="LLMDEPLOY_MODE",
              help="Hosting mode to plan for; auto picks the cheapest feasible one.")
@click.option("--term", type=opt.Choice([t.value for t in Term]), default=Term.ONE_YEAR.value, show_default=True,
              help="EC2 pricing term for reserved mode (self-hosted).")
@opt.model_option
@opt.revision_option
@opt.dtype_option
@opt.region_option
# Flags are parsed as finite numbers here; their ranges and consistency (peak >= average) are checked
# once, by plan.Traffic.validate, so a library caller gets the same lines.
@click.option("--requests-per-day", type=opt.Number(), default=10_000, show_default=True, help="Average daily requests.")
@click.option("--peak-rps", type=opt.Number(), default=None,
              help="Peak requests per second, at least the active-hours average (default: twice that average).")
@click.option("--input-tokens", type=opt.Whole(), default=256, show_default=True, help="Prompt tokens per request.")
@click.option("--output-tokens", type=opt.Whole(), default=64, show_default=True, help="Generated tokens per request.")
@click.option("--active-hours", type=opt.Whole(), default=12, show_default=True, help="Hours a day that see traffic (1-24).")
@click.option("--latency-target", type=opt.Number(), default=5.0, show_default=True, help="Seconds one request may take.")
@click.option("--instance-type", "instance_types", multiple=True, metavar="TYPE",
              help="Only consider this GPU type (EC2 or ml. name); repeatable.")
@opt.buffer_option
@opt.loading_option
@opt.calibration_option
@opt.stack_option
@opt.project_dir_option
@click.option("--owner", envvar="LLMDEPLOY_OWNER", default="unknown", show_default=True, help="Owner tag for the stack.")
@click.option("--cost-center", envvar="LLMDEPLOY_COST_CENTER", default="unassigned", show_default=True, help="Cost-center tag.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for pull-request comments).")
@click.option("--chart", type=click.Path(dir_okay=False), help="Also draw monthly cost against traffic to this PNG.")
@click.option("--force", is_flag=True,
              help="Update an existing Pulumi.NAME.yaml without asking (only the settings plan owns; never from the config file).")
@opt.catalog_option
@opt.json_option
@click.pass_context
def plan(ctx, mode, term, model, revision, dtype, region, requests_per_day, peak_rps, input_tokens, output_tokens,
         active_hours, latency_target, instance_types, buffer, loading, calibration_files, stack, project_dir, owner,
         cost_center, markdown, chart, force, catalog_dir, as_json):
    """Cost every way of hosting MODEL for a traffic profile and pick one.

    Options: self-hosted EC2 (reserved: on-demand, 1-year and 3-year RI),
    SageMaker real-time, SageMaker async (scales to zero) and SageMaker
    serverless. With --stack, writes the Pulumi stack config that
    `llmdeploy deploy` / `pulumi up` read; without it, writes nothing.

    An existing Pulumi.NAME.yaml is merged, not replaced: plan sets only the
    settings it decides and keeps every other key (secrets, encryptionsalt,
    aws:profile, an ingressCidr or certificateArn you set) and the file's mode.
    It shows the changes and asks, or needs --force when there is no terminal.
    Nothing is written unless every check of the command passed.
    """
    from llmdeploy import plan as plan_mod
    from llmdeploy import report
    from llmdeploy.catalog import load_catalog
    from llmdeploy.models import load_model_config
    from llmdeploy.stackconfig import stack_file

    if as_json and markdown:
        raise click.UsageError("--json and --markdown are exclusive: pick one.")
    # Output paths first: a bad one is refused before any work (and before the stack file is touched).
    stack_path = stack_file(opt.resolve_project_dir(project_dir), stack) if stack else None
    if stack_path is not None:
        check_output_path(stack_path, "stack config")
    if chart:
        from llmdeploy import chart as chart_mod

        chart_mod.check_path(chart)
    cat = load_catalog(catalog_dir)
    traffic = plan_mod.Traffic(requests_per_day=requests_per_day, input_tokens=input_tokens, output_tokens=output_tokens,
                               active_hours=active_hours, latency_target_s=latency_target, peak_rps=peak_rps)
    model_config = load_model_config(model, revision=revision)
    opt.echo_hub_notice(model_config.hub.notice if model_config.hub else None)
    result = plan_mod.make_plan(model_config, cat=cat, region=region, mode=mode, term=term, dtype=dtype,
                                traffic=traffic, loading=loading, buffer=buffer, instance_types=instance_types,
                                calibration_files=calibration_files)
    png = chart_mod.render(result, cat) if chart else None
    update = _stack_update(ctx, result, cat, stack_path, owner=owner, cost_center=cost_center, force=force) \
        if stack_path is not None else None
    # Every check passed: write.
    written = update.write() if update is not None and update.changes else (update.path if update else None)
    chart_path = write_atomic(chart_mod.check_path(chart), png) if png is not None else None  # png iff --chart
    data = report.plan_to_dict(result)
    data["stack_file"] = None if written is None else str(written)
    data["stack_changes"] = None if update is None else [{"key": k, "old": o, "new": n} for k, o, n in update.changes]
    data["chart"] = None if chart_path is None else str(chart_path)
    data.update(_stack_cost(update, cat, result))
    if as_json:
        opt.emit_json(data)
    elif markdown:
        click.echo(report.plan_markdown(data))
    else:
        _render(data)
        _render_stack(data, result, update, written, stack)
        if chart_path:
            click.echo(f"Drew {chart_path}.")


def _stack_update(ctx, result, cat, stack_path, *, owner: str, cost_center: str, force: bool):
    """The merge of the plan's stack config into Pulumi.NAME.yaml, checked, shown and agreed to; not written yet."""
    from click.core import ParameterSource

    from llmdeploy import plan as plan_mod
    from llmdeploy import report
    from llmdeploy.errors import LlmdeployError
    from llmdeploy.stackconfig import prepare_stack_file

    config = plan_mod.stack_config_for(result, owner=owner, cost_center=cost_center)
    config.validate(cat)  # AWS's limits and tag patterns: refuse before writing, as preview and the program would
    # --owner / --cost-center left at their built-in default do not overwrite the file's own values.
    keep = tuple(name for name, param in (("owner", "owner"), ("costCenter", "cost_center"))
                 if ctx.get_parameter_source(param) is ParameterSource.DEFAULT)
    update = prepare_stack_file(stack_path, config, header=report.stack_header(result), keep_existing=keep)
    if update.existed and update.changes:
        if not force and not _interactive():
            raise LlmdeployError(f"{update.path} exists and plan would change {update.brief()}; pass --force to "
                                 "update those (every other key is kept), or run plan in a terminal to be asked.")
        for line in update.summary():
            click.echo(line, err=True)
        if not force:
            click.confirm(f"Update {update.path.name}?", abort=True, err=True)
    return update


def _stack_cost(update, cat, result) -> dict:
    """What the stack file costs as written: plan's figure, unless a setting plan leaves alone changes it (an
    ingressCidr or certificateArn kept from the file makes the load balancer internet-facing: its public IPv4
    addresses). preview --offline, the program's budget and status price the file, so say so."""
    from llmdeploy import costs
    from llmdeploy import plan as plan_mod

    stack_items = plan_mod.planned_line_items(update.config, cat) if update is not None and update.config else None
    return {
        "stack_monthly_usd": None if stack_items is None else round(costs.total(stack_items), 2),
        "stack_extra_line_items": None if stack_items is None else [
            {"kind": i.kind, "description": i.description, "monthly_usd": round(i.monthly_usd, 2)}
            for i in stack_items if i.kind not in {o.kind for o in result.choice.line_items}],
    }


def _render_stack(data: dict, result, update, written, stack: str | None) -> None:
    """What happened to the stack file, and what it costs when that differs from the plan's choice."""
    if data["stack_monthly_usd"] is not None and data["stack_monthly_usd"] != result.choice.monthly_usd:
        extra = "; ".join(f"{i['description']}: {usd(i['monthly_usd'])}" for i in data["stack_extra_line_items"])
        click.echo(f"\n{update.path.name} as written costs {usd(data['stack_monthly_usd'])}/month, not "
                   f"{usd(result.choice.monthly_usd)}" + (f" ({extra})" if extra else "") + ": a setting plan leaves "
                   "alone (ingressCidr or certificateArn: an internet-facing load balancer) adds to it; preview "
                   "--offline, the budget and status use this figure.")
    if update is not None and not update.changes:
        click.echo(f"\n{written} already matches this plan: left as it is.")
    elif written:
        click.echo(f"\nWrote {written}: deploy it with 'llmdeploy deploy --stack {stack}' or 'pulumi up -s {stack}'.")


def _interactive() -> bool:
    """Whether someone can answer a question (stdin is a terminal)."""
    import sys

    return sys.stdin.isatty()


def _render(d: dict) -> None:
    t = d["traffic"]
    click.echo(
        f"Plan for {d['model']['name']} ({d['dtype']}, {d['model']['parameters']:,} parameters) in {d['region']}: "
        f"{t['requests_per_day']:,.0f} requests/day over {t['active_hours']} h, peak {t['peak_rps']:.2f} req/s, "
        f"{t['input_tokens']}→{t['output_tokens']} tokens, latency target {t['latency_target_s']:g} s"
    )
    click.echo(f"Prices: {d['catalog']['origin']}, the oldest from {d['catalog']['date']} (USD, {d['region']})")
    shown = {o["speed_model"].split(" ", 1)[0] for o in (d["choice"], d["recommended"], *d["options"])
             if o["speed_model"] and (o is d["choice"] or o is d["recommended"] or o["mode"] == Mode.SERVERLESS)}
    for c in d["calibrations"]:
        if c["device"] in shown:
            click.echo(f"Speed on {c['device']}: {c['origin']}: {c['name']} [{c['date']}]")
    click.echo("")
    rows = []
    for o in d["options"]:
        rows.append([
            o["label"], o["instance_type"] or (f"{o['serverless_memory_mb']} MB" if o["serverless_memory_mb"] else "-"),
            o["instance_count"] or "-", usd(o["monthly_usd"]), usd(o["annual_usd"]),
            "-" if o["latency_s"] is None else f"{o['latency_s']:.2f} s @{o['batch_size']}", "yes" if o["feasible"] else "no", o["reason"],
        ])
    click.echo(table(["option", "instance", "count", "per month", "per year", "latency @batch", "ok", "why"], rows, right=[2, 3, 4, 5]))
    c = d["choice"]
    click.echo(f"\nChoice (--mode {d['mode']}): {c['label']} on {c['instance_type'] or Mode.SERVERLESS}"
               f"{' × ' + str(c['instance_count']) if c['instance_count'] else ''}: {usd(c['monthly_usd'])}/month, "
               f"{usd(c['annual_usd'])}/year")
    watch = [i for i in c["line_items"] if i["kind"].startswith("cloudwatch-")]
    click.echo("Monitoring: " + (f"{usd(sum(i['monthly_usd'] for i in watch))}/month of it is the stack's CloudWatch alarms, "
                                 "dashboard and GPU metrics (before the account's free tier)" if watch else
                                 f"CloudWatch alarms and dashboard not priced (the catalog has no CloudWatch prices for "
                                 f"{d['region']})"))
    click.echo(f"Recommended: {d['recommended']['label']}")
    for reason in d["reasons"]:
        click.echo(f"  - {reason}")
    cheapest = d["cheapest_by_traffic"]
    low, high = cheapest["range_requests_per_day"]
    click.echo(f"Cheapest option by traffic ({low:,.0f} to {high:,.0f} requests/day, this traffic's shape):")
    from llmdeploy.plan import TEXT_STRETCHES, Interval, describe_intervals

    intervals = [Interval(i["from_requests_per_day"], i["to_requests_per_day"], i["option"] or "") for i in cheapest["intervals"]]
    for line in describe_intervals(intervals, limit=TEXT_STRETCHES):
        click.echo(f"  - {line}")
    if cheapest["exact_to_requests_per_day"] < high:
        click.echo(f"  (exact up to {cheapest['exact_to_requests_per_day']:,.0f}; checked on a fine grid above)")
    click.echo("Break-even against self-hosting:")
    for b in d["break_even"]:
        click.echo(f"  - {b['note']}")


# `llmdeploy deploy` shows this same comparison, for the traffic the stack recorded, before it asks (cli/deploy.py).
render_plan = _render
