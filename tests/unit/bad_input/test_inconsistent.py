"""Inputs that are each fine but contradict each other: refused, not silently priced or written."""

from __future__ import annotations

import json

import pytest

from llmdeploy.catalog import load_catalog
from llmdeploy.errors import UsageError
from llmdeploy.models import load_model_config
from llmdeploy.plan import Traffic, make_plan

from . import assert_refused, invoke


@pytest.mark.parametrize("requests, hours, peak", [
    ("10000000", "12", "0.0001"), ("86400", "24", "0.99"), ("1e9", "1", "1000"), ("43200", "12", "0.5"),
])
def test_peak_below_the_average_rate_is_refused(requests, hours, peak):
    average = float(requests) / (int(hours) * 3600)
    line = assert_refused(invoke(["plan", "--requests-per-day", requests, "--active-hours", hours, "--peak-rps", peak]), 2,
                          "--peak-rps", "below the average rate")
    assert f"{average:.4g}" in line, "the line says what the average is"


def test_peak_equal_to_the_average_is_flat_traffic_and_accepted():
    result = invoke(["plan", "--requests-per-day", "86400", "--active-hours", "24", "--peak-rps", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["traffic"]["peak_rps"] == 1


def test_ten_million_a_day_is_not_priced_at_one_instance():
    """The issue's case: a 10 M requests/day plan with a tiny peak used to be priced at one instance."""
    with pytest.raises(UsageError, match="below the average"):
        make_plan(load_model_config("flan-t5-xl"), cat=load_catalog(),
                  traffic=Traffic(requests_per_day=10_000_000, peak_rps=0.0001))


@pytest.mark.parametrize("args, code, needle", [
    (["plan", "--json", "--markdown"], 2, "exclusive"),
    (["plan", "--mode", "serverless"], 1, "cannot host"),
    (["plan", "--dtype", "bf16", "--instance-type", "g4dn.xlarge", "--mode", "reserved"], 1, "bf16"),
    (["estimate", "--instance-type", "c5.xlarge"], 2, "has no GPU"),
    (["finetune", "up", "--ttl", "6h"], 2, "--instances"),
    (["finetune", "up", "--ttl", "6h", "--idle", "7h", "--instances", "1"], 2, "--idle"),
])
def test_contradicting_flags(args, code, needle):
    assert_refused(invoke(args), code, needle)


def test_a_user_setting_that_contradicts_the_new_plan_keeps_the_stack_file(tmp_path):
    """A certificateArn in us-east-1 and a plan for eu-west-1 cannot deploy: refused before writing."""
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path]).exit_code == 0
    path = tmp_path / "Pulumi.prod.yaml"
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    path.write_text(path.read_text().replace("llmdeploy:certificateArn: ''", f"llmdeploy:certificateArn: {arn}"))
    before = path.read_bytes()
    assert_refused(invoke(["plan", "--mode", "reserved", "--region", "eu-west-1", "--stack", "prod", "--project-dir", tmp_path,
                           "--force"]), 2, "would not deploy", "certificateArn", "eu-west-1")
    assert path.read_bytes() == before
