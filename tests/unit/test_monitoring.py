"""The monitoring definitions (llmdeploy.monitoring), what plan records for them, and what they cost."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from click.testing import CliRunner

from llmdeploy import catalog as c
from llmdeploy import costs
from llmdeploy import monitoring as mon
from llmdeploy.aws.cost_explorer import month_bounds
from llmdeploy.cli.main import cli
from llmdeploy.errors import ConfigError
from llmdeploy.models import load_model_config
from llmdeploy.plan import Traffic, make_plan, planned_line_items, stack_config_for
from llmdeploy.stackconfig import StackConfig, check_alarm_email, check_sns_topic_arn

PLANS = {  # mode -> (model, traffic): each mode's own feasible plan
    "reserved": ("flan-t5-xl", Traffic()),
    "realtime": ("flan-t5-xl", Traffic()),
    "async": ("flan-t5-xl", Traffic()),
    "serverless": ("flan-t5-small", Traffic(requests_per_day=2000)),
}


@pytest.fixture(scope="module")
def cat():
    return c.load_catalog_from(c.BUNDLED_DIR)


def _plan(cat, mode, **traffic):
    model, base = PLANS[mode]
    t = Traffic(**{**base.__dict__, **traffic})
    return make_plan(load_model_config(model), cat=cat, mode=mode, traffic=t)


@pytest.mark.parametrize("mode", list(PLANS))
def test_the_stack_config_prices_exactly_like_the_plan(cat, mode):
    """`llmdeploy status` compares the bill with planned_line_items(config): it must be the plan's figure."""
    plan = _plan(cat, mode)
    config = stack_config_for(plan)
    assert costs.total(planned_line_items(config, cat)) == pytest.approx(plan.choice.monthly_usd, abs=0.005)
    kinds = {i.kind for i in planned_line_items(config, cat)}
    assert {"cloudwatch-alarms", "cloudwatch-dashboard"} <= kinds


@pytest.mark.parametrize("mode", ["reserved", "realtime"])
def test_plan_records_its_latency_target_and_per_instance_capacity(cat, mode):
    plan = _plan(cat, mode, latency_target_s=3.5)
    config = stack_config_for(plan)
    assert config.alarm_latency_ms == 3500, "the latency alarm holds the stack to the target"
    assert config.usage_latency_target_ms == 3500, "and deploy's comparison re-runs with it"
    assert config.usage_requests_per_hour_per_instance == round(plan.choice.requests_per_s_per_instance * 3600)
    assert config.usage_requests_per_hour_per_instance > 0


