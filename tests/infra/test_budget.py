"""The budget: the program refuses a stack over llmdeploy:maxMonthlyUsd before it registers anything, and
exports its monthly estimate, which is the figure `preview --offline` and plan show."""

from __future__ import annotations

import math
import runpy
import warnings
from pathlib import Path

import pulumi
import pytest

from llmdeploy import budget
from llmdeploy.catalog import load_catalog
from llmdeploy.infra.offline_preview import config_values, make_mocks, offline_preview, run_program, run_with_mocks

from .mocks import MODES, run_mode, stack_config

PROGRAM = Path(__file__).resolve().parents[2] / "infra" / "__main__.py"


@pytest.mark.parametrize("mode", MODES)
def test_the_programs_estimate_is_the_price_of_what_it_registers(mode):
    """budget.monthly_estimate (config, before any resource) == preview --offline (the registered resources)."""
    config = stack_config(mode)
    estimate = budget.monthly_estimate(config, load_catalog())
    assert estimate > 0
    assert offline_preview(config, stack=f"b-{mode}").monthly_usd == pytest.approx(estimate, abs=1e-9)


# Settings that change what monitoring the program creates: latency and capacity alarms recorded by plan, an async
# endpoint that never scales to zero (no scale-from-zero alarm), a larger fleet (more GPU metric series).
VARIANTS = {
    "realtime-planned-alarms": stack_config("realtime", alarm_latency_ms=2500, usage_requests_per_hour_per_instance=1800),
    "async-min-1": stack_config("async", min_instances=1),
    "async-planned-alarms": stack_config("async", alarm_latency_ms=9000, usage_requests_per_hour_per_instance=900),
    "reserved-fleet-https": stack_config("reserved", instance_type="g5.12xlarge", instance_count=3, min_instances=3,
                                         alarm_latency_ms=2000, usage_requests_per_hour_per_instance=1200,
                                         certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d"),
    "serverless-latency": stack_config("serverless", alarm_latency_ms=4000),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_estimate_and_preview_agree_whatever_monitoring_the_stack_gets(name):
    config = VARIANTS[name]
    estimate = budget.monthly_estimate(config, load_catalog())
    preview = offline_preview(config, stack=f"v-{name}")
    assert preview.monthly_usd == pytest.approx(estimate, abs=1e-9)
    assert any(r.type == "aws:cloudwatch/dashboard:Dashboard" and r.items for r in preview.resources)


@pytest.mark.parametrize("mode", MODES)
def test_the_estimate_is_a_stack_output(mode):
    estimate = budget.monthly_estimate(stack_config(mode), load_catalog())
    assert run_mode(mode).outputs["monthly_estimate_usd"] == round(estimate, 2)


@pytest.mark.parametrize("mode", MODES)
def test_over_budget_the_program_registers_nothing(mode):
    estimate = budget.monthly_estimate(stack_config(mode), load_catalog())
    mocks = make_mocks()
    with pytest.raises(budget.OverBudgetError) as err:
        run_program(stack_config(mode, max_monthly_usd=math.floor(estimate) - 1), stack="over", mocks=mocks)
    assert mocks.resources == [], f"over budget, nothing may be registered: {[r.type for r in mocks.resources]}"
    message = str(err.value)
    assert "\n" not in message and f"${estimate:,.2f}/month" in message and "llmdeploy:maxMonthlyUsd" in message


def test_a_budget_the_estimate_fits_lets_it_through():
    estimate = budget.monthly_estimate(stack_config("realtime"), load_catalog())
    mocks = run_program(stack_config("realtime", max_monthly_usd=math.ceil(estimate)), stack="fits")
    assert any(r.type == "aws:sagemaker/endpoint:Endpoint" for r in mocks.resources)


def test_over_budget_pulumi_up_fails_with_one_line(monkeypatch, tmp_path):
    """infra/__main__.py run as pulumi-language-python-exec runs it: the error is a RunError, not a traceback."""
    monkeypatch.setenv("LLMDEPLOY_BUILD_DIR", str(tmp_path))
    values = config_values(stack_config("reserved", max_monthly_usd=10))
    mocks = make_mocks()

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    with pytest.raises(pulumi.RunError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_with_mocks(program, mocks, stack="ci", config=values)
    assert "over the budget of $10.00/month" in str(err.value) and "\n" not in str(err.value)
    assert mocks.resources == []


def test_check_rounds_to_the_cent_and_names_the_tightest_limit():
    limits = [budget.Limit(1000.0, "llmdeploy:maxMonthlyUsd in Pulumi.dev.yaml"), budget.Limit(500.0, "--max-monthly-usd")]
    budget.check(500.004, limits, stack="dev")  # shown as $500.00: within
    over = r"\$500\.01/month, over the budget of \$500\.00/month \(--max-monthly-usd\)"
    with pytest.raises(budget.OverBudgetError, match=over):
        budget.check(500.01, limits, stack="dev")
    budget.check(10**9, [], stack="dev")  # no budget, no limit


def test_a_negative_budget_is_a_config_error():
    from llmdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="maxMonthlyUsd"):
        stack_config("realtime", max_monthly_usd=-1).validate()
