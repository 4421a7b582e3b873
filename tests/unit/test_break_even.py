"""Break-even over the whole range: every statement plan makes holds at every traffic level, checked point by point.

The intervals are computed from instance-count steps (llmdeploy/plan.py); these tests re-cost every option at
hundreds of traffic levels the slow way (the same code path as the plan's own options and recommendation) and
require the stated cheapest option there, including just either side of every stated boundary.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from click.testing import CliRunner

from llmdeploy import calibration as cal_mod
from llmdeploy import catalog as c
from llmdeploy import plan as p
from llmdeploy.assumptions import load_assumptions
from llmdeploy.cli.main import cli
from llmdeploy.enums import Mode
from llmdeploy.models import load_model_config

PROFILES = {
    "xl-default": ("flan-t5-xl", p.Traffic()),
    "xl-500k-24h": ("flan-t5-xl", p.Traffic(requests_per_day=500_000, active_hours=24)),
    "small-serverless": ("flan-t5-small", p.Traffic(requests_per_day=2_000, latency_target_s=10)),
    "base-office-hours": ("flan-t5-base", p.Traffic(requests_per_day=50_000, active_hours=8, latency_target_s=20)),
    "qwen-peak": ("qwen2.5-0.5b", p.Traffic(requests_per_day=20_000, peak_rps=3.0)),
}


@pytest.fixture(scope="module")
def cat():
    return c.load_catalog_from(c.BUNDLED_DIR)


def _setup(cat, name, traffic, term="1y"):
    m = load_model_config(name)
    a = load_assumptions()
    plan = p.make_plan(m, cat=cat, traffic=traffic, term=term)
    ctx = p._context(m, m.native_dtype, cat, "us-east-1", traffic, loading="safetensors", buffer=None, a=a,
                     cals=cal_mod.resolve((), a, cat=cat))
    return plan, ctx


def _cheapest_the_slow_way(ctx, traffic, term, rpd, keys=None):
    options = [o for o in ctx.options(traffic.scaled(rpd)) if o.feasible and (o.mode != "reserved" or o.term == term)]
    if keys is not None:
        options = [o for o in options if o.label in keys]
    if not options:
        return ""
    return min(options, key=lambda o: (o.monthly_usd, list(Mode).index(o.mode))).label


def _label_at(intervals, rpd):
    for i in intervals:
        if i.low < rpd <= i.high or (rpd == i.low == intervals[0].low):
            return i.option
    raise AssertionError(f"{rpd} is in no interval")


def _probe_points(intervals, seed):
    low, high = p.BREAK_EVEN_RANGE
    rng = random.Random(seed)
    points = [low * (high / low) ** (k / 120) for k in range(121)]
    points += [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(60)]
    for i in intervals[1:]:  # both sides of every stated boundary
        points += [i.low * (1 - 1e-7), i.low * (1 + 1e-7)]
    return sorted(x for x in points if low <= x <= high)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_cheapest_option_stated_for_each_stretch_is_the_cheapest_at_every_point(cat, profile):
    name, traffic = PROFILES[profile]
    plan, ctx = _setup(cat, name, traffic)
    intervals = plan.cheapest
    assert intervals[0].low == p.BREAK_EVEN_RANGE[0] and intervals[-1].high == p.BREAK_EVEN_RANGE[1]
    assert all(a.high == b.low for a, b in zip(intervals, intervals[1:], strict=False)), "the stretches tile the range"
    assert all(a.option != b.option for a, b in zip(intervals, intervals[1:], strict=False)), "neighbours differ (merged)"
    assert plan.cheapest_exact_to == p.BREAK_EVEN_RANGE[1]
    for rpd in _probe_points(intervals, seed=sum(map(ord, profile))):
        assert _label_at(intervals, rpd) == _cheapest_the_slow_way(ctx, traffic, "1y", rpd), (profile, rpd)
    # ...and the plan's own recommendation sits in the stretch its traffic falls in.
    assert _label_at(intervals, traffic.requests_per_day) == plan.recommended.label


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_pairwise_break_even_holds_at_every_point(cat, profile):
    name, traffic = PROFILES[profile]
    plan, ctx = _setup(cat, name, traffic)
    reserved = "reserved (1-year RI)"
    for b in plan.break_even:
        if b.variable != "requests_per_day" or not b.crossings and not b.managed_cheaper:
            continue
        pieces = [p.Interval(lo, hi, b.managed) for lo, hi in b.managed_cheaper]
        for rpd in _probe_points(pieces, seed=7):
            cheaper = _cheapest_the_slow_way(ctx, traffic, "1y", rpd, keys={b.managed, reserved})
            inside = any(lo < rpd <= hi or rpd == lo == p.BREAK_EVEN_RANGE[0] for lo, hi in b.managed_cheaper)
            assert (cheaper == b.managed) == inside, (profile, b.managed, rpd, b.note)


def test_async_hours_statement_holds_for_every_hour(cat):
    name, traffic = PROFILES["xl-default"]
    plan, ctx = _setup(cat, name, traffic)
    b = next(b for b in plan.break_even if b.variable == "active_hours_per_day")
    for hours in range(1, 25):
        t = replace(traffic, active_hours=hours)
        mine, theirs = ctx.option("async", None, t).monthly_usd, ctx.option("reserved", "1y", t).monthly_usd
        inside = any(lo <= hours <= hi for lo, hi in b.managed_cheaper)
        assert (mine < theirs) == inside, (hours, mine, theirs, b.note)


def test_the_issue_case_no_longer_contradicts_itself(cat):
    """The old note said 'reserved above 245,045/day' while the plan at 500k/day recommended async."""
    name, traffic = PROFILES["xl-default"]
    plan, _ = _setup(cat, name, traffic)
    at_500k = p.make_plan(load_model_config(name), cat=cat, traffic=traffic.scaled(500_000))
    assert _label_at(plan.cheapest, 500_000) == at_500k.recommended.label


def test_curves_that_cross_many_times_are_all_reported(cat):
    """Async for 14 h a day nearly ties a 1-year RI per request: the cheaper one flips as instance counts step."""
    name, traffic = "flan-t5-xl", p.Traffic(active_hours=14)
    plan, ctx = _setup(cat, name, traffic)
    pair = next(b for b in plan.break_even if b.managed == "async")
    for rpd in _probe_points([p.Interval(lo, hi, "async") for lo, hi in pair.managed_cheaper], seed=3):
        cheaper = _cheapest_the_slow_way(ctx, traffic, "1y", rpd, keys={"async", "reserved (1-year RI)"})
        inside = any(lo < rpd <= hi or rpd == lo == 1.0 for lo, hi in pair.managed_cheaper)
        assert (cheaper == "async") == inside, rpd
    assert len(pair.crossings) > 10
    assert len(pair.crossings) == len(pair.managed_cheaper) * 2 - (pair.managed_cheaper[0][0] == 1.0) - \
        (pair.managed_cheaper[-1][1] == p.BREAK_EVEN_RANGE[1])
    assert "more; every stretch is in --json" in pair.note, "the text note says it shows only the first stretches"


def test_plan_json_text_and_markdown_state_the_same_intervals():
    runner = CliRunner()
    args = ["plan", "--model", "flan-t5-small", "--requests-per-day", "2000", "--latency-target", "10"]
    data = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    cheapest = data["cheapest_by_traffic"]
    assert cheapest["range_requests_per_day"] == list(p.BREAK_EVEN_RANGE)
    intervals = cheapest["intervals"]
    assert [i["option"] for i in intervals][:2] == ["serverless", "async"]
    text = runner.invoke(cli, args).output
    boundary = f"{intervals[1]['from_requests_per_day']:,.0f}"
    assert f"serverless up to {boundary}" in text and f"async {boundary}–" in text
    markdown = runner.invoke(cli, [*args, "--markdown"]).output
    assert f"serverless up to {boundary}" in markdown
    for b in data["break_even"]:
        assert {"managed", "versus", "variable", "value", "note", "crossings", "managed_cheaper"} <= set(b)


def test_chart_shades_the_same_intervals(cat):
    from llmdeploy.chart import cheapest_in_view, traffic_points

    name, traffic = PROFILES["small-serverless"]
    plan, _ = _setup(cat, name, traffic)
    xs = traffic_points(traffic.requests_per_day)
    view = cheapest_in_view(plan, xs[0], xs[-1])
    assert view[0].low == xs[0] and view[-1].high == xs[-1]
    inside = [i for i in plan.cheapest if xs[0] < i.low < xs[-1]]
    assert [v.low for v in view[1:]] == [i.low for i in inside], "every transition in view is drawn"
