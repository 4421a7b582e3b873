"""deploy's comparison: plan recomputed from the traffic a stack recorded equals the plan that wrote it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmdeploy.catalog import load_catalog
from llmdeploy.cli.main import cli
from llmdeploy.errors import ConfigError
from llmdeploy.report import plan_to_dict
from llmdeploy.stackconfig import StackConfig, read_stack_file
from llmdeploy.stackplan import plan_for_stack, traffic_of

PLANS = {
    "realtime-defaults": ["--mode", "realtime"],
    "reserved-3y-busy": ["--mode", "reserved", "--term", "3y", "--requests-per-day", "50000", "--active-hours", "24",
                         "--peak-rps", "2.5", "--input-tokens", "512", "--output-tokens", "128", "--latency-target", "8"],
    "serverless-small": ["--mode", "serverless", "--model", "flan-t5-small", "--requests-per-day", "2000"],
    "async-office-hours": ["--mode", "async", "--active-hours", "8", "--latency-target", "2.5"],
}


@pytest.mark.parametrize("args", PLANS.values(), ids=PLANS)
def test_the_stack_gives_back_the_plans_comparison(tmp_path, args):
    result = CliRunner().invoke(cli, ["plan", *args, "--stack", "s", "--project-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    again = plan_to_dict(plan_for_stack(read_stack_file(tmp_path / "Pulumi.s.yaml"), load_catalog()).plan)
    # The stack stores requests per month rounded up to a whole request: at most 1/30 request a day more.
    assert again["traffic"]["requests_per_day"] == pytest.approx(planned["traffic"]["requests_per_day"], abs=1 / 30)
    for key in ("input_tokens", "output_tokens", "active_hours", "latency_target_s"):
        assert again["traffic"][key] == planned["traffic"][key], key
    assert again["traffic"]["peak_rps"] == pytest.approx(planned["traffic"]["peak_rps"], rel=1e-3)
    for key in ("model", "dtype", "region", "mode", "term", "reasons", "break_even"):
        assert again[key] == planned[key], f"{key} differs from what plan printed"
    for key in ("options", "choice", "recommended"):
        # Every figure printed is the same; only serverless usage quantities move in their third decimal.
        assert _printed(again[key]) == _printed(planned[key]), f"{key} differs from what plan printed"


def _printed(options):
    def one(o):
        items = [{k: v for k, v in i.items() if k != "quantity"} for i in o["line_items"]]
        return {**{k: v for k, v in o.items() if k != "line_items"}, "line_items": items}

    return [one(o) for o in options] if isinstance(options, list) else one(options)


def test_a_stack_from_an_older_plan_uses_plans_defaults_and_says_so():
    traffic, notes = traffic_of(StackConfig(mode="realtime", instance_type="ml.g4dn.xlarge", usage_requests_per_month=304167,
                                            usage_active_hours_per_day=12))
    assert (traffic.input_tokens, traffic.output_tokens, traffic.latency_target_s, traffic.peak_rps) == (256, 64, 5.0, None)
    assert len(notes) == 1 and "usageInputTokens" in notes[0] and "usageLatencyTargetMs" in notes[0]


def test_a_stack_without_traffic_has_no_comparison():
    with pytest.raises(ConfigError, match="usageRequestsPerMonth"):
        traffic_of(StackConfig(mode="realtime", instance_type="ml.g4dn.xlarge"))


def test_a_mode_plan_no_longer_finds_feasible_still_gets_the_comparison():
    # FLAN-T5-XL does not fit SageMaker serverless (6 GB at most): plan picks for itself and says why.
    config = StackConfig(mode="serverless", model="flan-t5-xl", usage_requests_per_month=60000, usage_input_tokens=256,
                         usage_output_tokens=64, usage_latency_target_ms=5000, usage_active_hours_per_day=12)
    found = plan_for_stack(config, load_catalog())
    assert found.plan.mode == "auto" and found.plan.choice.feasible
    assert any(note.startswith("plan now finds: mode 'serverless' cannot host") for note in found.notes)
