"""Speed calibrations (llmdeploy/calibration.py) and the speed model they feed (sizing.latency): no torch here.

The measuring half of `llmdeploy calibrate` runs the real handler and is tested in tests/serve/test_calibrate.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from llmdeploy import calibration as cal
from llmdeploy import catalog as c
from llmdeploy import sizing
from llmdeploy.assumptions import load_assumptions
from llmdeploy.errors import ConfigError, UsageError
from llmdeploy.models import from_dict, load_model_config

# The T5 checkpoints NVIDIA timed (original T5, tied embeddings, ReLU MLP): published parameter counts 222,903,552
# and 60,506,624 (google-t5/t5-base, t5-small).
T5_BASE = from_dict({"model_type": "t5", "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 12,
                     "num_decoder_layers": 12, "vocab_size": 32128, "feed_forward_proj": "relu", "tie_word_embeddings": True,
                     "relative_attention_num_buckets": 32, "n_positions": 512}, name="t5-base")
T5_SMALL = from_dict({"model_type": "t5", "d_model": 512, "d_ff": 2048, "d_kv": 64, "num_heads": 8, "num_layers": 6,
                      "num_decoder_layers": 6, "vocab_size": 32128, "feed_forward_proj": "relu", "tie_word_embeddings": True,
                      "relative_attention_num_buckets": 32, "n_positions": 512}, name="t5-small")


@pytest.fixture(scope="module")
def cat():
    return c.load_catalog_from(c.BUNDLED_DIR)


def _roofline_step(m, gpu, dtype="fp32"):
    a = load_assumptions()
    peak = gpu.fp32_tflops if dtype == "fp32" else gpu.fp16_tflops
    work = sizing.decode_step_work(m, dtype, 1, 64, 32)
    return work.bytes / (gpu.bandwidth_gbs * 1e9 * a.bandwidth_efficiency) + work.flops / (peak * 1e12 * a.compute_efficiency)


def test_t5_shapes_are_the_published_checkpoints():
    assert sizing.parameter_count(T5_BASE).total == 222_903_552
    assert sizing.parameter_count(T5_SMALL).total == 60_506_624


def test_published_per_layer_overhead_follows_from_nvidias_throughput(cat):
    """FasterTransformer's T5 guide: HF T5-base fp32 66 tok/s on A100-40GB; T5-small 60 and T5-base 26 tok/s on V100."""
    bundled = cal.bundled()
    a100 = (1 / 66 - _roofline_step(T5_BASE, cat.gpus["A100-40GB"])) / 12
    assert bundled["A100-40GB"].step_overhead_s_per_layer == pytest.approx(a100, rel=1e-3)
    v100 = ((1 / 60 - _roofline_step(T5_SMALL, cat.gpus["V100"])) / 6 + (1 / 26 - _roofline_step(T5_BASE, cat.gpus["V100"])) / 12) / 2
    assert bundled["V100"].step_overhead_s_per_layer == pytest.approx(v100, rel=1e-3)
    assert bundled["V100-32GB"].step_overhead_s_per_layer == bundled["V100"].step_overhead_s_per_layer
    for name in ("A100-40GB", "V100"):
        row = bundled[name]
        assert row.origin == "published" and "FasterTransformer" in row.source and row.date == "2023-10-19"
        gpu = cat.gpus[name]
        a = load_assumptions()
        # bandwidth and FLOP/s stay datasheet × efficiency: batch-1 steps there are nearly all overhead
        assert row.bandwidth_gbs == pytest.approx(gpu.bandwidth_gbs * a.bandwidth_efficiency)
        assert row.decode_flops == pytest.approx(gpu.fp32_tflops * 1e12 * a.compute_efficiency)


def flan_t5_small_as_saved():
    """flan-t5-small's shape as bench_serve.build_model saved it when the bundled CPU calibration was measured
    (transformers 5 had tied lm_head to the embedding; build_model has untied it since, as the checkpoint has it)."""
    raw = json.loads((c.BUNDLED_DIR.parent / "models" / "flan-t5-small.json").read_text())
    return from_dict({**raw, "tie_word_embeddings": True}, name="flan-t5-small-shape")


