"""Serving benchmark: the local endpoint, dynamic batching vs one request at a time, vs CTranslate2.

Builds a FLAN-T5-small-shaped model with random weights (d_model 512, d_ff 1024, d_kv 64,
6 heads, 8+8 layers, vocab 32128, gated-gelu, untied lm_head config) and a word-level
tokenizer trained offline, converts it once to CTranslate2, then for each backend
(transformers, ctranslate2) starts ``python -m llmdeploy.handlers.endpoint`` on
127.0.0.1 twice (max batch size 32 = dynamic batching, and 1 = one at a time) and drives
it with 1, 8 and 32 concurrent HTTP clients. Every request generates exactly
``--new-tokens`` tokens (min_new_tokens = max_new_tokens). As a reference it also runs
CTranslate2's ``translate_batch`` in-process (no HTTP) on the same converted model and
batch of 32.

    python benchmarks/bench_serve.py                 # ~2-3 minutes on 2 CPU cores
    python benchmarks/bench_serve.py --requests 32 --new-tokens 8 --backends transformers

Prints a table and two ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VOCAB = 32128


def build_model(path: Path) -> Path:
    """FLAN-T5-small's shape, random weights, tokenizer trained offline with `tokenizers`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

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
    config = T5Config(vocab_size=VOCAB, d_model=512, d_ff=1024, d_kv=64, num_heads=6, num_layers=8,
                      num_decoder_layers=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, n_positions=512)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
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
    def __init__(self, model: Path, *, backend: str, max_batch_size: int, delay_ms: float, ct2_dir: Path,
                 threads: int, omp_wait_policy: str):
        self.args = [sys.executable, "-m", "llmdeploy.handlers.endpoint", "--model", str(model),
                     "--host", "127.0.0.1", "--port", "0", "--backend", backend, "--device", "cpu",
                     "--max-batch-size", str(max_batch_size), "--max-batch-delay-ms", str(delay_ms),
                     "--ct2-dir", str(ct2_dir), "--max-new-tokens", "512", "--log-level", "WARNING",
                     "--request-timeout", "600"]
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


def bench_endpoint(model: Path, ct2_dir: Path, backend: str, batched: bool, args) -> list[dict]:
    rows = []
    with Server(model, backend=backend, max_batch_size=32 if batched else 1, delay_ms=args.max_batch_delay_ms,
                ct2_dir=ct2_dir, threads=args.threads, omp_wait_policy=args.omp_wait_policy) as server:
        url = server.url + "/invocations"
        params = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
        warm = [{"inputs": p, "parameters": params} for p in prompts(4, args.prompt_words)]
        asyncio.run(drive(url, warm, 4))
        for clients in args.clients:
            n = args.requests if clients > 1 else max(4, args.requests // 4)
            if not batched and clients > 1:
                n = max(clients, args.requests // 2)  # one at a time is slow; keep the run bounded
            n = max(n, clients)
            bodies = [{"inputs": p, "parameters": params} for p in prompts(n, args.prompt_words)]
            elapsed, lat, errors = asyncio.run(drive(url, bodies, clients))
            rows.append({"backend": backend, "mode": "batched" if batched else "one-at-a-time",
                         "clients": clients, "requests": n, "errors": errors,
                         "throughput": n / elapsed, "p50_ms": 1000 * percentile(lat, 50),
                         "p99_ms": 1000 * percentile(lat, 99)})
            print(f"  {backend:12s} {rows[-1]['mode']:14s} clients={clients:<3d} "
                  f"{rows[-1]['throughput']:7.2f} req/s  p50 {rows[-1]['p50_ms']:7.0f} ms", flush=True)
    return rows


def bench_ct2_inprocess(model: Path, ct2_dir: Path, args) -> dict:
    """CTranslate2's own translate_batch on the same converted model and batch of 32 (no HTTP)."""
    import ctranslate2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", inter_threads=1, intra_threads=args.threads)
    batch = 32
    texts = prompts(max(batch, args.requests), args.prompt_words)
    source = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]
    kwargs = dict(max_decoding_length=args.new_tokens, min_decoding_length=args.new_tokens, beam_size=1)
    translator.translate_batch(source[:4], **kwargs)  # warm-up
    start = time.perf_counter()
    lat = []
    for i in range(0, len(source), batch):
        t0 = time.perf_counter()
        translator.translate_batch(source[i:i + batch], **kwargs)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return {"backend": "ctranslate2 (in-process)", "mode": "translate_batch(32)", "clients": "-",
            "requests": len(source), "errors": 0, "throughput": len(source) / elapsed,
            "p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per run at 8 and 32 clients")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request (min = max)")
    parser.add_argument("--prompt-words", type=int, default=24)
    parser.add_argument("--max-batch-delay-ms", type=float, default=20.0)
    parser.add_argument("--backends", nargs="+", default=["transformers", "ctranslate2"],
                        choices=["transformers", "ctranslate2"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="passive",
                        help="OpenMP idle threads sleep (passive) or spin (active) in the servers; spinning is "
                             "faster on an idle machine and many times slower when other processes share the cores")
    parser.add_argument("--model-dir", type=Path, help="reuse/build the random model here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)

    if args.omp_wait_policy != "default":  # before torch/ctranslate2 load OpenMP (in-process reference too)
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = build_model(args.model_dir or work / "flan-t5-small-random")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llmdeploy.handlers.seq2seq import convert_to_ctranslate2

    ct2_dir = convert_to_ctranslate2(str(model), work / "ct2")
    print(f"model: FLAN-T5-small shape, random weights, {args.new_tokens} new tokens/request, "
          f"{args.prompt_words}-word prompts, {args.threads} CPU threads, OMP_WAIT_POLICY={args.omp_wait_policy}",
          flush=True)

    rows = []
    for backend in args.backends:
        for batched in (True, False):
            rows += bench_endpoint(model, ct2_dir, backend, batched, args)
    reference = bench_ct2_inprocess(model, ct2_dir, args)
    rows.append(reference)

    print()
    header = f"{'backend':26s} {'mode':20s} {'clients':>7s} {'reqs':>5s} {'err':>4s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:26s} {r['mode']:20s} {str(r['clients']):>7s} {r['requests']:5d} {r['errors']:4d} "
              f"{r['throughput']:8.2f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f}")

    def find(backend, mode, clients):
        return next((r for r in rows if r["backend"] == backend and r["mode"] == mode and r["clients"] == clients),
                    None)

    print()
    top = max(args.clients)
    for backend in args.backends:
        b, o = find(backend, "batched", top), find(backend, "one-at-a-time", top)
        if b and o:
            print(f"ratio  {backend}: batched / one-at-a-time at {top} clients = "
                  f"{b['throughput'] / o['throughput']:.1f}x  (target >= 8x)")
    best = max((r for r in rows if r["mode"] == "batched" and r["clients"] == top), key=lambda r: r["throughput"])
    print(f"ratio  best endpoint backend ({best['backend']}, batched, {top} clients) / CTranslate2 in-process "
          f"translate_batch(32) = {best['throughput'] / reference['throughput']:.2f}  (target >= 1.0)")
    tf = find("transformers", "batched", top)
    ct = find("ctranslate2", "batched", top)
    if tf and ct:
        print(f"ratio  transformers / ctranslate2 behind the same endpoint (batched, {top} clients) = "
              f"{tf['throughput'] / ct['throughput']:.2f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
