"""Any architecture: exact counts on the meta device, closed forms cross-checked against it, MoE total and
active parameters, and KV caches checked against the cache transformers itself builds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmdeploy import metacount, sizing
from llmdeploy.errors import ConfigError, MissingDependencyError
from llmdeploy.models import CLOSED_FORM_FAMILIES, MODELS_DIR, bundled_index, from_dict, load_model_config

# Published parameter counts of the checkpoints (issue 11); the bundled index records the same numbers.
PUBLISHED = {
    "opt-350m": 331_196_416,
    "phi-2": 2_779_683_840,
    "falcon-7b": 6_921_720_704,
    "bloom-560m": 559_214_592,
    "mixtral-8x7b": 46_702_792_704,
}
CORE = [n for n in bundled_index() if json.loads((MODELS_DIR / f"{n}.json").read_text())["model_type"] in CLOSED_FORM_FAMILIES]


def _raw(name: str) -> dict:
    return json.loads((MODELS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_architectures_without_a_closed_form_are_counted_exactly_on_the_meta_device(name):
    params = sizing.parameter_count(load_model_config(name))
    assert params.total == PUBLISHED[name] == bundled_index()[name]["parameters"]
    assert params.method.startswith("meta device, transformers ") and not params.from_hub


@pytest.mark.parametrize("name", CORE)
def test_closed_forms_agree_with_the_meta_device_part_by_part(name):
    """Two independent counts of every core bundled config: the formulas and transformers' module tree."""
    closed = sizing.parameter_count(load_model_config(name))
    meta = metacount.count_parameters(_raw(name), use_cache=False)
    assert (closed.embedding, closed.encoder, closed.decoder, closed.lm_head, closed.other) == (
        meta.embedding, meta.encoder, meta.decoder, meta.lm_head, meta.other), name
    assert meta.experts_inactive == 0


def test_an_untied_t5_head_is_counted_though_transformers_5_ties_it_on_construction():
    import torch
    import transformers

    raw = _raw("flan-t5-small")
    assert raw["tie_word_embeddings"] is False
    with torch.device("meta"):
        model = transformers.T5ForConditionalGeneration(transformers.T5Config.from_dict(dict(raw)))
    assert model.lm_head.weight is model.shared.weight, "transformers 5 ties T5's head whatever the config says"
    meta = metacount.count_parameters(raw, use_cache=False)
    assert meta.lm_head == raw["vocab_size"] * raw["d_model"] and meta.total == 76_961_152
    tied = metacount.count_parameters({**raw, "tie_word_embeddings": True}, use_cache=False)
    assert tied.total == meta.total - raw["vocab_size"] * raw["d_model"]


def test_mixtral_reports_total_and_active_parameters():
    m = load_model_config("mixtral-8x7b")
    params = sizing.parameter_count(m)
    assert (m.n_experts, m.n_experts_per_token) == (8, 2)
    per_expert_layer = 3 * 4096 * 14336  # gate, up and down projections of one expert in one layer
    routed = 32 * 8 * per_expert_layer
    assert params.total - routed == 1_605_636_096, "attention, router, norms, embeddings and head"
    assert params.active == params.total - routed + 32 * 2 * per_expert_layer == 12_879_925_248
    report = sizing.parameter_report(m)
    assert (report["total"], report["active"], report["experts"], report["experts_per_token"]) == (
        46_702_792_704, 12_879_925_248, 8, 2)


def _cache_elements(raw: dict, input_tokens: int, output_tokens: int) -> int:
    """Keys + values transformers keeps after a forward pass, built and run on the meta device."""
    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[raw["model_type"]].from_dict(dict(raw))
    with torch.device("meta"):
        model = getattr(transformers, raw["architectures"][0])(config).to(torch.bfloat16)
        ids = torch.zeros(1, input_tokens, dtype=torch.long)
        if config.is_encoder_decoder:
            out = model(input_ids=ids, decoder_input_ids=torch.zeros(1, output_tokens, dtype=torch.long), use_cache=True)
        else:
            out = model(input_ids=torch.zeros(1, input_tokens + output_tokens, dtype=torch.long), use_cache=True)
    cache = out.past_key_values
    caches = [cache.self_attention_cache, cache.cross_attention_cache] if hasattr(cache, "cross_attention_cache") else [cache]
    return sum(layer.keys.numel() + layer.values.numel() for c in caches for layer in c.layers)


@pytest.mark.parametrize("name", ["opt-350m", "phi-2", "falcon-7b", "bloom-560m", "mixtral-8x7b", "flan-t5-small",
                                  "gpt2", "qwen2.5-0.5b", "mistral-7b"])
