"""Developer check on a CUDA GPU host (not run in CI, which has no GPU): the handler as the LMI container runs it there.

CI runs the handler on CPU (fp32), where the GPU-only rules (bf16 at compute capability >= 8.0, fp16 with T5's ``wo``
in fp32 below it, CUDA memory) are reasoned about with simulated devices (handlers/precision.py). This script holds
them to a real GPU, on a model folder such as ``benchmarks/bench_serve.py``'s random FLAN-T5 shapes:

1. option.dtype=auto picks what choose_precision promises for this GPU, and the weights are that dtype on CUDA.
2. The T4 rule, forced here with option.dtype=fp16: every ``wo`` Linear stays fp32, the rest is fp16, and greedy
   decoding of 32 tokens gives finite scores (T5's feed-forward overflows fp16 without the rule).
3. The iteration-level loop (handlers/decode.py, the endpoint's default) on CUDA: rows joining mid-decode each get
   exactly their max_new_tokens, and its tokens agree with transformers' generate on the same rows (bf16 math may
   order sums differently between a batch of 1 and a batch of 6, so agreement is reported, not required).
(The DJL entry point on the GPU: tools/check_djl_engine.py, which runs the real djl_python engine; both are run by
tools/device_check.sh.)

    python tools/cuda_check.py MODEL_DIR [--json OUT.json]

Exits 1 when a required check fails; prints one line per check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TEXTS = ["w1 w2 w3", "w4", "w10 w20 w30 w40 w50 w60 w70", "w5 w9", "w100 w101 w102 w103", "w7 w7 w7 w8"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a dry run of this script where there is no GPU (the fp16 rule is left out)")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from llmdeploy.handlers.decode import Sequence, T5DecodeLoop
    from llmdeploy.handlers.precision import choose_precision, detect_device
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run this on a GPU host (or --device cpu for a dry run)")
        return 2
    device = detect_device(args.device)
    cuda = device.kind == "cuda"
    results: dict = {"gpu": device.name, "capability": list(device.capability or ()), "torch": torch.__version__,
                     "transformers": transformers.__version__, "checks": {}}
    failures: list[str] = []

    def record(name: str, ok: bool, detail: str, required: bool = True) -> None:
        results["checks"][name] = {"ok": ok, "detail": detail}
        print(f"{'PASS' if ok else ('FAIL' if required else 'NOTE')} {name}: {detail}", flush=True)
        if required and not ok:
            failures.append(name)

    def load(dtype: str) -> TransformersEngine:
        config = parse_properties({"option.model_id": str(args.model), "option.dtype": dtype,
                                   "option.device": args.device, "option.max_new_tokens": "128"})
        return TransformersEngine.load(config.model_location(), config, device=device)

    # 1. auto
    engine = load("auto")
    want = choose_precision("auto", device)
    dtypes = {str(p.dtype) for p in engine.model.parameters()}
    placed = all(p.device.type == device.kind for p in engine.model.parameters())
    record("auto dtype", engine.precision.dtype == want.dtype and placed and dtypes == {f"torch.{want.dtype}"},
           f"{engine.precision.reason}; parameter dtypes {sorted(dtypes)}, all on {device.kind}: {placed}")
    ids = engine.encode(TEXTS)

    # 3. iteration-level loop vs generate, rows joining mid-decode
    lengths = [5, 12, 3, 20, 8, 16]
    seqs = [Sequence(row, {"max_new_tokens": n, "min_new_tokens": n}) for row, n in zip(ids, lengths, strict=True)]
    loop = T5DecodeLoop(engine.model)
    schedule = {0: seqs[:2], 2: seqs[2:4], 5: seqs[4:]}
    step = 0
    start = time.perf_counter()
    while schedule or len(loop):
        loop.admit(schedule.pop(step, []))
        if len(loop):
            loop.step()
        step += 1
    if cuda:
        torch.cuda.synchronize()
    loop_s = time.perf_counter() - start
    got = [len(s.generated) for s in seqs]
    record("iteration-level lengths", got == lengths, f"each row made {got} tokens (asked {lengths}) in {loop.steps} "
           f"steps, {loop_s * 1e3:.0f} ms")
    same = 0
    for s, row, n in zip(seqs, ids, lengths, strict=True):
        with torch.inference_mode():
            ref = engine.model.generate(input_ids=torch.tensor([row], device=engine.model.device), do_sample=False,
                                        max_new_tokens=n, min_new_tokens=n)[0, 1:].tolist()
        same += s.generated == ref
    record("iteration-level equals generate", same == len(seqs), f"{same}/{len(seqs)} rows token-identical to "
           f"generate() alone ({engine.precision.dtype})", required=False)
    del engine, loop
    if not cuda:
        return _finish(args, results, failures)
    results["peak_bytes_auto"] = torch.cuda.max_memory_allocated(device.index)
    torch.cuda.empty_cache()

    # 2. the T4 rule, forced
    engine = load("fp16")
    kept = [n for n, m in engine.model.named_modules() if n.rsplit(".", 1)[-1] == "wo"]
    wo_fp32 = all(m.weight.dtype == torch.float32 for n, m in engine.model.named_modules() if n in kept)
    rest = {str(p.dtype) for n, p in engine.model.named_parameters() if ".wo." not in n}
    record("fp16 rule: wo in fp32", bool(kept) and wo_fp32 and rest == {"torch.float16"},
           f"{len(kept)} wo modules fp32: {wo_fp32}; other parameters {sorted(rest)}")
    batch = engine.tokenizer(TEXTS, return_tensors="pt", padding=True).to(engine.model.device)
    with torch.inference_mode():
        out = engine.model.generate(**batch, do_sample=False, max_new_tokens=32, min_new_tokens=32,
                                    output_scores=True, return_dict_in_generate=True)
    finite = all(bool((torch.isfinite(s) | (s == float("-inf"))).all()) for s in out.scores)  # -inf: masked
    made = out.sequences.shape[1] - 1
    record("fp16 rule: finite scores", finite and made == 32, f"{made} tokens per row, scores finite (no NaN/+inf): "
           f"{finite}")
    return _finish(args, results, failures)


def _finish(args, results: dict, failures: list[str]) -> int:
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("OK" if not failures else f"{len(failures)} failure(s): {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
