"""`llmdeploy plan`: what every hosting mode costs for a traffic profile, which one to use, and its stack config."""

from __future__ import annotations

import click

from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table, usd
from llmdeploy.plan import PLAN_MODES, TERMS



@click.command(
    epilog="""\b
Examples:
  llmdeploy plan --mode reserved                      # FLAN-T5-XL, us-east-1, 10k requests/day
  llmdeploy plan --model flan-t5-small --mode serverless --requests-per-day 2000
  llmdeploy plan --mode auto --requests-per-day 200000 --active-hours 24 --json
  llmdeploy plan --mode async --stack dev             # also writes Pulumi.dev.yaml
  llmdeploy plan --mode reserved --instance-type g4dn.2xlarge --instance-type g5.2xlarge
  llmdeploy plan --model flan-t5-small --calibration cpu.json   # serverless speed from your own calibration
  llmdeploy plan --markdown >> $GITHUB_STEP_SUMMARY
"""
)
@click.option("--mode", type=click.Choice(PLAN_MODES), default="auto", show_default=True, envvar="LLMDEPLOY_MODE",
              help="Hosting mode to plan for; auto picks the cheapest feasible one.")
@click.option("--term", type=click.Choice(TERMS), default="1y", show_default=True,
              help="EC2 pricing term for reserved mode (self-hosted).")
@opt.model_option
@opt.dtype_option
@opt.region_option
@click.option("--requests-per-day", type=float, default=10_000, show_default=True, help="Average daily requests.")
@click.option("--peak-rps", type=float, default=None, help="Peak requests per second (default: twice the active-hours average).")
@click.option("--input-tokens", type=int, default=256, show_default=True, help="Prompt tokens per request.")
@click.option("--output-tokens", type=int, default=64, show_default=True, help="Generated tokens per request.")
@click.option("--active-hours", type=int, default=12, show_default=True, help="Hours a day that see traffic (1-24).")
@click.option("--latency-target", type=float, default=5.0, show_default=True, help="Seconds one request may take.")
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
@click.option("--chart", type=click.Path(dir_okay=False, writable=True), help="Also draw monthly cost against traffic to this PNG.")
@opt.catalog_option
@opt.json_option
def plan(mode, term, model, dtype, region, requests_per_day, peak_rps, input_tokens, output_tokens, active_hours, latency_target,
         instance_types, buffer, loading, calibration_files, stack, project_dir, owner, cost_center, markdown, chart, catalog_dir,
         as_json):
    """Cost every way of hosting MODEL for a traffic profile and pick one.

    Options: self-hosted EC2 (reserved: on-demand, 1-year and 3-year RI),
    SageMaker real-time, SageMaker async (scales to zero) and SageMaker
    serverless. With --stack, writes the Pulumi stack config that
    `llmdeploy deploy` / `pulumi up` read; without it, writes nothing.
    """
    from llmdeploy import plan as plan_mod
    from llmdeploy import report
    from llmdeploy.catalog import load_catalog
    from llmdeploy.models import load_model_config
    from llmdeploy.stackconfig import stack_file, write_stack_file

    if as_json and markdown:
        raise click.UsageError("--json and --markdown are exclusive: pick one.")
    cat = load_catalog(catalog_dir)
    traffic = plan_mod.Traffic(requests_per_day=requests_per_day, input_tokens=input_tokens, output_tokens=output_tokens,
                               active_hours=active_hours, latency_target_s=latency_target, peak_rps=peak_rps)
    result = plan_mod.make_plan(load_model_config(model), cat=cat, region=region, mode=mode, term=term, dtype=dtype,
                                traffic=traffic, loading=loading, buffer=buffer, instance_types=instance_types,
                                calibration_files=calibration_files)
    written = None
    if stack:
        config = plan_mod.stack_config_for(result, owner=owner, cost_center=cost_center)
        path = stack_file(opt.resolve_project_dir(project_dir), stack)
        written = write_stack_file(path, config, header=report.stack_header(result))
    chart_path = None
    if chart:
        from llmdeploy import chart as chart_mod

        chart_path = chart_mod.draw(result, cat, chart)
    data = report.plan_to_dict(result)
    data["stack_file"] = None if written is None else str(written)
    data["chart"] = None if chart_path is None else str(chart_path)
    if as_json:
        opt.emit_json(data)
    elif markdown:
        click.echo(report.plan_markdown(data))
    else:
        _render(data)
        if written:
            click.echo(f"\nWrote {written}: deploy it with 'llmdeploy deploy --stack {stack}' or 'pulumi up -s {stack}'.")
        if chart_path:
            click.echo(f"Drew {chart_path}.")


def _render(d: dict) -> None:
    t = d["traffic"]
    click.echo(
        f"Plan for {d['model']['name']} ({d['dtype']}, {d['model']['parameters']:,} parameters) in {d['region']}: "
        f"{t['requests_per_day']:,.0f} requests/day over {t['active_hours']} h, peak {t['peak_rps']:.2f} req/s, "
        f"{t['input_tokens']}→{t['output_tokens']} tokens, latency target {t['latency_target_s']:g} s"
    )
    click.echo(f"Prices: {d['catalog']['origin']}, the oldest from {d['catalog']['date']} (USD, {d['region']})")
    shown = {o["speed_model"].split(" ", 1)[0] for o in (d["choice"], d["recommended"], *d["options"])
             if o["speed_model"] and (o is d["choice"] or o is d["recommended"] or o["mode"] == "serverless")}
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
    click.echo(f"\nChoice (--mode {d['mode']}): {c['label']} on {c['instance_type'] or 'serverless'}"
               f"{' × ' + str(c['instance_count']) if c['instance_count'] else ''}: {usd(c['monthly_usd'])}/month, "
               f"{usd(c['annual_usd'])}/year")
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