def test_kv_cache_equals_the_cache_transformers_builds(name):
    """GQA (Mixtral, Qwen, Mistral), multi-query (Falcon-7B: one KV head), ALiBi (Bloom), partial rotary (Phi-2),
    encoder-decoder cross-attention (T5): our bytes are transformers' own cache, element for element."""
    m = load_model_config(name)
    expected = _cache_elements(_raw(name), input_tokens=5, output_tokens=3) * 2  # fp16: 2 bytes an element
    assert sizing.kv_cache_bytes(m, 1, 5, 3, "fp16") == expected
    if name == "falcon-7b":
        assert m.n_kv_heads == 1 and m.head_dim == 64


def test_latent_attention_caches_the_latent_not_the_heads():
    """DeepSeek-V3's multi-head latent attention (a tiny config of it): transformers caches kv_lora_rank +
    qk_rope_head_dim per token and layer; routed experts, not the shared one, make the inactive share."""
    raw = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 1000, "hidden_size": 256,
           "intermediate_size": 512, "moe_intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 8,
           "num_key_value_heads": 8, "n_routed_experts": 16, "num_experts_per_tok": 4, "n_shared_experts": 1,
           "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2, "kv_lora_rank": 64, "q_lora_rank": 96,
           "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 24, "tie_word_embeddings": False}
    m = from_dict(raw, name="tiny-deepseek")
    assert sizing.kv_cache_bytes(m, 1, 5, 3, "fp16") == _cache_elements(raw, 5, 3) * 2 == 3 * (64 + 16) * 8 * 2
    routed = 2 * 16 * 3 * 256 * 64  # two MoE layers of 16 experts, gate + up + down of 256 × 64
    assert sizing.parameter_count(m).experts_inactive == routed * (16 - 4) // 16


def test_kv_heads_follow_each_familys_rules():
    falcon40 = {"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128, "num_hidden_layers": 60,
                "vocab_size": 65024, "new_decoder_architecture": True, "num_kv_heads": 8}
    from llmdeploy.models import _generic

    assert _generic(falcon40)["n_kv_heads"] == 8
    assert _generic({**falcon40, "new_decoder_architecture": False, "multi_query": True})["n_kv_heads"] == 1
    assert _generic({**falcon40, "new_decoder_architecture": False, "multi_query": False})["n_kv_heads"] == 128
    bigcode = {"model_type": "gpt_bigcode", "n_embd": 6144, "n_head": 48, "n_layer": 40, "vocab_size": 49152, "multi_query": True}
    assert _generic(bigcode)["n_kv_heads"] == 1 and _generic(bigcode)["d_ff"] == 4 * 6144
    vlm = {"model_type": "llava", "text_config": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                                                  "num_hidden_layers": 32, "vocab_size": 32064, "intermediate_size": 14336}}
    fields = _generic(vlm)
    assert (fields["d_model"], fields["n_kv_heads"], fields["n_layers"], fields["vocab_size"]) == (4096, 8, 32, 32064)


def test_without_transformers_a_local_config_says_what_is_missing_and_a_bundled_one_uses_its_published_count(
        tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_torch(name, *args, **kwargs):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_torch)
    (tmp_path / "config.json").write_text(json.dumps(_raw("phi-2")))
    with pytest.raises(MissingDependencyError, match=r"cannot count the parameters of .*\(model_type 'phi'\): no closed form"):
        load_model_config(str(tmp_path))
    bundled = sizing.parameter_count(load_model_config("phi-2"))
    assert bundled.total == PUBLISHED["phi-2"] and bundled.from_hub
    assert bundled.method.startswith("published count, recorded in llmdeploy/data/models/index.toml")
    assert sizing.parameter_count(load_model_config("flan-t5-xl")).method == "closed form", "core families need nothing"


def test_a_config_transformers_cannot_build_is_one_line(tmp_path):
    raw = {**_raw("phi-2"), "partial_rotary_factor": "lots"}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"could not build it on the meta device \("):
        load_model_config(str(tmp_path))


def test_counts_are_cached_so_the_next_run_imports_neither_torch_nor_transformers(tmp_path):
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from llmdeploy.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['estimate', 'mixtral-8x7b', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps({'active': json.loads(r.output)['parameter_count']['active'],\n"
        "                  'heavy': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))}))\n"
    )
    env = {"LLMDEPLOY_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first, second = (json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                               check=True).stdout) for _ in range(2))
    assert first["heavy"] and not second["heavy"], "the second run reads the cached count"
    assert first["active"] == second["active"] == 12_879_925_248
    assert list((tmp_path / "parameter-counts").glob("v1-transformers-*.json"))