def test_the_bundled_cpu_calibration_reproduces_its_own_measurements():
    cpu = cal.bundled()["cpu"]
    assert cpu.origin == "measured" and cpu.dtype == "fp32" and len(cpu.points) == 6 and cpu.input_tokens == 256
    m = flan_t5_small_as_saved()  # the model it was measured on
    for p in cpu.points:
        lat = sizing.latency(m, "fp32", cpu, batch=p.batch, input_tokens=256, output_tokens=17)
        assert lat.decode_step_s == pytest.approx(p.step_s, rel=0.2), p
        assert lat.prefill_s == pytest.approx(p.prefill_s, rel=0.2), p
        mem = sizing.inference_memory(m, "fp32", batch=p.batch, input_tokens=256, output_tokens=17, device="cpu")
        assert mem.before_buffer == pytest.approx(p.peak_bytes, rel=0.25), p


def test_the_bundled_h200_calibration_reproduces_its_own_measurements_and_agrees_with_the_published_a100(cat):
    h200 = cal.bundled()["H200"]
    assert h200.origin == "measured" and h200.dtype == "bf16" and len(h200.points) == 6 and h200.input_tokens == 256
    m = load_model_config("flan-t5-xl")  # measured on its shape, with its own lm_head as the checkpoint has
    for p in h200.points:
        lat = sizing.latency(m, "bf16", h200, batch=p.batch, input_tokens=256, output_tokens=17)
        assert lat.total_s == pytest.approx(p.prefill_s + 16 * p.step_s, rel=0.3), p
        mem = sizing.inference_memory(m, "bf16", batch=p.batch, input_tokens=256, output_tokens=17, device="gpu")
        assert mem.before_buffer == pytest.approx(p.peak_bytes, rel=0.25), p
    # FLOP/s could not be fitted (every step is fixed cost): the roofline's figure, as calibrate fills it in
    assert h200.decode_flops == h200.prefill_flops == pytest.approx(cat.gpus["H200"].bf16_tflops * 1e12 * 0.5)
    # the fallback's per-layer overhead (NVIDIA's 2022 A100 figure) is what a 2026 stack measures too, within 25 %
    a100 = cal.bundled()[load_assumptions().roofline_overhead_from]
    assert h200.step_overhead_s_per_layer == pytest.approx(a100.step_overhead_s_per_layer, rel=0.25)


def test_unidentified_flops_take_the_roofline_figure_and_say_so(cat):
    a, gpu = load_assumptions(), cat.gpus["H200"]
    roof = cal.roofline(gpu, "bf16", a, None).decode_flops
    decode, prefill, note = cal.fill_unidentified(cal.UNIDENTIFIED_FLOPS, 3e14, gpu, "bf16", a)
    assert (decode, prefill) == (roof, 3e14) and note.startswith("decode FLOP/s: not identifiable")
    assert cal.fill_unidentified(2e14, 3e14, gpu, "bf16", a) == (2e14, 3e14, "")
    m = load_model_config("flan-t5-small")
    flat = [cal.Point(b, 0.05, 0.01) for b in (1, 2, 4, 8)]  # the same time at every batch: no compute term
    flops, _, pflops, _ = cal.fit(m, "bf16", flat, input_tokens=64, bandwidth_gbs=3000, output_position=5)
    assert flops == pflops == cal.UNIDENTIFIED_FLOPS


def test_fit_recovers_the_parameters_that_made_the_points():
    m = load_model_config("flan-t5-small")
    truth = replace(cal.bundled()["cpu"], bandwidth_gbs=20.0, decode_flops=40e9, prefill_flops=120e9,
                    step_overhead_s_per_layer=0.0011, prefill_overhead_s=0.004, points=())
    points = []
    for batch in (1, 2, 4, 8, 16, 32):
        lat = sizing.latency(m, "fp32", truth, batch=batch, input_tokens=200, output_tokens=17)
        points.append(cal.Point(batch, lat.prefill_s, lat.decode_step_s))
    flops, overhead, pflops, p0 = cal.fit(m, "fp32", points, input_tokens=200, bandwidth_gbs=20.0, output_position=1 + 17 / 2)
    assert (flops, overhead, pflops, p0) == pytest.approx((40e9, 0.0011, 120e9, 0.004), rel=1e-6)


def test_fit_never_returns_a_negative_overhead():
    m = load_model_config("flan-t5-small")
    # Steps that only grow with the batch (no fixed part at all) and a slow stream: overhead clamps to 0.
    points = [cal.Point(b, 0.01 * b, 0.002 * b) for b in (1, 2, 4, 8)]
    flops, overhead, pflops, p0 = cal.fit(m, "fp32", points, input_tokens=64, bandwidth_gbs=1e6, output_position=5)
    assert overhead >= 0 and p0 >= 0 and flops > 0 and pflops > 0
    with pytest.raises(UsageError, match="at least two batch sizes"):
        cal.fit(m, "fp32", points[:1], input_tokens=64, bandwidth_gbs=10, output_position=5)


