"""Non-finite and unparsable numbers: NaN, infinities, overflowing floats, 5000-digit integers.

Generated over every numeric option of every command (outside serving): a new option is covered
as soon as it uses the shared types of cli/options.py (``test_every_numeric_option_uses_the_shared_types``).
"""

from __future__ import annotations

import json
import math

import click
import pytest

from llmdeploy.cli import options as opt
from llmdeploy.errors import UsageError

from . import REQUIRED, SERVING, assert_refused, invoke, leaf_commands, numeric_options

NOT_FINITE = ["nan", "NaN", " nan ", "inf", "-inf", "Infinity", "1e400", "-1e999"]
NOT_WHOLE = ["nan", "inf", "1.5", "9" * 5000, "-" + "9" * 40, "0x10", "ten", ""]

FLOAT_CASES = [(p, o, v) for p, o, t in numeric_options() if isinstance(t, opt.Number) for v in NOT_FINITE]
INT_CASES = [(p, o, v) for p, o, t in numeric_options() if isinstance(t, opt.Whole) for v in NOT_WHOLE]


def _id(case):
    path, option, value = case
    return f"{' '.join(path)} {option}={value[:12]!r}"


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[_id(c) for c in FLOAT_CASES])
def test_a_non_finite_float_flag_is_one_line(case):
    path, option, value = case
    line = assert_refused(invoke([*path, *REQUIRED.get(path, []), option, value]), 2, option)
    assert "finite" in line or "must be a number" in line
    assert len(line) < 300, "the value is shown short"


@pytest.mark.parametrize("case", INT_CASES, ids=[_id(c) for c in INT_CASES])
def test_a_non_whole_integer_flag_is_one_line(case):
    path, option, value = case
    line = assert_refused(invoke([*path, *REQUIRED.get(path, []), option, value]), 2, option, "whole number")
    assert len(line) < 300, "a 5000-digit value is not echoed whole"


def test_there_are_many_generated_cases():
    assert len(FLOAT_CASES) + len(INT_CASES) >= 100
    assert {p for p, _, _ in FLOAT_CASES} >= {("plan",), ("estimate",)}


def test_every_numeric_option_uses_the_shared_types():
    """No command parses a number with bare int/float/IntRange/FloatRange (which let nan or 1e400 through)."""
    loose = []
    for path, command in leaf_commands():
        if path in SERVING:
            continue
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                loose.append(f"{' '.join(path)} {param.name}")
    assert not loose, f"use opt.Number / opt.Whole for: {loose}"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_value_from_the_user_config_names_its_source(value, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f"[plan]\nrequests_per_day = {value}\n")  # TOML has nan and inf literals
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(config))
    assert_refused(invoke(["plan"]), 2, "--requests-per-day (from the user config file)", "finite")


def test_the_library_refuses_what_the_flags_refuse():
    from llmdeploy.catalog import load_catalog
    from llmdeploy.models import load_model_config
    from llmdeploy.plan import Traffic, make_plan

    for traffic in (Traffic(requests_per_day=math.inf), Traffic(latency_target_s=math.nan), Traffic(peak_rps=math.inf)):
        with pytest.raises(UsageError, match="finite"):
            make_plan(load_model_config("flan-t5-small"), cat=load_catalog(), traffic=traffic)


def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("args", [
    ["plan", "--json"], ["plan", "--json", "--latency-target", "86400"], ["plan", "--json", "--mode", "serverless",
                                                                           "--model", "flan-t5-small"],
    ["estimate", "--json"], ["estimate", "gpt2", "--json", "--batch", "1000000"], ["instances", "--json"],
    ["prices", "show", "--json"], ["config", "show", "--json"], ["estimate", "--list-models", "--json"],
])
def test_json_output_is_strict_json(args):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    _strict(result.output)


def test_latency_target_inf_with_json_is_refused_not_printed_as_infinity():
    result = invoke(["plan", "--latency-target", "inf", "--json"])
    assert_refused(result, 2, "--latency-target", "finite")
    assert "Infinity" not in result.output


def test_emit_json_never_writes_nan_or_infinity(capsys):
    opt.emit_json({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": (math.nan,)}})
    assert _strict(capsys.readouterr().out) == {"a": None, "b": [None, None, 1.5], "c": {"d": [None]}}
