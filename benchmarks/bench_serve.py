"""Serving benchmark: one-at-a-time, static and iteration-level batching behind the endpoint, against in-process
generate and CTranslate2, for uniform and mixed output lengths.

Builds a FLAN-T5-small-shaped model with random weights (d_model 512, d_ff 1024, d_kv 64, 6 heads, 8+8 layers,
vocab 32128, gated-gelu, untied lm_head) and a word-level tokenizer trained offline, converts it once to
CTranslate2, then for two workloads

  (a) uniform: every request makes exactly 32 new tokens;
  (b) mixed:   each request makes its own 4..128 tokens (seeded), the case static batching handles worst;

measures, in this one run:

  in-process generate   TransformersEngine.generate on batches of 32 in one process (no HTTP): the BASELINE;
                        for (b) each batch decodes to its longest request (generate keeps finished rows in
                        the batch, padded, so that is its cost either way);
  one-at-a-time         the endpoint with static batches of 1;
  static batching       the endpoint with static batches of up to 32 (DynamicBatcher, 20 ms wait);
  iteration-level       the endpoint's default on CPU (--batching continuous): requests join the running decode at every step (32 slots);
  ct2 in-process        CTranslate2 translate_batch on batches of 32 (int8 on CPU, as served), text in and text out
                        like the others, each row stopped at its own length (the callback; CTranslate2 drops
                        finished rows from the batch);
  ct2 endpoint          the endpoint with --backend ctranslate2 (static batches of up to 32, grouped by the
                        parameters rows must share: one call per batch whatever the lengths).

Every measurement runs in a fresh process of its own (in-process runs too: two engines' thread pools in one
process slow each other). Endpoints (python -m llmdeploy.handlers.endpoint) are driven by 32 concurrent HTTP
clients (aiohttp) from this process; every request is counted only when its body holds no error. Prints
throughput and p50/p99 latency, each as a ratio to the baseline of its workload. Latency of an in-process
batch is the batch's time (all its requests wait for it). Asserts nothing about time.

    python benchmarks/bench_serve.py                      # ~4 minutes on 2 shared CPU cores
    python benchmarks/bench_serve.py --requests 32 --skip ct2
    python benchmarks/bench_serve.py --device cuda --shape flan-t5-xl   # on a GPU host (tools/device_check.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from llmdeploy.handlers.serving_config import DEFAULT_MAX_BATCH_SIZE

VOCAB = 32128
BATCH = DEFAULT_MAX_BATCH_SIZE  # 32: the endpoint's default batch, and the in-process batches compared with it


SHAPES = ("flan-t5-small", "flan-t5-base", "flan-t5-large", "flan-t5-xl")  # bundled configs (llmdeploy/data/models)


def build_model(path: Path, shape: str = "flan-t5-small", device: str = "cpu") -> Path:
    """A published FLAN-T5 checkpoint's shape (its bundled config.json) with random weights and an lm_head of its own,
    plus a word-level tokenizer trained offline with `tokenizers`.

    On ``device="cuda"`` the weights are made on the GPU and saved in bf16 (flan-t5-xl in fp32 would be 11 GB of
    host RAM and minutes of CPU initialisation); the handler loads them as it would any checkpoint.
    """
    import json as json_mod

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from llmdeploy.models import MODELS_DIR

    if (path / "config.json").is_file():
        return path
    specials = ["<pad>", "</s>", "<unk>"]
    words = [f"w{i}" for i in range(VOCAB - len(specials))]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    corpus = (" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000))
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(vocab_size=VOCAB, min_frequency=0,
                                                              special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=512)
    published = json_mod.loads((MODELS_DIR / f"{shape}.json").read_text(encoding="utf-8"))
    published = {k: v for k, v in published.items() if k not in ("architectures", "torch_dtype", "dtype")}
    config = T5Config(**published)
    assert config.vocab_size == VOCAB  # the tokenizer below is built to it
    torch.manual_seed(0)
    with torch.device(device):
        model = T5ForConditionalGeneration(config)
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():  # transformers 5 ties T5's head regardless
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * config.initializer_factor)
        model.config.tie_word_embeddings = False
    if device != "cpu":
        model.to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prompts(n: int, words: int) -> list[str]:
    return [" ".join(f"w{(i * 131 + j * 17) % 30000}" for j in range(words)) for i in range(n)]


# ------------------------------------------------------------------------------------------
# HTTP load generation
# ------------------------------------------------------------------------------------------

async def drive(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float], int]:
    import aiohttp

    from llmdeploy.responses import response_error

    latencies: list[float] = []
    errors = 0
    queue = list(reversed(bodies))
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def worker():
            nonlocal errors
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    # The status alone is not enough: under DJL a batched request's error comes back as 200.
                    if response_error(resp.status, await resp.read()) is not None:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class Server:
    def __init__(self, model: Path, *, backend: str, max_batch_size: int, delay_ms: int, ct2_dir: Path | None,
                 threads: int, omp_wait_policy: str, device: str = "cpu", extra: list[str] = ()):
        self.args = [sys.executable, "-m", "llmdeploy.handlers.endpoint", "--model", str(model),
                     "--host", "127.0.0.1", "--port", "0", "--backend", backend, "--device", device,
                     "--max-batch-size", str(max_batch_size), "--max-batch-delay-ms", str(delay_ms),
                     "--max-new-tokens", "512", "--log-level", "WARNING", "--request-timeout", "600",
                     *(["--ct2-dir", str(ct2_dir)] if ct2_dir else []), *extra]
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error",
                        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if omp_wait_policy != "default":
            self.env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
        self.proc = None
        self.url = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=self.env)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"endpoint did not start: {line!r}")
        self.url = line.split()[-1]
        with urllib.request.urlopen(self.url + "/ping", timeout=30) as resp:
            assert resp.status == 200
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


UNIFORM_TOKENS = 32
MIXED_RANGE = (4, 128)


def workload(kind: str, n: int, prompt_words: int) -> list[dict]:
    import random

    rng = random.Random(7)
    bodies = []
    for text in prompts(n, prompt_words):
        tokens = UNIFORM_TOKENS if kind == "uniform" else rng.randint(*MIXED_RANGE)
        bodies.append({"inputs": text, "parameters": {"max_new_tokens": tokens, "min_new_tokens": tokens}})
    return bodies


def row(name: str, kind: str, n: int, elapsed: float, latencies: list[float], errors: int = 0) -> dict:
    return {"mode": name, "workload": kind, "requests": n, "errors": errors, "throughput": n / elapsed,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


def bench_endpoint(model: Path, ct2_dir: Path, name: str, kind: str, bodies: list[dict], args, *,
                   backend: str = "transformers", batching: str = "continuous", max_batch_size: int = BATCH) -> dict:
    with Server(model, backend=backend, max_batch_size=max_batch_size, delay_ms=args.max_batch_delay_ms,
                ct2_dir=ct2_dir, threads=args.threads, omp_wait_policy=args.omp_wait_policy, device=args.device,
                extra=["--batching", batching]) as server:
        url = server.url + "/invocations"
        asyncio.run(drive(url, bodies[:4], 4))  # warm-up
        elapsed, lat, errors = asyncio.run(drive(url, bodies, args.clients))
    result = row(name, kind, len(bodies), elapsed, lat, errors)
    print(f"  {kind:8s} {name:20s} {result['throughput']:7.2f} req/s  p50 {result['p50_ms']:7.0f} ms  "
          f"p99 {result['p99_ms']:7.0f} ms  errors {errors}", flush=True)
    return result


def bench_generate(model: Path, kind: str, bodies: list[dict], args) -> dict:
    """TransformersEngine.generate (transformers' generate) on batches of 32, one process, no HTTP."""
    import torch

    from llmdeploy.handlers.precision import detect_device
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    torch.set_num_threads(args.threads)
    config = parse_properties({"option.model_id": str(model), "option.max_new_tokens": "512"})
    engine = TransformersEngine.load(str(model), config, device=detect_device(args.device))
    engine.generate([b["inputs"] for b in bodies[:4]], {"max_new_tokens": 4})
    lat = []
    start = time.perf_counter()
    for i in range(0, len(bodies), BATCH):
        batch = bodies[i:i + BATCH]
        longest = max(b["parameters"]["max_new_tokens"] for b in batch)
        engine.generate([b["inputs"] for b in batch], {"max_new_tokens": longest, "min_new_tokens": longest})
        lat += [time.perf_counter() - start] * len(batch)
    result = row("in-process generate", kind, len(bodies), time.perf_counter() - start, lat)
    print(f"  {kind:8s} {'in-process generate':20s} {result['throughput']:7.2f} req/s (baseline)", flush=True)
    return result


def bench_ct2_inprocess(model: Path, ct2_dir: Path, kind: str, bodies: list[dict], args) -> dict:
    """CTranslate2's translate_batch on batches of 32 (int8 on CPU, what the endpoint loads), no HTTP."""
    import ctranslate2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type="int8", inter_threads=1,
                                        intra_threads=args.threads)

    def source(batch: list[dict]) -> list[list[str]]:
        return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer([b["inputs"] for b in batch])["input_ids"]]

    translator.translate_batch(source(bodies[:4]), max_decoding_length=4)
    lat = []
    start = time.perf_counter()
    for i in range(0, len(bodies), BATCH):
        batch = bodies[i:i + BATCH]
        lengths = [b["parameters"]["max_new_tokens"] for b in batch]
        longest = max(lengths)
        # min_decoding_length keeps every row from ending early (EOS); the callback ends row k at its own length.
        results = translator.translate_batch(source(batch), max_decoding_length=longest, min_decoding_length=longest,
                                             beam_size=1, callback=lambda step, n=lengths: step.step + 1 >= n[step.batch_id])
        # text in, text out, as the endpoint (and in-process generate) does
        tokenizer.batch_decode([tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results],
                               skip_special_tokens=True)
        lat += [time.perf_counter() - start] * len(lengths)
    result = row("ct2 in-process", kind, len(bodies), time.perf_counter() - start, lat)
    print(f"  {kind:8s} {'ct2 in-process':20s} {result['throughput']:7.2f} req/s", flush=True)
    return result