def test_roofline_fallback_borrows_the_published_overhead_and_says_so(cat):
    cals = cal.resolve()
    t4 = cals.for_gpu(cat.gpus["T4"], "fp16")
    a = load_assumptions()
    assert t4.origin == "roofline" and "no measurement for T4" in t4.name and "A100-40GB" in t4.name
    assert t4.step_overhead_s_per_layer == cal.bundled()[a.roofline_overhead_from].step_overhead_s_per_layer
    assert t4.bandwidth_gbs == pytest.approx(320 * a.bandwidth_efficiency)
    assert t4.decode_flops == pytest.approx(65e12 * a.compute_efficiency)
    assert cals.for_gpu(cat.gpus["A100-40GB"], "fp16").origin == "published"
    assert [r["device"] for r in cals.report()] == ["A100-40GB", "T4"], "the report lists what was used"


def test_precedence_bundled_then_user_cache_then_files(tmp_path, cat):
    base = cal.bundled()["cpu"]
    cached = replace(base, name="cached", step_overhead_s_per_layer=0.002)
    cal.write(cached, cal.default_path("cpu"))  # the user cache (LLMDEPLOY_CACHE_DIR is a temp dir in tests)
    assert cal.resolve(cat=cat).for_cpu().name == "cached"
    explicit = tmp_path / "mine.json"
    cal.write(replace(base, name="explicit", source=str(explicit)), explicit)
    assert cal.resolve([explicit], cat=cat).for_cpu().name == "explicit"
    assert not list(cal.user_dir().glob(".*.tmp")), "written atomically: no temp file left behind"


def test_gpu_calibration_file_replaces_the_fallback_for_that_gpu(tmp_path, cat):
    mine = replace(cal.bundled()["cpu"], device="L4", name="my L4", bandwidth_gbs=250.0, decode_flops=60e12,
                   prefill_flops=60e12, step_overhead_s_per_layer=0.0003)
    path = cal.write(mine, tmp_path / "l4.json")
    cals = cal.resolve([path], cat=cat)
    assert cals.for_gpu(cat.gpus["L4"], "bf16").name == "my L4"
    assert cals.for_gpu(cat.gpus["A10G"], "bf16").origin == "roofline"


def test_bad_calibration_files_are_one_line_errors(tmp_path, cat):
    with pytest.raises(UsageError, match="does not exist") as exc:
        cal.resolve([tmp_path / "nope.json"], cat=cat)
    assert "\n" not in str(exc.value) and "llmdeploy calibrate" in str(exc.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cal.resolve([bad], cat=cat)
    good = cal.bundled()["cpu"].to_dict()
    for field, value, needle in (("bandwidth_gbs", -1, "bandwidth_gbs must be greater than 0, got -1"), ("origin", "guessed", "origin 'guessed'"),
                                 ("schema_version", 9, "schema_version 9"), ("device", "TPU", "'TPU', which is not in the catalog")):
        bad.write_text(json.dumps({**good, field: value}))
        with pytest.raises(ConfigError, match=needle):
            cal.resolve([bad], cat=cat)
    del good["name"]
    bad.write_text(json.dumps(good))
    with pytest.raises(ConfigError, match="lacks the text field 'name'"):
        cal.resolve([bad], cat=cat)


@pytest.mark.parametrize(("name", "gib", "expected"), [
    ("Tesla T4", 15, "T4"), ("NVIDIA A10G", 22.5, "A10G"), ("NVIDIA L4", 22.5, "L4"), ("NVIDIA L40S", 45, "L40S"),
    ("NVIDIA A100-SXM4-40GB", 40, "A100-40GB"), ("NVIDIA A100-SXM4-80GB", 80, "A100-80GB"),
    ("NVIDIA H100 80GB HBM3", 79.6, "H100"), ("NVIDIA H200", 140.4, "H200"), ("Tesla V100-SXM2-16GB", 15.8, "V100"), ("Tesla V100-SXM2-32GB", 31.7, "V100-32GB"),
])
def test_cuda_device_names_map_to_catalog_gpus(cat, name, gib, expected):
    assert cal.gpu_from_device(name, int(gib * 1024**3), cat.gpus) == expected


def test_an_unknown_cuda_device_says_what_is_known(cat):
    with pytest.raises(UsageError, match="'NVIDIA RTX 4090' is not in the catalog.*A100-40GB"):
        cal.gpu_from_device("NVIDIA RTX 4090", 24 * 1024**3, cat.gpus)
