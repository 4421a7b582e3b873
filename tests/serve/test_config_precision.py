from __future__ import annotations

import dataclasses

import pytest

from llmdeploy.handlers.precision import A10G, A100, CPU, T4, DeviceInfo, apply_precision, choose_precision
from llmdeploy.handlers.serving_config import (
    MissingBackendError,
    RequestError,
    ServingConfigError,
    parse_properties,
    parse_request,
)


def test_properties_parsed_with_and_without_option_prefix():
    cfg = parse_properties({"engine": "Python", "option.model_id": "/m", "option.dtype": "bfloat16",
                            "batch_size": "4", "max_batch_delay": "20", "option.max_new_tokens": "128",
                            "option.tensor_parallel_degree": "max"})
    assert (cfg.model_id, cfg.dtype, cfg.max_batch_size, cfg.max_batch_delay_ms, cfg.max_new_tokens_cap) == \
        ("/m", "bf16", 4, 20, 128)
    assert cfg.tensor_parallel_degree == 1
    assert parse_properties({"dtype": "fp16"}).dtype == "fp16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dtype = "fp32"  # frozen


@pytest.mark.parametrize("props", [{"option.dtype": "fp8"}, {"batch_size": "many"}, {"batch_size": "0"},
                                   {"batch_size": "1025"}, {"option.rolling_batch": "llmdeploy",
                                                            "option.max_rolling_batch_size": "0"},
                                   {"option.max_new_tokens": "70000"}, {"option.backend": "vllm"}])
def test_bad_properties_are_config_errors(props):
    with pytest.raises(ServingConfigError):
        parse_properties(props)


def test_relative_model_id_resolves_inside_model_dir(tmp_path):
    (tmp_path / "weights").mkdir()
    cfg = parse_properties({"option.model_id": "weights", "model_dir": str(tmp_path)})
    assert cfg.model_location() == str(tmp_path / "weights")
    assert parse_properties({"model_dir": str(tmp_path)}).model_location() == str(tmp_path)
    with pytest.raises(ServingConfigError):
        parse_properties({}).model_location()


def test_container_model_path_is_found_under_another_model_dir(tmp_path):
    """`llmdeploy package` writes /opt/ml/model/weights; served from elsewhere, the same layout is used there."""
    (tmp_path / "weights").mkdir()
    moved = parse_properties({"option.model_id": "/opt/ml/model/weights", "model_dir": str(tmp_path)})
    assert moved.model_location() == str(tmp_path / "weights")
    # a path outside /opt/ml/model, or one that exists, is taken as written
    assert parse_properties({"model_id": "/opt/ml/other", "model_dir": str(tmp_path)}).model_location() == "/opt/ml/other"
    assert parse_properties({"model_id": str(tmp_path / "weights")}).model_location() == str(tmp_path / "weights")
    # s3:// means DJL did not download it: fall back to the model folder
    assert parse_properties({"model_id": "s3://b/w/", "model_dir": str(tmp_path)}).model_location() == str(tmp_path)


@pytest.mark.parametrize("body, fragment", [
    ({}, "missing field 'inputs'"),
    ({"inputs": 3}, "must be a string or a list"),
    ({"inputs": []}, "empty list"),
    ({"inputs": ["a", 2]}, "every item"),
    ({"inputs": "a", "parameters": []}, "must be a JSON object"),
    ({"inputs": "a", "parameters": {"max_tokens": 3}}, "unknown generation parameter 'max_tokens'"),
    ({"inputs": "a", "parameters": {"max_new_tokens": "3"}}, "must be an integer"),
    ({"inputs": "a", "parameters": {"max_new_tokens": True}}, "must be an integer"),
    ({"inputs": "a", "parameters": {"max_new_tokens": 999}}, "exceeds this endpoint's cap of 32"),
    ({"inputs": "a", "parameters": {"top_p": 1.5}}, "top_p"),
    ({"inputs": "a", "parameters": {"max_new_tokens": 4, "min_new_tokens": 5}}, "min_new_tokens"),
    ({"inputs": "a", "extra": 1}, "unknown field"),
    ([1, 2], "JSON object"),
])
def test_bad_requests_are_400(body, fragment):
    cfg = parse_properties({"option.max_new_tokens": "32"})
    with pytest.raises(RequestError) as info:
        parse_request(body, cfg)
    assert info.value.code == 400 and fragment in info.value.message


def test_identical_params_make_identical_keys():
    cfg = parse_properties({})
    a = parse_request({"inputs": "x", "parameters": {"top_k": 5, "max_new_tokens": 8}}, cfg)
    b = parse_request({"inputs": ["y"], "parameters": {"max_new_tokens": 8, "top_k": 5}}, cfg)
    assert a.params == b.params and b.is_list and not a.is_list
    assert parse_request("plain text", cfg).texts == ("plain text",)


@pytest.mark.parametrize("device, dtype, keep", [
    (T4, "float16", ("wo",)),
    (DeviceInfo("cuda", 0, (7, 0), "V100"), "float16", ("wo",)),
    (A10G, "bfloat16", ()),
    (A100, "bfloat16", ()),
    (CPU, "float32", ()),
])
def test_auto_dtype_by_compute_capability(device, dtype, keep):
    p = choose_precision("auto", device, has_bitsandbytes=False)
    assert (p.dtype, p.keep_in_fp32, p.load_in_8bit) == (dtype, keep, False)


def test_explicit_dtypes():
    assert choose_precision("bf16", T4).dtype == "float16"  # no bf16 on a T4
    assert choose_precision("fp32", A100).dtype == "float32"
    assert choose_precision("fp16", A100).keep_in_fp32 == ("wo",)
    assert choose_precision("fp16", CPU).dtype == "float32"


def test_int8_needs_bitsandbytes_and_cuda():
    with pytest.raises(MissingBackendError, match="pip install bitsandbytes"):
        choose_precision("int8", A10G, has_bitsandbytes=False)
    with pytest.raises(ServingConfigError, match="CUDA"):
        choose_precision("int8", CPU, has_bitsandbytes=True)
    p = choose_precision("int8", T4, has_bitsandbytes=True)
    assert p.load_in_8bit and p.keep_in_fp32 == ("wo",)


def test_t4_precision_keeps_wo_in_fp32_on_a_real_t5(tiny_model_dir):
    import torch

    from llmdeploy.handlers.seq2seq import load_seq2seq_model

    model = load_seq2seq_model(str(tiny_model_dir), torch.float32)
    kept = apply_precision(model, choose_precision("auto", T4))
    assert kept and all(name.endswith(".wo") for name in kept)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(dt == torch.float32 for n, dt in dtypes.items() if n.endswith("wo.weight"))
    assert dtypes["shared.weight"] == torch.float16
    assert any(n.endswith("wi_0.weight") and dt == torch.float16 for n, dt in dtypes.items())
    # transformers declares the same rule; ours holds even when the loader does not apply it
    assert "wo" in set(model._keep_in_fp32_modules or ())
    model2 = load_seq2seq_model(str(tiny_model_dir), torch.float32)
    apply_precision(model2, choose_precision("auto", A100))
    assert {p.dtype for p in model2.parameters()} == {torch.bfloat16}