def _gpu_name() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU here")
    return torch.cuda.get_device_name(0)


def isolated(function, *args):
    """``function(*args)`` in a fresh interpreter (spawned): nothing loaded by earlier measurements runs beside it."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per measurement (one-at-a-time: a third)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=48)
    parser.add_argument("--max-batch-delay-ms", type=int, default=20)
    parser.add_argument("--workloads", nargs="+", default=["uniform", "mixed"], choices=["uniform", "mixed"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["one-at-a-time", "static", "ct2"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="passive",
                        help="OpenMP idle threads sleep (passive) or spin (active) in the servers; spinning is "
                             "faster on an idle machine and many times slower when other processes share the cores")
    parser.add_argument("--model-dir", type=Path, help="reuse/build the random model here (default: a temp dir)")
    parser.add_argument("--shape", choices=SHAPES, default="flan-t5-small",
                        help="the published checkpoint whose shape the random model has")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the handler runs (cuda: the first GPU, bf16 where it supports it, as served)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)

    if args.omp_wait_policy != "default":  # before torch/ctranslate2 load OpenMP (in-process runs too)
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        return _run(args, work, t_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the model and its CTranslate2 copy, unless --model-dir holds it


def _run(args, work: Path, t_start: float) -> int:
    model = build_model(args.model_dir or work / f"{args.shape}-random", args.shape, args.device)
    ct2_dir = None
    if "ct2" not in args.skip and importlib.util.find_spec("ctranslate2") is None:
        print("ct2: ctranslate2 is not installed here (pip install -e '.[ctranslate2]'); its rows are left out", flush=True)
    elif "ct2" not in args.skip and args.device != "cpu":
        print("ct2: measured on CPU only (int8, as the CPU endpoint serves it); its rows are left out", flush=True)
    elif "ct2" not in args.skip:
        from llmdeploy.handlers.seq2seq import convert_to_ctranslate2

        ct2_dir = convert_to_ctranslate2(str(model), work / "ct2")
    where = (f"{args.threads} CPU threads" if args.device == "cpu"
             else f"{_gpu_name()} (bf16 where supported), {args.threads} CPU threads")
    print(f"model: {args.shape} shape, random weights; {args.requests} requests of {args.prompt_words} words, "
          f"{args.clients} clients; {where}, OMP_WAIT_POLICY={args.omp_wait_policy}", flush=True)

    rows = []
    for kind in args.workloads:
        bodies = workload(kind, args.requests, args.prompt_words)
        rows.append(isolated(bench_generate, model, kind, bodies, args))
        rows.append(bench_endpoint(model, ct2_dir, "iteration-level", kind, bodies, args))
        if "static" not in args.skip:
            rows.append(bench_endpoint(model, ct2_dir, "static batching", kind, bodies, args, batching="static"))
        if "one-at-a-time" not in args.skip:
            few = bodies[: max(args.clients, args.requests // 3)]
            rows.append(bench_endpoint(model, ct2_dir, "one-at-a-time", kind, few, args, batching="static",
                                       max_batch_size=1))
        if ct2_dir is not None:
            rows.append(isolated(bench_ct2_inprocess, model, ct2_dir, kind, bodies, args))
            rows.append(bench_endpoint(model, ct2_dir, "ct2 endpoint", kind, bodies, args, backend="ctranslate2",
                                       batching="static"))

    print()
    header = (f"{'workload':9s} {'mode':20s} {'reqs':>5s} {'err':>4s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s}"
              f"   {'x tput':>7s} {'x p50':>6s} {'x p99':>6s}")
    print(header + "   (x = ratio to in-process generate of the same workload)")
    print("-" * len(header))
    for r in rows:
        base = next(b for b in rows if b["workload"] == r["workload"] and b["mode"] == "in-process generate")
        print(f"{r['workload']:9s} {r['mode']:20s} {r['requests']:5d} {r['errors']:4d} {r['throughput']:7.2f} "
              f"{r['p50_ms']:8.0f} {r['p99_ms']:8.0f}   {r['throughput'] / base['throughput']:7.2f} "
              f"{r['p50_ms'] / base['p50_ms']:6.2f} {r['p99_ms'] / base['p99_ms']:6.2f}")

    def find(kind, mode):
        return next((r for r in rows if r["workload"] == kind and r["mode"] == mode), None)

    print()
    for kind in args.workloads:
        gen, it, st = find(kind, "in-process generate"), find(kind, "iteration-level"), find(kind, "static batching")
        print(f"ratio  {kind}: endpoint (iteration-level, {args.clients} clients) / in-process generate = "
              f"{it['throughput'] / gen['throughput']:.2f}" + ("  (target >= 0.9)" if kind == "uniform" else ""))
        if st:
            print(f"ratio  {kind}: iteration-level / static batching: throughput {it['throughput'] / st['throughput']:.2f}"
                  f", p99 {it['p99_ms'] / st['p99_ms']:.2f}" + ("  (target >= 1.5, p99 < 1)" if kind == "mixed" else ""))
        c_in, c_ep = find(kind, "ct2 in-process"), find(kind, "ct2 endpoint")
        if c_in and c_ep:
            print(f"ratio  {kind}: ct2 endpoint / ct2 in-process = {c_ep['throughput'] / c_in['throughput']:.2f}"
                  "  (target >= 0.9)")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
