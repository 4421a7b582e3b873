"""Predicted ÷ measured: the speed and memory model against the real handler on this machine.

1. Builds a FLAN-T5-small-shaped model with random weights and a word-level tokenizer (bench_serve.build_model;
   the published config's shape, so the same code path as google/flan-t5-small: safetensors + tokenizer files,
   308 MB with an lm_head of its own as the checkpoint has; the prediction reads the saved config.json, as
   `llmdeploy estimate DIR` would). On a GPU host, tools/device_check.sh runs calibrate --device cuda instead.
2. Runs `llmdeploy calibrate` on it (one torch thread, timed by CPU time: this machine's 2 vCPUs are shared
   with other jobs, and CPU time is what those jobs cannot inflate), unless --calibration FILE is given.
3. In a fresh process, drives the handler (Seq2SeqService.predict_json, as DJL would) at batch 1 and 8 with
   256-token prompts generating exactly 64 tokens, the same clock, and records peak RSS above the import
   baseline (import torch, transformers and the handler, then load) at batch 8.
4. For gpt2 and qwen2.5-0.5b shapes (random weights from the bundled configs, saved as safetensors: no
   downloads), in a fresh process each: from_pretrained + .to("cpu") + generate(batch 8 × 256 -> 64), which is
   what the handler does for its own model, and peak RSS above the import baseline.
5. Prints predicted, measured and predicted ÷ measured next to the target band (latency ±30 %, memory ±25 %).

    python benchmarks/bench_calibration.py                       # ~10 minutes on 2 shared vCPUs
    python benchmarks/bench_calibration.py --calibration cal.json --skip-decoder-only

Asserts nothing: it prints ratios. The memory estimate compared is weights + KV cache + activations (+ on CPU the
framework's workspace), before the buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IN_TOKENS, OUT_TOKENS, MEM_BATCH = 256, 64, 8
LATENCY_BAND, MEMORY_BAND = 0.30, 0.25


# -- workers (each runs in its own process so peak RSS is its own) ----------------------------------------


def worker_handler(model_dir: str, repeats: int) -> dict:
    from llmdeploy.cli.calibrate import load_probe

    probe = load_probe(model_dir, "cpu", IN_TOKENS, threads=1, clock="cpu")
    probe.run(1, 3)  # warm-up, as calibrate does
    out = {"input_tokens": probe.input_tokens, "dtype": probe.dtype, "latency_s": {}}
    for batch in (1, MEM_BATCH):
        out["latency_s"][str(batch)] = min(probe.run(batch, OUT_TOKENS) for _ in range(repeats))
    out["peak_bytes"] = probe.peak_bytes()  # the window opened at process start: load + every run above
    return out


def worker_decoder_only(model_dir: str) -> dict:
    import gc

    import torch
    import transformers  # noqa: F401 - part of the import baseline

    from llmdeploy.cli.calibrate import peak_rss_bytes, reset_peak_rss, rss_bytes

    torch.set_num_threads(1)
    gc.collect()
    baseline = rss_bytes()
    reset_peak_rss()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to("cpu").eval()
    ids = torch.randint(100, 1000, (MEM_BATCH, IN_TOKENS))
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=OUT_TOKENS,
                       min_new_tokens=OUT_TOKENS, do_sample=False, pad_token_id=0)
    return {"peak_bytes": peak_rss_bytes() - baseline}


# -- building the models ---------------------------------------------------------------------------------


def build_t5(path: Path) -> Path:
    sys.path.insert(0, str(HERE))
    import bench_serve

    return bench_serve.build_model(path)


def build_decoder_only(name: str, path: Path) -> Path:
    """Random weights in the bundled config's shape, saved as safetensors (the format the handler loads)."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((ROOT / "llmdeploy" / "data" / "models" / f"{name}.json").read_text())
    model_type = raw.pop("model_type")
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype")}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **raw), dtype=torch.float32)
    model.save_pretrained(path)
    return path


