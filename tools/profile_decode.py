"""Developer check on a GPU host: why is the iteration-level loop slower than generate() there? (not run in CI)

On an H200 (2026-11-30) the loop behind the endpoint ran at about half the throughput of static batches, while
on CPU it is faster than generate per step. This script measures, for one model folder, on one device:

1. per-step wall time of ``T5DecodeLoop.step`` and per-token time of ``generate`` at batch 1, 8 and 32
   (the difference of two generate lengths, so the encoder and set-up cancel out);
2. under torch.profiler, per step/token: ATen ops called from Python, CUDA kernel launches, and the
   top operators by self CPU time and by device time, for both;
3. the loop once more with attention as matmul + softmax (what transformers' T5 runs) instead of
   ``scaled_dot_product_attention`` with a float mask (whose fused CUDA kernels may not take that mask).

    python tools/profile_decode.py MODEL_DIR [--device cuda] [--json OUT.json]

Prints one line per measurement; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOP = 12


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=24, help="decode steps timed per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from llmdeploy.handlers import decode
    from llmdeploy.handlers.precision import detect_device
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run this on a GPU host (or --device cpu for a dry run)")
        return 2
    device = detect_device(args.device)
    engine = TransformersEngine.load(str(args.model), parse_properties({"option.model_id": str(args.model)}),
                                     device=device)
    model = engine.model
    cuda = device.kind == "cuda"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_serve import prompts  # the requests bench_serve sends, so the two measure the same inputs

    texts = prompts(max(args.batches), 48)
    ids = engine.encode(texts)
    results: dict = {"device": device.name, "dtype": str(model.dtype), "torch": torch.__version__, "rows": []}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def loop_steps(batch: int, steps: int, profile=None) -> float:
        loop = decode.T5DecodeLoop(model, pad_token_id=engine.tokenizer.pad_token_id)
        loop.admit([decode.Sequence(row, {"max_new_tokens": 10_000}) for row in ids[:batch]])
        for _ in range(8):  # warm: the buffers reach their size, kernels are chosen
            loop.step()
        sync()
        start = time.perf_counter()
        with profile or contextlib.nullcontext():
            for _ in range(steps):
                loop.step()
            sync()
        return (time.perf_counter() - start) / steps

    def generate_tokens(batch: int, tokens: int, profile=None) -> float:
        enc = engine.tokenizer(texts[:batch], return_tensors="pt", padding=True,
                               return_token_type_ids=False).to(model.device)

        def run(n):
            with torch.inference_mode():
                model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            sync()

        run(4)  # warm
        start = time.perf_counter()
        run(8)
        short = time.perf_counter() - start
        start = time.perf_counter()
        with profile or contextlib.nullcontext():
            run(8 + tokens)
        return (time.perf_counter() - start - short) / tokens

    for batch in args.batches:
        loop_s, gen_s = loop_steps(batch, args.steps), generate_tokens(batch, args.steps)
        results["rows"].append({"batch": batch, "loop_step_ms": 1000 * loop_s, "generate_token_ms": 1000 * gen_s})
        print(f"batch {batch:3d}: loop step {1000 * loop_s:7.2f} ms   generate token {1000 * gen_s:7.2f} ms   "
              f"loop/generate {loop_s / gen_s:5.2f}", flush=True)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    batch = max(args.batches)
    for name, measure in (("loop", loop_steps), ("generate", generate_tokens)):
        prof = profile(activities=activities)
        measure(batch, args.steps, prof)
        results[name] = summary = _summarise(prof, args.steps if name == "loop" else 8 + args.steps, cuda)
        print(f"{name} at batch {batch}, per step: {summary['python_ops']:.0f} ATen ops from Python, "
              f"{summary['launches']:.0f} kernel launches", flush=True)
        for row in summary["top_cpu"]:
            print(f"    cpu  {row['us']:9.1f} us  x{row['calls']:6.1f}  {row['name']}")
        for row in summary["top_device"]:
            print(f"    dev  {row['us']:9.1f} us  x{row['calls']:6.1f}  {row['name']}")

    sdpa = decode._attention
    decode._attention = _math_attention
    try:
        rows = []
        for batch in args.batches:
            seconds = loop_steps(batch, args.steps)
            rows.append({"batch": batch, "loop_step_ms": 1000 * seconds})
            print(f"batch {batch:3d}: loop step with matmul+softmax attention {1000 * seconds:7.2f} ms", flush=True)
        results["math_attention"] = rows
    finally:
        decode._attention = sdpa
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def _math_attention(q, k, v, bias):
    """softmax(q·kᵀ + bias)·v in fp32 scores as transformers' T5Attention computes it (no fused kernel)."""
    import torch

    scores = torch.matmul(q, k.transpose(-1, -2)) + bias.to(q.dtype)
    return torch.matmul(torch.softmax(scores.float(), dim=-1).type_as(q), v)


def _summarise(prof, steps: int, cuda: bool) -> dict:
    """Per step: ATen ops called from Python (no parent op), kernel launches, top operators by CPU and device time."""
    events = prof.events()
    python_ops = sum(1 for e in events if e.cpu_parent is None and e.name.startswith("aten::"))
    launches = sum(1 for e in events if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    averages = prof.key_averages()

    def top(key):
        rows = sorted(averages, key=lambda a: getattr(a, key, 0) or 0, reverse=True)[:TOP]
        return [{"name": a.key[:60], "us": (getattr(a, key, 0) or 0) / steps, "calls": a.count / steps}
                for a in rows if (getattr(a, key, 0) or 0) > 0]

    return {"python_ops": python_ops / steps, "launches": launches / steps, "top_cpu": top("self_cpu_time_total"),
            "top_device": top("self_device_time_total") if cuda else []}


if __name__ == "__main__":
    raise SystemExit(main())
