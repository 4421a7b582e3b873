"""`llmdeploy calibrate` on the real handler (a tiny random FLAN-T5-shaped model, CPU), and plan/estimate using the result."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmdeploy import calibration as cal
from llmdeploy.cli.main import cli

pytestmark = pytest.mark.slow
FAST = ["--batch", "1", "--batch", "2", "--input-tokens", "24", "--new-tokens", "8", "--repeats", "2"]


def _calibrate(*args):
    return CliRunner().invoke(cli, ["calibrate", *args])


def test_calibrate_measures_the_handler_fits_and_writes_a_file_plan_then_names(tiny_model_dir, tmp_path):
    out = tmp_path / "cpu.json"
    result = _calibrate("--model", str(tiny_model_dir), *FAST, "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["path"] == str(out) and out.is_file() and not list(tmp_path.glob(".*.tmp"))
    written = cal.load_file(out)
    assert written.device == "cpu" and written.origin == "measured" and written.dtype == "fp32"
    assert written.input_tokens == 24, "the prompt was built to the exact token count asked for"
    assert [p.batch for p in written.points] == [1, 2]
    for row in data["points"]:
        m, pr = row["measured"], row["predicted"]
        assert m["prefill_s"] > 0 and m["step_s"] > 0 and m["peak_bytes"] > 0
        assert pr["total_s"] > 0 and pr["peak_bytes"] > 0
        assert row["predicted_over_measured"]["total_s"] == pytest.approx(pr["total_s"] / m["total_s"])
    # plan and estimate use it when told to, and say so.
    plan = json.loads(CliRunner().invoke(cli, ["plan", "--model", "flan-t5-small", "--calibration", str(out), "--json",
                                               "--latency-target", "60"]).stdout)
    cpu = next(c for c in plan["calibrations"] if c["device"] == "cpu")
    assert cpu["origin"] == "measured" and cpu["source"] == str(out)
    serverless = next(o for o in plan["options"] if o["mode"] == "serverless")
    assert serverless["speed_model"] == "cpu measured"
    text = CliRunner().invoke(cli, ["plan", "--model", "flan-t5-small", "--calibration", str(out), "--latency-target", "60"]).output
    assert f"Speed on cpu: measured: {written.name}" in text
    est = json.loads(CliRunner().invoke(cli, ["estimate", "flan-t5-small", "--calibration", str(out), "--json"]).stdout)
    assert any(c["source"] == str(out) for c in est["calibrations"])


def test_without_out_the_user_cache_is_written_and_used_by_default(tiny_model_dir):
    result = _calibrate("--model", str(tiny_model_dir), *FAST)
    assert result.exit_code == 0, result.output
    path = cal.default_path("cpu")
    assert path.is_file() and f"Wrote {path}" in result.output and "pred/meas" in result.output
    plan = json.loads(CliRunner().invoke(cli, ["plan", "--model", "flan-t5-small", "--json"]).stdout)
    assert next(c for c in plan["calibrations"] if c["device"] == "cpu")["source"] == str(path)


def test_cpu_clock_with_one_thread(tiny_model_dir, tmp_path):
    result = _calibrate("--model", str(tiny_model_dir), *FAST, "--threads", "1", "--clock", "cpu", "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert "1 thread, timed by CPU time" in cal.load_file(tmp_path / "c.json").host


@pytest.mark.parametrize(("args", "needle"), [
    (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
    (["--clock", "cpu"], "--clock cpu needs --device cpu and --threads 1"),
    (["--batch", "64"], "--batch 64 is above the CPU ceiling of 32"),
    (["--input-tokens", "600"], "--input-tokens 600 is longer than the model's context of 512 tokens"),
])
def test_bad_settings_are_one_line_usage_errors(tiny_model_dir, args, needle):
    import torch

    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # the check is that a CPU-only host refuses cuda in one line
    result = _calibrate("--model", str(tiny_model_dir), *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and needle in lines[-1], result.output
    assert "Traceback" not in result.output


def test_a_folder_without_config_or_a_decoder_only_model_is_refused(tmp_path):
    result = _calibrate("--model", str(tmp_path))
    assert result.exit_code == 2 and "has no config.json" in result.output
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                                                      "vocab_size": 100, "n_positions": 128}))
    result = _calibrate("--model", str(tmp_path))
    assert result.exit_code == 2 and "decoder-only" in result.output and "encoder-decoder" in result.output


def test_exact_prompt_hits_the_token_count_with_a_word_level_tokenizer(tiny_engine):
    from llmdeploy.cli.calibrate import exact_prompt

    for n in (2, 17, 100):
        text, count = exact_prompt(tiny_engine.tokenizer, n)
        assert count == n and len(tiny_engine.tokenizer(text)["input_ids"]) == n


def test_the_cuda_branch_synchronises_around_each_timed_run_and_reads_cuda_peaks(monkeypatch):
    """No GPU here: torch.cuda's calls are recorded to check what a CUDA probe does with them (not the GPU itself)."""
    import torch

    from llmdeploy.cli.calibrate import Probe
    from llmdeploy.handlers.precision import A10G

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda index=None: calls.append(("sync", index)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda index=None: calls.append(("reset", index)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda index=None: 123_456_789)

    class Service:
        def predict_json(self, bodies):
            calls.append(("predict", len(bodies), bodies[0]["parameters"]))
            return [[{"generated_text": "x"}]] * len(bodies)

    probe = Probe(Service(), A10G, "bf16", 16, "w1 w2", baseline_bytes=0)
    assert probe.is_cuda and probe.run(4, 9) >= 0
    assert calls == [("sync", 0), ("predict", 4, {"max_new_tokens": 9, "min_new_tokens": 9}), ("sync", 0)]
    probe.reset_peak()
    assert calls[-1] == ("reset", 0) and probe.peak_bytes() == 123_456_789


def test_a_long_run_no_longer_than_a_one_token_run_is_refused_not_fitted():
    from llmdeploy.cli.calibrate import measure_batch
    from llmdeploy.errors import LlmdeployError

    class Flat:  # every run takes one second, whatever it generates: noise, not a measurement
        runs = 0

        def run(self, batch, new_tokens):
            Flat.runs += 1
            return 1.0

        def reset_peak(self):
            pass

        def peak_bytes(self):
            return 1

    with pytest.raises(LlmdeployError, match="timings at batch 4 are too noisy"):
        measure_batch(Flat(), 4, 8, 2)
    assert Flat.runs == 2 * (2 + 3), "it retried three extra rounds before giving up"