def run_worker(*args: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the comparison -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "llmdeploy-bench-calibration")
    parser.add_argument("--calibration", type=Path, help="Use this calibration instead of running calibrate.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per batch size; the fastest counts.")
    parser.add_argument("--skip-decoder-only", action="store_true", help="Only the FLAN-T5 handler (skips ~5 minutes).")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        result = worker_handler(rest[0], int(rest[1])) if kind == "handler" else worker_decoder_only(rest[0])
        print(json.dumps(result))
        return

    from llmdeploy import calibration, sizing
    from llmdeploy.models import load_model_config

    args.workdir.mkdir(parents=True, exist_ok=True)
    t5_dir = build_t5(args.workdir / "flan-t5-small-shape")
    cal_path = args.calibration
    if cal_path is None:
        cal_path = args.workdir / "cpu-calibration.json"
        print(f"Calibrating on {t5_dir} (a few minutes)...", flush=True)
        subprocess.run([sys.executable, "-m", "llmdeploy.cli.main", "calibrate", "--model", str(t5_dir), "--threads", "1",
                        "--clock", "cpu", "--repeats", "3", "--out", str(cal_path)], check=True,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"})
    cal = calibration.load_file(cal_path)
    print(f"Calibration: {cal.name}\n", flush=True)

    rows = []
    t5 = load_model_config(str(t5_dir))
    measured = run_worker("handler", str(t5_dir), str(args.repeats))
    for batch in (1, MEM_BATCH):
        lat = sizing.latency(t5, measured["dtype"], cal, batch=batch, input_tokens=measured["input_tokens"], output_tokens=OUT_TOKENS)
        rows.append((f"flan-t5-small shape, handler, batch {batch}: {IN_TOKENS}→{OUT_TOKENS} tokens", "latency",
                     lat.total_s, measured["latency_s"][str(batch)], LATENCY_BAND))
    mem = sizing.inference_memory(t5, measured["dtype"], batch=MEM_BATCH, input_tokens=measured["input_tokens"],
                                  output_tokens=OUT_TOKENS, device="cpu")
    rows.append((f"flan-t5-small shape, handler, batch {MEM_BATCH}", "peak memory", mem.before_buffer, measured["peak_bytes"],
                 MEMORY_BAND))
    if not args.skip_decoder_only:
        for name in ("gpt2", "qwen2.5-0.5b"):
            path = build_decoder_only(name, args.workdir / f"{name}-shape")
            peak = run_worker("decoder-only", str(path))["peak_bytes"]
            m = load_model_config(name)
            mem = sizing.inference_memory(m, "fp32", batch=MEM_BATCH, input_tokens=IN_TOKENS, output_tokens=OUT_TOKENS, device="cpu")
            rows.append((f"{name} shape, from_pretrained + generate, batch {MEM_BATCH}", "peak memory", mem.before_buffer, peak,
                         MEMORY_BAND))

    def show(kind: str, value: float) -> str:
        return f"{value:.2f} s" if kind == "latency" else f"{value / 1024**2:,.0f} MiB"

    width = max(len(r[0]) for r in rows)
    print(f"{'case':{width}}  {'what':11}  {'predicted':>10}  {'measured':>10}  {'pred/meas':>9}  target")
    worst = True
    for case, kind, predicted, actual, band in rows:
        ratio = predicted / actual
        ok = abs(ratio - 1) <= band
        worst &= ok
        print(f"{case:{width}}  {kind:11}  {show(kind, predicted):>10}  {show(kind, actual):>10}  {ratio:9.2f}  "
              f"±{band:.0%} {'ok' if ok else 'OUTSIDE'}")
    print(f"\n{'Every ratio is within its band.' if worst else 'Some ratios are outside their band.'} "
          "Latency is CPU time of one thread; memory is peak RSS above the import baseline.")


if __name__ == "__main__":
    main()