def test_async_records_the_plans_estimate_when_it_exceeds_the_target(cat):
    plan = _plan(cat, "async", latency_target_s=0.5)
    config = stack_config_for(plan)
    assert plan.choice.latency_s * 1000 > 500, "the case this test is about"
    assert config.alarm_latency_ms == max(500, -(-plan.choice.latency_s * 1000 // 1))
    assert config.usage_latency_target_ms == 500, "the traffic plan was given stays the user's target"
    assert mon.targets_for(config, cat).latency_target_ms == config.alarm_latency_ms


def test_serverless_records_no_per_instance_capacity(cat):
    config = stack_config_for(_plan(cat, "serverless"))
    assert config.usage_requests_per_hour_per_instance == 0 and config.alarm_latency_ms == 5000


@pytest.mark.parametrize("mode", ["reserved", "realtime", "async", "serverless"])
def test_what_plan_prices_is_the_alarm_set_the_program_creates(mode):
    t = mon.Targets(mode, 1000, 3600, 3, 4)
    specs = mon.alarm_specs(t)
    b = mon.billable(mode, instance_count=3, gpus_per_instance=4)
    assert b.alarm_metrics == sum(len(s.metrics) for s in specs) + mon.SCALING_ALARM_METRICS.get(mode, 0)
    assert b.dashboards == 1
    assert b.custom_metrics == (3 * (3 * 4 + 1) if mode == "reserved" else 0), "3 measurements x (12 GPUs + fleet-wide)"
    config = mon.agent_config("s")
    assert mon.custom_metrics_of_agent(config, 3, 4) == mon.custom_metric_count("reserved", 3, 4), (
        "preview counts from the agent config the boot script installs; plan from the same numbers")


def test_alarm_requests_name_the_stack_and_bind_every_dimension():
    t = mon.Targets("reserved", 1000, 3600, 2, 1)
    bindings = {mon.LOAD_BALANCER: "app/a/1", mon.TARGET_GROUP: "targetgroup/t/2", mon.STACK: "prod"}
    for spec in mon.alarm_specs(t):
        request = mon.put_metric_alarm_request(spec, stack="prod", bindings=bindings, actions=["arn:t"])
        assert request["AlarmName"] == f"llmdeploy-prod-{spec.key}" and request["AlarmName"][len("llmdeploy-prod-"):] in mon.alarm_keys()
        dims = request.get("Dimensions") or [d for q in request["Metrics"] if "MetricStat" in q
                                             for d in q["MetricStat"]["Metric"]["Dimensions"]]
        assert dims and all(d["Value"] == bindings[d["Name"]] for d in dims)
    with pytest.raises(KeyError):
        mon.put_metric_alarm_request(mon.alarm_specs(t)[0], stack="prod", bindings={})


def test_status_reads_the_metrics_the_alarms_watch():
    for mode in ("reserved", "realtime", "async", "serverless"):
        queries = {q.id: q for q in mon.status_queries(mode)}
        assert {"requests", "p50", "p90", "errors5xx", "errors4xx"} <= set(queries)
        latency = next(s for s in mon.alarm_specs(mon.Targets(mode, 1000, 3600, 1, 1)) if s.key == "latency-p90")
        assert (queries["p90"].metric.namespace, queries["p90"].metric.name) == (latency.metric.namespace, latency.metric.name)
    assert mon.status_queries("async")[0].metric.name == "ModelLatency", "async endpoints publish no Invocations"
    assert mon.status_queries("realtime")[1].scale == 1 / 1000, "microseconds to milliseconds"
    assert mon.status_queries("reserved")[1].scale == 1000, "seconds to milliseconds"


def test_dashboard_names_keep_to_putdashboards_characters():
    assert mon.dashboard_name("prod.eu_1") == "llmdeploy-prod-eu_1"


# -- money: the catalog rows, pro-rating, month bounds ------------------------------------------------------


def test_cloudwatch_prices_come_from_the_catalog_with_their_source(cat):
    for region in ("us-east-1", "us-west-2", "eu-west-1"):
        cw = cat.other[region].cloudwatch
        assert (cw.alarm_metric_monthly, cw.dashboard_monthly, cw.custom_metric_monthly) == (0.10, 3.00, 0.30)
        assert cw.source.url == "https://aws.amazon.com/cloudwatch/pricing/" and "free tier" in cw.source.note


def test_cloudwatch_prices_are_all_or_none(tmp_path):
    for name in ("sources.toml", "gpus.toml", "instances.toml", "ec2_prices.toml", "sagemaker_prices.toml", "limits.toml"):
        shutil.copyfile(c.BUNDLED_DIR / name, tmp_path / name)
    sm = tmp_path / "sagemaker_prices.toml"
    text = sm.read_text()
    sm.write_text(text.replace("cloudwatch_dashboard_monthly = 3.00\n", "", 1))
    with pytest.raises(ConfigError, match="prices CloudWatch only in part; add cloudwatch_dashboard_monthly"):
        c.load_catalog_from(tmp_path)
    block = ("cloudwatch_alarm_metric_monthly = 0.10\ncloudwatch_dashboard_monthly = 3.00\n"
             "cloudwatch_custom_metric_monthly = 0.30\ncloudwatch_source = \"cloudwatch-pricing\"\n")
    sm.write_text(text.replace(block, "", 1))
    loaded = c.load_catalog_from(tmp_path)
    assert loaded.other["us-east-1"].cloudwatch is None, "a row without them states no price"
    assert costs.monitoring(loaded, "us-east-1", alarm_metrics=6, dashboards=1, custom_metrics=0) == []


def test_plan_says_when_cloudwatch_is_not_priced(tmp_path):
    for name in ("sources.toml", "gpus.toml", "instances.toml", "ec2_prices.toml", "sagemaker_prices.toml", "limits.toml"):
        shutil.copyfile(c.BUNDLED_DIR / name, tmp_path / name)
    sm = tmp_path / "sagemaker_prices.toml"
    sm.write_text("\n".join(line for line in sm.read_text().splitlines() if not line.startswith("cloudwatch_")) + "\n")
    src = tmp_path / "sources.toml"
    text = src.read_text()
    start = text.index("[sources.cloudwatch-pricing]")
    src.write_text(text[:start] + text[text.index("[sources.", start + 1):])
    out = CliRunner().invoke(cli, ["plan", "--mode", "reserved", "--catalog", str(tmp_path)]).output
    assert "CloudWatch alarms and dashboard not priced (the catalog has no CloudWatch prices for us-east-1)" in out
    priced = CliRunner().invoke(cli, ["plan", "--mode", "reserved"]).output
    assert "of it is the stack's CloudWatch alarms, dashboard and GPU metrics" in priced


def test_planned_to_date_is_the_hourly_rate_times_the_hours_elapsed():
    monthly = 730.0  # $1 an hour
    spent, hours = costs.planned_to_date(monthly, dt.datetime(2026, 11, 16, 0, 0, tzinfo=dt.UTC))
    assert (spent, hours) == (pytest.approx(360.0), pytest.approx(360.0))
    end_of_january = dt.datetime(2027, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert costs.planned_to_date(monthly, end_of_january)[0] == pytest.approx(744, abs=0.01), "a 31-day month is 744 hours"


@pytest.mark.parametrize("now, expected", [
    ("2026-11-30T23:00:00+00:00", ("2026-11-01", "2026-12-01", "2026-12-01")),
    ("2026-12-01T00:30:00+00:00", ("2026-12-01", "2026-12-02", "2027-01-01")),  # Start < End even on the 1st
    ("2026-11-16T01:00:00+05:00", ("2026-11-01", "2026-11-16", "2026-12-01")),  # Cost Explorer's days are UTC
])
def test_month_bounds(now, expected):
    assert tuple(d.isoformat() for d in month_bounds(dt.datetime.fromisoformat(now))) == expected


# -- stack settings ------------------------------------------------------------------------------------------


def test_alarm_settings_are_checked():
    assert check_alarm_email(" oncall@example.com ") == "oncall@example.com"
    with pytest.raises(ConfigError, match="not an email address"):
        check_alarm_email("oncall@example")
    assert check_sns_topic_arn("arn:aws:sns:us-east-1:123456789012:oncall", "us-east-1")
    with pytest.raises(ConfigError, match="in eu-west-1, but the stack deploys to us-east-1"):
        check_sns_topic_arn("arn:aws:sns:eu-west-1:123456789012:oncall", "us-east-1")
    with pytest.raises(ConfigError, match="alarmEmail"):
        StackConfig(mode="realtime", instance_type="ml.g4dn.xlarge", alarm_email="nope").validate()
