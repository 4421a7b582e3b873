"""Finite numbers outside what they can mean: zero, negative, past the sanity bounds of llmdeploy/checks.py.

Flags with bounds on their type are generated from the type (one step past each bound); plan's
traffic flags are bounded by ``plan.Traffic.validate`` (the same ``checks.number``) and listed here.
Model configs (config.json) with zero, negative, huge or mistyped sizes are refused for each
architecture family the sizing reads.
"""

from __future__ import annotations

import json

import pytest

from llmdeploy import checks
from llmdeploy.cli import options as opt

from . import REQUIRED, assert_refused, invoke, numeric_options


def _past_bounds():
    for path, option, kind in numeric_options():
        step = 1 if isinstance(kind, opt.Whole) else 0.5
        if kind.minimum is not None:
            yield path, option, kind.minimum - step, "at least"
            yield path, option, -10**6, "at least"
        if kind.maximum is not None:
            yield path, option, kind.maximum + step, "at most"


BOUNDED = list(_past_bounds())

TRAFFIC = [
    ("--requests-per-day", "0", "greater than 0"), ("--requests-per-day", "-3", "greater than 0"),
    ("--requests-per-day", "1e13", "at most"), ("--peak-rps", "0", "greater than 0"), ("--peak-rps", "-1", "greater than 0"),
    ("--peak-rps", "2e9", "at most"), ("--input-tokens", "0", "at least 1"), ("--input-tokens", "-256", "at least 1"),
    ("--output-tokens", str(checks.MAX_TOKENS + 1), "at most"), ("--active-hours", "0", "at least 1"),
    ("--active-hours", "25", "at most 24"), ("--active-hours", "-1", "at least 1"), ("--latency-target", "0", "greater than 0"),
    ("--latency-target", "-5", "greater than 0"), ("--latency-target", "86401", "at most"),
]


@pytest.mark.parametrize("case", BOUNDED, ids=[f"{' '.join(p)} {o}={v}" for p, o, v, _ in BOUNDED])
def test_a_value_past_a_flag_bound_is_one_line(case):
    path, option, value, needle = case
    assert_refused(invoke([*path, *REQUIRED.get(path, []), option, value]), 2, option, needle)


@pytest.mark.parametrize("option, value, needle", TRAFFIC)
def test_traffic_out_of_range_is_one_line(option, value, needle):
    assert_refused(invoke(["plan", option, value]), 2, option, needle)


@pytest.mark.parametrize("option", ["--instances"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_finetune_cluster_size(option, value):
    assert_refused(invoke(["finetune", "up", "--ttl", "6h", option, value]), 2, option)


@pytest.mark.parametrize("ttl", ["0h", "-1h", "99999999999999d", "9" * 40 + "m", "1000d"])
def test_finetune_ttl_out_of_range(ttl):
    assert_refused(invoke(["finetune", "up", "--ttl", ttl, "--instances", "1"]), 2, "--ttl")


T5 = {"model_type": "t5", "d_model": 512, "num_heads": 8, "num_layers": 6, "num_decoder_layers": 6, "vocab_size": 32128,
      "d_kv": 64, "d_ff": 1024}
LLAMA = {"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
         "num_hidden_layers": 16, "vocab_size": 32000, "intermediate_size": 5632}
GPT2 = {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "vocab_size": 50257}
HUGE = 10**4000  # a 4001-digit integer: Python's json reads it, every float conversion would overflow

MODEL_CASES = [
    (LLAMA, "num_attention_heads", 0), (LLAMA, "num_attention_heads", -16), (LLAMA, "num_hidden_layers", -1),
    (LLAMA, "hidden_size", 0), (LLAMA, "vocab_size", HUGE), (LLAMA, "intermediate_size", 1.5),
    (LLAMA, "num_key_value_heads", 64), (LLAMA, "num_hidden_layers", True), (LLAMA, "hidden_size", "2048"),
    (LLAMA, "max_position_embeddings", 0), (LLAMA, "head_dim", -128), (LLAMA, "num_hidden_layers", 2**31),
    (T5, "num_layers", -6), (T5, "num_decoder_layers", 0), (T5, "num_heads", 0), (T5, "d_kv", -64),
    (T5, "d_ff", HUGE), (T5, "relative_attention_num_buckets", -1), (T5, "vocab_size", None),
    (GPT2, "n_head", 0), (GPT2, "n_layer", -12), (GPT2, "n_embd", 7), (GPT2, "n_inner", "big"), (GPT2, "n_positions", -1),
]


@pytest.mark.parametrize("base, key, value", MODEL_CASES,
                         ids=[f"{b['model_type']}-{k}={str(v)[:10]}" for b, k, v in MODEL_CASES])
@pytest.mark.parametrize("command", [["estimate"], ["plan", "--model"]])
def test_a_model_config_with_an_impossible_size_is_one_line(base, key, value, command, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, key: value}))
    line = assert_refused(invoke([*command, path]), 2, str(path))
    assert len(line) < 400


def test_a_model_config_that_is_fine_still_sizes(tmp_path):
    for base in (T5, LLAMA, GPT2):
        path = tmp_path / f"{base['model_type']}.json"
        path.write_text(json.dumps(base))
        result = invoke(["estimate", path, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["parameters"] > 0
