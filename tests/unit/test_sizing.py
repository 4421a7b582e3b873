"""Sizing from configs: exact parameter counts, memory per dtype, fit, host RAM, fine-tune, speed."""

from __future__ import annotations

import math

import pytest

from llmdeploy import catalog as c
from llmdeploy import sizing
from llmdeploy.errors import ConfigError, UnknownChoiceError
from llmdeploy.models import bundled_index, from_dict, load_model_config

GIB = 1024**3


@pytest.mark.parametrize("name", list(bundled_index()))
def test_parameter_count_equals_published_checkpoint(name):
    published = bundled_index()[name]["parameters"]
    assert sizing.parameter_count(load_model_config(name)).total == published, f"{name} must match its published checkpoint"


def test_flan_t5_counts_its_untied_lm_head():
    params = sizing.parameter_count(load_model_config("flan-t5-xl"))
    assert params.lm_head == 32128 * 2048, "FLAN-T5 keeps a separate lm_head; it must be counted"
    tied = from_dict({**_raw("flan-t5-xl"), "tie_word_embeddings": True}, name="tied")
    assert sizing.parameter_count(tied).total == params.total - 32128 * 2048


def _raw(name):
    import json

    from llmdeploy.models import MODELS_DIR

    return json.loads((MODELS_DIR / f"{name}.json").read_text())


def test_counts_match_transformers_for_tiny_models_of_each_family():
    """Cross-check the formulas against real module trees built by transformers (random, tiny)."""
    import torch
    import transformers

    cases = [
        ({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
          "num_hidden_layers": 2, "vocab_size": 101, "tie_word_embeddings": False}, transformers.LlamaConfig, transformers.LlamaForCausalLM),
        ({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
          "num_hidden_layers": 2, "vocab_size": 101, "tie_word_embeddings": True}, transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        ({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 32, "vocab_size": 101},
         transformers.GPT2Config, transformers.GPT2LMHeadModel),
    ]
    for raw, config_cls, model_cls in cases:
        kwargs = {k: v for k, v in raw.items() if k != "model_type"}
        torch.manual_seed(0)
        model = model_cls(config_cls(**kwargs))
        real = sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once
        assert sizing.parameter_count(from_dict(raw, name="tiny")).total == real, raw["model_type"]


def test_t5_formula_matches_transformers_module_tree():
    import transformers

    raw = {"model_type": "t5", "d_model": 32, "d_ff": 48, "d_kv": 8, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 3,
           "vocab_size": 97, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "relative_attention_num_buckets": 8}
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**{k: v for k, v in raw.items() if k != "model_type"}))
    # transformers 5 ties lm_head to the shared embedding on construction; the checkpoint keeps its own.
    unique = sum(p.numel() for p in model.parameters())
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        unique += model.lm_head.weight.numel()
    assert sizing.parameter_count(from_dict(raw, name="tiny-t5")).total == unique


def test_bytes_per_dtype():
    m = load_model_config("flan-t5-xl")
    n = sizing.parameter_count(m).total
    assert sizing.weights_bytes(m, "fp32") == 4 * n
    assert sizing.weights_bytes(m, "fp16") == sizing.weights_bytes(m, "bf16") == 2 * n
    assert sizing.weights_bytes(m, "int8") == n
    assert sizing.weights_bytes(m, "int4") == math.ceil(n / 2)
    with pytest.raises(UnknownChoiceError, match="Did you mean 'fp16'"):
        sizing.dtype_bytes("fp61")


def test_inference_memory_adds_kv_cache_and_buffer():
    m = load_model_config("flan-t5-xl")
    small = sizing.inference_memory(m, "fp32", batch=1, buffer=0.2)
    big = sizing.inference_memory(m, "fp32", batch=16, buffer=0.2)
    assert big.kv_cache == 16 * small.kv_cache
    assert small.total == small.weights + small.kv_cache + small.activations + small.buffer
    assert small.buffer == pytest.approx(0.2 * (small.weights + small.kv_cache + small.activations), rel=1e-9, abs=1)
    no_buffer = sizing.inference_memory(m, "fp32", batch=1, buffer=0)
    assert no_buffer.total < small.total


def test_kv_cache_uses_grouped_query_heads():
    llama2 = load_model_config("llama-2-7b")  # 32 KV heads
    mistral = load_model_config("mistral-7b")  # 8 KV heads, same layers and head size
    assert sizing.kv_cache_bytes(llama2, 1, 100, 100, "fp16") == 4 * sizing.kv_cache_bytes(mistral, 1, 100, 100, "fp16")


def _tiny_catalog_instance(gpu_gib=16.0, ram=16.0, count=1, name="x.large"):
    src = c.Source("s", "https://example.com", __import__("datetime").date(2026, 1, 1))
    gpu = c.Gpu("G", gpu_gib, 300, 65, 0, 8, 130, "7.5", src)
    return c.Instance(name, gpu, count, 4, ram, False, src)


