"""`llmdeploy status --stack NAME`: how a deployed stack is doing, and what it costs against its plan.

Parsing and rendering only: CloudWatch, SageMaker and ELB reads live in ``llmdeploy.aws.monitoring``,
Cost Explorer in ``llmdeploy.aws.cost_explorer``, the plan's pricing in ``llmdeploy.plan``. boto3 is
imported inside the command only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from llmdeploy.cli.options import emit_json, json_option, project_dir_option, resolve_project_dir, stack_option
from llmdeploy.cli.render import table, usd
from llmdeploy.enums import Mode
from llmdeploy.errors import CloudError, UsageError


def _n(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


@click.command(epilog="""\b
Examples:
  llmdeploy status --stack prod
  llmdeploy status --stack prod --json | jq .cost
  llmdeploy status --stack prod --no-cost     # no Cost Explorer requests ($0.01 each)
""")
@stack_option
@project_dir_option
@click.option("--no-cost", is_flag=True, help="Skip the month-to-date cost (Cost Explorer bills $0.01 per request).")
@json_option
def status(stack: str | None, project_dir: Path | None, no_cost: bool, as_json: bool) -> None:
    """Endpoint state, last hour's traffic, latency and errors, alarm states, and month-to-date cost vs the plan.

    Reads the stack config plan wrote (Pulumi.NAME.yaml) for the mode, region and the plan's figures, then
    CloudWatch (the stack's alarms and metrics), SageMaker or the load balancer, and Cost Explorer (costs of
    resources tagged llmdeploy:stack=NAME; the tag must be an active cost-allocation tag).
    """
    from llmdeploy import costs, plan
    from llmdeploy.aws import clients
    from llmdeploy.aws import cost_explorer as ce
    from llmdeploy.aws import monitoring as aws_mon
    from llmdeploy.catalog import load_catalog
    from llmdeploy.monitoring import console_url
    from llmdeploy.stackconfig import read_stack_file, stack_file
    from llmdeploy.tags import STACK as STACK_TAG

    if not stack:
        raise UsageError("--stack NAME is required.", hint="It names the Pulumi.NAME.yaml that 'llmdeploy plan --stack NAME' wrote.")
    cat = load_catalog()
    config = read_stack_file(stack_file(resolve_project_dir(project_dir), stack), catalog=cat)
    now = dt.datetime.now(dt.UTC)
    clients.require_credentials(config.region)
    health = aws_mon.health(stack, config.region, config.mode, now=now)

    data = health.to_dict()
    data["dashboard_url"] = console_url(config.region, health.dashboard)
    # The latency the p90 alarm holds the stack to (alarmLatencyMs: plan's target, async: its estimate when longer).
    data["plan"] = {"latency_target_ms": config.alarm_latency_ms or None,
                    "requests_per_hour_per_instance": config.usage_requests_per_hour_per_instance or None,
                    "instance_count": None if config.mode == Mode.SERVERLESS else config.instance_count}
    monthly = costs.total(plan.planned_line_items(config, cat))
    to_date, hours = costs.planned_to_date(monthly, now)
    cost: dict = {"plan_monthly_usd": round(monthly, 2), "plan_to_date_usd": round(to_date, 2),
                  "hours_elapsed": round(hours, 1), "tag": {"key": STACK_TAG, "status": None},
                  "month_to_date": None, "note": ""}
    problem: CloudError | None = None
    if no_cost:
        cost["note"] = "not read (--no-cost)"
    else:
        try:
            tag = ce.tag_status(config.region)
            cost["tag"]["status"] = tag
            if tag == "Active":
                mtd = ce.month_to_date(stack, config.region, now=now)
                cost["month_to_date"] = {"start": mtd.start.isoformat(), "end_exclusive": mtd.end.isoformat(),
                                         "usd": round(mtd.amount, 2), "unit": mtd.unit, "estimated": mtd.estimated,
                                         "metric": ce.COST_METRIC}
                cost["note"] = "Cost Explorer lags up to 24 hours behind usage"
            elif tag == "Inactive":
                cost["note"] = (f"tag {STACK_TAG} is not an active cost-allocation tag, so Cost Explorer attributes no "
                                f"cost to the stack. Activate it: {ce.ACTIVATE_HINT} (costs count from activation on).")
            else:
                cost["note"] = (f"Cost Explorer has not seen tag {STACK_TAG} yet (it appears up to 24 hours after a tagged "
                                f"resource starts); then activate it: {ce.ACTIVATE_HINT}.")
        except CloudError as exc:
            problem = exc
            cost["note"] = f"not read: {exc}"
    data["cost"] = cost

    if as_json:
        emit_json(data)
    else:
        _render(health, data)
    if problem is not None:
        raise problem


def _render(health, data: dict) -> None:
    e, h, plan_, cost = health.endpoint, health.last_hour, data["plan"], data["cost"]
    what = "instances" if e.kind.startswith("Sage") else "servers healthy"
    count = "" if e.instances is None else f", {e.instances} of {e.desired} {what}"
    click.echo(f"Stack {health.stack} ({health.mode}, {health.region}): {e.kind} {e.name} {e.status}{count}"
               + (f" ({e.detail})" if e.detail else ""))
    target = f" (target {plan_['latency_target_ms']:,} ms)" if plan_["latency_target_ms"] else ""
    rate = "-" if h.error_rate is None else f"{h.error_rate:.2%}"
    elb = f", load balancer 5xx {_n(h.load_balancer_5xx)}" if h.load_balancer_5xx is not None else ""
    click.echo(f"Last hour ({h.start[11:16]}-{h.end[11:16]} UTC): {_n(h.requests)} requests, latency p50 {_n(h.p50_ms, ' ms')}"
               f" / p90 {_n(h.p90_ms, ' ms')}{target}, 5xx {_n(h.errors_5xx)} ({rate}){elb}, 4xx {_n(h.errors_4xx)}")
    states = [a.state for a in health.alarms]
    summary = ", ".join(f"{states.count(s)} {s}" for s in ("ALARM", "INSUFFICIENT_DATA", "OK") if s in states)
    click.echo(f"Alarms ({len(states)}): {summary}")
    rows = [[a.state, a.key, a.since[:16].replace("T", " "), a.reason[:90]] for a in health.alarms]
    click.echo("\n".join("  " + line for line in table(["STATE", "ALARM", "SINCE (UTC)", "REASON"], rows).splitlines()))
    mtd = cost["month_to_date"]
    plan_line = (f"the plan's {usd(cost['plan_to_date_usd'])} for the {cost['hours_elapsed'] / 24:.1f} days so far "
                 f"(plan: {usd(cost['plan_monthly_usd'])}/month)")
    if mtd:
        share = f"{mtd['usd'] / cost['plan_to_date_usd']:.0%} of " if cost["plan_to_date_usd"] else "against "
        click.echo(f"Cost this month: {usd(mtd['usd'])}{' (estimated)' if mtd['estimated'] else ''}, {share}{plan_line}. "
                   f"{mtd['metric']} of resources tagged {cost['tag']['key']}={health.stack}, {mtd['start']} to "
                   f"{mtd['end_exclusive']} (exclusive); {cost['note']}.")
    else:
        click.echo(f"Cost this month: {cost['note']} Plan: {plan_line[len('the plan' + chr(39) + 's '):]}.")
    click.echo(f"Dashboard: {data['dashboard_url']}")
