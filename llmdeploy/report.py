"""A plan as plain data (the documented JSON), as Markdown, and as the stack file's header."""

from __future__ import annotations

import datetime as dt

from llmdeploy.costs import usd
from llmdeploy.plan import BREAK_EVEN_RANGE, Option, Plan, describe_intervals

JSON_SCHEMA_VERSION = 1


def option_to_dict(o: Option) -> dict:
    return {"label": o.label, **o.to_dict()}


def plan_to_dict(p: Plan) -> dict:
    """Stable keys; documented in README ("plan --json")."""
    from llmdeploy.sizing import parameter_count

    a = p.assumptions
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "model": {"name": p.model.name, "hf_id": p.model.hf_id, "revision": p.model.revision or None,
                  "parameters": parameter_count(p.model).total},
        "dtype": p.dtype,
        "region": p.region,
        "mode": p.mode,
        "term": p.term,
        "traffic": {
            "requests_per_day": p.traffic.requests_per_day,
            "peak_rps": p.traffic.peak(a),
            "input_tokens": p.traffic.input_tokens,
            "output_tokens": p.traffic.output_tokens,
            "active_hours": p.traffic.active_hours,
            "latency_target_s": p.traffic.latency_target_s,
        },
        "catalog": {"origin": p.catalog_origin, "date": p.catalog_date},
        "calibrations": list(p.calibrations),
        "instance_types": list(p.instance_types),
        "options": [option_to_dict(o) for o in p.options],
        "choice": option_to_dict(p.choice),
        "recommended": option_to_dict(p.recommended),
        "reasons": list(p.reasons),
        "cheapest_by_traffic": {
            "range_requests_per_day": list(BREAK_EVEN_RANGE),
            "exact_to_requests_per_day": p.cheapest_exact_to,
            "intervals": [{"from_requests_per_day": i.low, "to_requests_per_day": i.high, "option": i.option or None}
                          for i in p.cheapest],
            "note": "; ".join(describe_intervals(p.cheapest)),  # every stretch (text output shows the first few)
        },
        "break_even": [
            {"managed": b.managed, "versus": b.versus, "variable": b.variable, "value": b.value, "note": b.note,
             "crossings": list(b.crossings), "managed_cheaper": [list(r) for r in b.managed_cheaper]}
            for b in p.break_even
        ],
    }


def plan_markdown(d: dict) -> str:
    t = d["traffic"]
    lines = [
        f"### llmdeploy plan: {d['model']['name']} ({d['dtype']}) in {d['region']}",
        "",
        f"{t['requests_per_day']:,.0f} requests/day over {t['active_hours']} h, peak {t['peak_rps']:.2f} req/s, "
        f"{t['input_tokens']}→{t['output_tokens']} tokens, latency target {t['latency_target_s']:g} s. "
        f"Prices: {d['catalog']['origin']}, the oldest from {d['catalog']['date']}.",
        "",
        "| option | instance | count | per month | per year | feasible |",
        "|---|---|---:|---:|---:|---|",
    ]
    for o in d["options"]:
        mark = " **(choice)**" if o["label"] == d["choice"]["label"] else ""
        ok = "yes" if o["feasible"] else f"no: {o['reason']}"
        lines.append(f"| {o['label']}{mark} | {o['instance_type'] or '-'} | {o['instance_count'] or '-'} | "
                     f"{usd(o['monthly_usd'])} | {usd(o['annual_usd'])} | {ok} |")
    lines += ["", f"**Recommended:** {d['recommended']['label']}"]
    lines += [f"- {r}" for r in d["reasons"]]
    from llmdeploy.plan import TEXT_STRETCHES, Interval

    intervals = [Interval(i["from_requests_per_day"], i["to_requests_per_day"], i["option"] or "")
                 for i in d["cheapest_by_traffic"]["intervals"]]
    lines += ["", "**Cheapest by traffic** (requests/day): " + "; ".join(describe_intervals(intervals, limit=TEXT_STRETCHES))]
    return "\n".join(lines)


def stack_header(p: Plan) -> str:
    c = p.choice
    return (
        f"Written by `llmdeploy plan` on {dt.date.today().isoformat()}: {c.label} for {p.model.name} in {p.region},\n"
        f"${c.monthly_usd:,.2f}/month at {p.traffic.requests_per_day:,.0f} requests/day (prices: {p.catalog_origin}, the oldest "
        f"from {p.catalog_date}).\n"
        "Re-run plan to change it; 'llmdeploy preview --offline' prices what the program would create."
    )