def test_flan_t5_xl_fp32_fits_a_t4():
    cat = c.load_catalog()
    t4 = cat.gpus["T4"]
    m = load_model_config("flan-t5-xl")
    mem = sizing.inference_memory(m, "fp32", batch=1, input_tokens=256, output_tokens=64)
    # A T4 reports 15,360 MiB; 95 % of it is what one process can fill.
    assert sizing.gpu_usable_bytes(t4) == int(15360 * 1024**2 * 0.95)
    assert mem.total <= sizing.gpu_usable_bytes(t4), "FLAN-T5-XL in fp32 (with the 20 % buffer) must fit a T4"
    fit = sizing.fit_on_instance(mem, sizing.host_ram_to_load(m, "fp32", "in-memory"), c.instance(cat, "g4dn.2xlarge"))
    assert fit.fits and fit.tensor_parallel == 1


def test_host_ram_rejects_an_instance_whose_gpu_fits():
    cat = c.load_catalog()
    m = load_model_config("flan-t5-xl")
    mem = sizing.inference_memory(m, "fp32")
    ram = sizing.host_ram_to_load(m, "fp32", "in-memory")
    fit = sizing.fit_on_instance(mem, ram, c.instance(cat, "g4dn.xlarge"))
    assert not fit.fits and "host RAM" in fit.reason, fit.reason
    streamed = sizing.host_ram_to_load(m, "fp32", "streaming")
    assert streamed < ram
    assert sizing.fit_on_instance(mem, streamed, c.instance(cat, "g4dn.xlarge")).fits, "streaming shards fits in 16 GiB RAM"


def test_tensor_parallel_degree_for_a_model_too_big_for_one_gpu():
    m = load_model_config("llama-2-70b")
    mem = sizing.inference_memory(m, "fp16")
    eight = _tiny_catalog_instance(gpu_gib=40, ram=1152, count=8, name="p4d-like")
    usable = sizing.gpu_usable_bytes(eight.gpu)
    # 138 GB of fp16 weights + 20 % split four ways is 38.7 GiB: more than the 38 GiB a process gets of a 40 GiB GPU.
    assert mem.per_gpu(4) > usable >= mem.per_gpu(8)
    fit = sizing.fit_on_instance(mem, 0, eight)
    assert fit.fits and fit.tensor_parallel == 8, fit
    assert fit.replicas == 1
    assert sizing.fit_on_instance(sizing.inference_memory(m, "fp16", input_tokens=128, output_tokens=32, buffer=0.1), 0,
                                  eight).tensor_parallel == 4, "with less context and buffer, four GPUs suffice"
    one = _tiny_catalog_instance(gpu_gib=24, ram=1152, count=1)
    assert not sizing.fit_on_instance(mem, 0, one).fits


def test_finetune_memory_counts_sixteen_bytes_per_parameter_of_states():
    m = load_model_config("flan-t5-xl")
    n = sizing.parameter_count(m).total
    for precision in sizing.FINETUNE_PRECISIONS:
        ft = sizing.finetune_memory(m, precision, batch=1, seq_len=128)
        assert ft.weights + ft.gradients + ft.optimizer == 16 * n, precision
    fp32 = sizing.finetune_memory(m, "fp32", batch=8, seq_len=512)
    mixed = sizing.finetune_memory(m, "bf16-mixed", batch=8, seq_len=512)
    assert fp32.activations == 2 * mixed.activations
    cat = c.load_catalog()
    gpus = sizing.gpus_for_finetune(mixed, cat.gpus["A100-40GB"])
    assert gpus * 40 * GIB * 0.9 >= mixed.total > (gpus - 1) * 40 * GIB * 0.9


def test_model_config_errors_name_the_problem(tmp_path):
    with pytest.raises(UnknownChoiceError, match="Did you mean 'flan-t5-xl'"):
        load_model_config("flan-t5-xll")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config(str(tmp_path))
    bad.write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises(ConfigError, match=r"\(bert\) lacks the field 'num_attention_heads' \(or n_head, "):
        load_model_config(str(bad))
    bad.write_text('{"model_type": "no-such-arch", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, '
                   '"vocab_size": 10}')
    with pytest.raises(ConfigError, match=r"cannot count the parameters .* has no model_type 'no-such-arch' .*closed forms exist"):
        load_model_config(str(bad))
    bad.write_text('{"model_type": "llama", "hidden_size": 8}')
    with pytest.raises(ConfigError, match="lacks the field"):
        load_model_config(str(bad))
    bad.write_text('{"model_type": "t5", "d_model": "big", "d_ff": 8, "d_kv": 2, "num_heads": 2, "num_layers": 1, "vocab_size": 9}')
    with pytest.raises(ConfigError, match="malformed"):
        load_model_config(str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_model_config(str(tmp_path / "empty"))


def test_hugging_face_id_and_local_config_resolve(tmp_path):
    assert load_model_config("google/flan-t5-small").name == "flan-t5-small"
    (tmp_path / "config.json").write_text(__import__("json").dumps(_raw("flan-t5-small")))
    local = load_model_config(str(tmp_path))
    assert sizing.parameter_count(local).total == 76_961_152
