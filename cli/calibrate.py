"""`llmdeploy calibrate`: run the real handler on this machine, measure, fit the speed model, write a calibration.

The handler is driven through its public service API (``Seq2SeqService.initialize`` with
serving.properties-style options, then ``predict_json`` with SageMaker-style request bodies), so what is
timed is what a container runs: tokenising, one padded ``generate`` per batch, decoding. torch and
transformers are imported here only, inside the functions that need them; ``plan`` and ``estimate``
read the JSON this writes without them.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmdeploy import checks
from llmdeploy.cli import options as opt
from llmdeploy.cli.render import table
from llmdeploy.handlers.serving_config import DEFAULT_MAX_BATCH_SIZE

if TYPE_CHECKING:  # pragma: no cover - torch and transformers load with these, inside load_probe only
    from llmdeploy.handlers.lmi_service import Seq2SeqService
    from llmdeploy.handlers.precision import DeviceInfo

# The batches plan sizes capacity with (llmdeploy.plan._capacity): powers of two up to the handler's batch.
DEFAULT_BATCHES = tuple(1 << k for k in range(DEFAULT_MAX_BATCH_SIZE.bit_length()))
CPU_BATCH_CEILING = 32  # bounded so a CPU run stays in minutes
SLOW_BATCH_S = 90.0  # a batch whose single run takes longer than this is the last one measured


# -- measuring (torch lives below this line, imported lazily) -----------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak RSS since the process started or since the last ``reset_peak_rss``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0: writing 5 to clear_refs resets VmHWM). False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class Probe:
    """The real handler, loaded on one device, with prompts of an exact token length."""

    service: Seq2SeqService
    device: DeviceInfo
    dtype: str  # fp32 | fp16 | bf16 | int8
    input_tokens: int
    prompt: str
    baseline_bytes: int  # RSS (CPU) before the model was loaded
    clock: str = "wall"  # "wall", or "cpu": this process's CPU time (one thread: wall time on an idle core)

    @property
    def is_cuda(self) -> bool:
        return self.device.kind == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.device.index)

    def reset_peak(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device.index)
        else:
            reset_peak_rss()

    def peak_bytes(self) -> int:
        """Peak memory of the last window: PyTorch's peak allocation on a GPU, RSS above the import baseline on CPU."""
        if self.is_cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self.device.index))
        return peak_rss_bytes() - self.baseline_bytes

    def run(self, batch: int, new_tokens: int) -> float:
        """Seconds for one batch of ``batch`` requests generating exactly ``new_tokens`` tokens each."""
        body = {"inputs": self.prompt, "parameters": {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}}
        now = time.process_time if self.clock == "cpu" else time.perf_counter
        self.sync()
        start = now()
        answers = self.service.predict_json([body] * batch)
        self.sync()
        elapsed = now() - start
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed:
            from llmdeploy.errors import LlmdeployError

            raise LlmdeployError(f"the handler failed at batch {batch}: {failed[0]}")
        return elapsed


def exact_prompt(tokenizer, tokens: int) -> tuple[str, int]:
    """Text the tokenizer turns into exactly ``tokens`` ids (special tokens included), or the closest it gets.

    Words come from English text when the tokenizer knows them, else from its own vocabulary (a word-level
    tokenizer trained on other words would map English to one unknown token each).
    """
    special = len(tokenizer("")["input_ids"])
    english = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the", "committee",
               "reviews", "the", "quarterly", "report", "and", "the", "engineers", "measure", "how", "long", "each",
               "answer", "takes", "to", "generate", "on", "this", "machine"]
    unk = getattr(tokenizer, "unk_token_id", None)
    known = [w for w in english if unk is None or unk not in tokenizer(w, add_special_tokens=False)["input_ids"]]
    if len(known) < len(english) // 2:
        specials = set(getattr(tokenizer, "all_special_tokens", ()))
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        known = [w for w, _ in vocab if w not in specials and w.isalnum()][:2000] or english
    words: list[str] = []
    best_text, best_count = "", special
    for _ in range(4 * tokens + 8):  # each word adds at least one token; stop as soon as the count is exact
        text = " ".join(words)
        count = len(tokenizer(text)["input_ids"]) if words else special
        if abs(count - tokens) < abs(best_count - tokens) or not best_text:
            best_text, best_count = text, count
        if count >= tokens:
            break
        words.append(known[len(words) % len(known)])
    return best_text, best_count


def load_probe(model_dir: str, device: str, input_tokens: int, *, threads: int | None = None, clock: str = "wall") -> Probe:
    """Load the handler on ``device`` ("cpu", "cuda", "cuda:N"); UsageError with one line when CUDA is absent.

    ``clock="cpu"`` times with this process's CPU time, which other jobs on a shared host cannot inflate; it
    needs one thread (CPU time sums threads) and the CPU (a GPU works while the CPU waits).
    """
    from llmdeploy.errors import UsageError

    if clock == "cpu" and (device != "cpu" or threads != 1):
        raise UsageError("--clock cpu needs --device cpu and --threads 1 (CPU time adds up over threads, and a GPU's "
                         "work is not CPU time).", hint="Pass --device cpu --threads 1, or --clock wall.")
    if clock == "cpu":
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # keep tokenising on this thread too
    import torch  # torch and transformers are imported before the baseline: their own memory is not the model's
    import transformers  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    from llmdeploy.handlers.lmi_service import Seq2SeqService
    from llmdeploy.handlers.precision import detect_device
    from llmdeploy.handlers.serving_config import HandlerError

    try:
        info = detect_device(device)
    except HandlerError:
        raise UsageError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__} sees no GPU).",
                         hint="Use --device cpu here, or run calibrate on the GPU host.") from None
    import gc

    gc.collect()
    baseline = rss_bytes()
    if info.kind == "cpu":
        reset_peak_rss()  # the peak window opens here: loading counts, imports do not
    service = Seq2SeqService()
    props = {"option.model_id": str(model_dir), "option.device": info.torch_device, "option.max_new_tokens": "4096"}
    try:
        service.initialize(props)
    except HandlerError as exc:
        raise UsageError(f"the handler cannot load {model_dir}: {exc}.", hint="Point --model at a save_pretrained() folder.") from None
    engine = service.engine
    if input_tokens > engine.max_input_tokens:
        raise UsageError(f"--input-tokens {input_tokens} is longer than the model's context of {engine.max_input_tokens} tokens.",
                         hint=f"Pass --input-tokens {engine.max_input_tokens} or less.")
    prompt, actual = exact_prompt(engine.tokenizer, input_tokens)
    dtype = "int8" if engine.precision.load_in_8bit else {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[engine.precision.dtype]
    return Probe(service, info, dtype, actual, prompt, baseline, clock)


def measure_bandwidth(probe: Probe, repeats: int = 5) -> float:
    """GB/s of streaming a matrix bigger than any cache through a matrix-vector product (what decoding does)."""
    import torch

    now = time.process_time if probe.clock == "cpu" else time.perf_counter
    dev = probe.device.torch_device
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float16}[probe.dtype]
    side = 8192 if not probe.is_cuda else 16384
    w = torch.randn(side, side, device=dev).to(dtype)
    x = torch.randn(1, side, device=dev).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            probe.sync()
            start = now()
            (x @ w).sum().item()
            probe.sync()
            best = min(best, now() - start)
    return w.numel() * w.element_size() / best / 1e9


def measure_batch(probe: Probe, batch: int, new_tokens: int, repeats: int) -> tuple[float, float, int, float]:
    """(prefill s, mean step s, peak bytes, seconds spent) for one batch size: the fastest of ``repeats`` runs.

    The minimum is taken because other work on the machine only ever adds time.
    """
    spent = time.perf_counter()
    firsts: list[float] = []
    fulls: list[float] = []
    peak = 0
    # Up to three extra rounds when noise makes the long run look no longer than the 1-token run.
    for round_ in range(repeats + 3):
        if round_ >= repeats and min(fulls) > min(firsts):
            break
        firsts.append(probe.run(batch, 1))
        probe.reset_peak()
        fulls.append(probe.run(batch, new_tokens))
        peak = max(peak, probe.peak_bytes())
    first, full = min(firsts), min(fulls)
    if full <= first:
        from llmdeploy.errors import LlmdeployError

        raise LlmdeployError(f"timings at batch {batch} are too noisy: {new_tokens} tokens took no longer than 1 "
                             f"({full:.3f} s vs {first:.3f} s).", hint="Pass more --new-tokens or --repeats, or on a shared "
                             "CPU --threads 1 --clock cpu.")
    return first, (full - first) / (new_tokens - 1), peak, time.perf_counter() - spent


def host_description(probe: Probe) -> str:
    import torch

    if probe.is_cuda:
        return f"{probe.device.name} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    threads = torch.get_num_threads()
    timed = ", timed by CPU time" if probe.clock == "cpu" else ""
    return f"{cpu}, {threads} thread{'s' if threads != 1 else ''}{timed} (torch {torch.__version__})"


# -- the command ----------------------------------------------------------------------------------------


@click.command(
    epilog="""\b
Examples:
  llmdeploy calibrate --model ./flan-t5-small                  # CPU, batches 1..32, writes the user cache
  llmdeploy calibrate --model ./flan-t5-small --json --out cal.json
  llmdeploy calibrate --model ./flan-t5-xl --device cuda       # on the GPU host
  llmdeploy plan --calibration cal.json                        # use it explicitly
"""
)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder written by save_pretrained(): config.json, safetensors weights, tokenizer files.")
@click.option("--device", type=opt.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to run the handler (cuda: the first GPU).")
@click.option("--batch", "batches", type=opt.Whole(1, 256), multiple=True,
              help=f"Batch size to measure; repeatable [default: {', '.join(map(str, DEFAULT_BATCHES))}].")
@click.option("--input-tokens", type=opt.Whole(2, checks.MAX_TOKENS), default=256, show_default=True, help="Prompt length.")
@click.option("--new-tokens", type=opt.Whole(3, 512), default=17, show_default=True,
              help="Tokens generated per timed run (the step time is the difference to a 1-token run).")
@click.option("--repeats", type=opt.Whole(1, 20), default=2, show_default=True,
              help="Runs per batch size; the fastest counts.")
@click.option("--threads", type=opt.Whole(1, 512), default=None,
              help="torch threads on CPU [default: torch's choice, one per core].")
@click.option("--clock", type=opt.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="wall: elapsed time. cpu: this process's CPU time, for a CPU shared with other jobs (needs --threads 1).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the calibration here instead of the user cache (checked before anything is measured).")
@opt.json_option
def calibrate(model_dir, device, batches, input_tokens, new_tokens, repeats, threads, clock, out, as_json):
    """Measure the real handler on this machine and write a speed calibration that estimate and plan use.

    Runs the LMI handler (handlers/) on the --model folder at each batch size, timing the first token (prefill) and each
    further token, with peak memory; fits the per-layer step overhead and the effective FLOP/s of the speed
    model to them (the bandwidth is measured on its own), and writes the result atomically to the user cache
    (--out FILE to choose). estimate and plan then use it for this device: the CPU calibration is what
    SageMaker serverless is sized with; a GPU one replaces the bundled or roofline figures for that GPU.
    """
    from llmdeploy import calibration as cal_mod
    from llmdeploy.errors import UsageError
    from llmdeploy.fileio import check_output_path

    # The output path first (fileio): a bad one is refused before minutes of measuring, not after.
    if out is not None:
        out = check_output_path(out, "calibration file (--out)")
    elif device == "cpu":
        check_output_path(cal_mod.default_path(cal_mod.CPU), "calibration file")
    m = _check_model(model_dir)
    batches = tuple(sorted(set(batches))) or DEFAULT_BATCHES
    if device == "cpu" and max(batches) > CPU_BATCH_CEILING:
        raise UsageError(f"--batch {max(batches)} is above the CPU ceiling of {CPU_BATCH_CEILING}.",
                         hint=f"Pass batch sizes up to {CPU_BATCH_CEILING}, or use --device cuda.")
    progress = (lambda msg: click.echo(msg, err=True)) if not as_json else (lambda msg: None)

    probe = load_probe(str(model_dir), device, input_tokens, threads=threads, clock=clock)
    target = _target(probe)
    destination = out or check_output_path(cal_mod.default_path(target), "calibration file")
    progress(f"Loaded {model_dir} on {probe.device.name} ({probe.dtype}); prompts of {probe.input_tokens} tokens.")
    probe.run(1, 3)  # warm-up: first-call allocations and lazy initialisation are not what a server pays per request
    bandwidth = measure_bandwidth(probe)
    progress(f"Streaming bandwidth: {bandwidth:.1f} GB/s.")
    points = _measure(probe, batches, new_tokens, repeats, progress)
    result = _fitted(m, probe, points, target=target, destination=destination, bandwidth=bandwidth, new_tokens=new_tokens)
    path = cal_mod.write(result, destination)  # atomically (fileio.write_atomic)
    rows = _predicted_vs_measured(m, probe, result, points, new_tokens)
    if as_json:
        opt.emit_json({"calibration": result.to_dict(), "path": str(path), "new_tokens": new_tokens, "points": rows})
        return
    _print_calibration(result, rows, new_tokens)
    click.echo(f"\nWrote {path}. estimate and plan use it for {target}"
               + ("" if out is None else f" when passed --calibration {path}") + ".")


def _check_model(model_dir: Path):
    """The model config of an encoder-decoder folder written by save_pretrained(); UsageError otherwise."""
    from llmdeploy.errors import UsageError
    from llmdeploy.models import load_model_config

    if not (model_dir / "config.json").is_file():
        raise UsageError(f"--model {str(model_dir)!r} has no config.json.", hint="Point at a folder written by save_pretrained().")
    m = load_model_config(str(model_dir))
    if not m.encoder_decoder:
        raise UsageError(f"--model {str(model_dir)!r} is a {m.model_type} decoder-only model; the handler serves encoder-decoder "
                         "(FLAN-T5) models.", hint="Calibrate with a T5-family folder.")
    return m


def _target(probe) -> str:
    """The device the calibration is for: the catalog GPU the CUDA device is, or the CPU."""
    from llmdeploy import calibration as cal_mod
    from llmdeploy.catalog import load_catalog

    if not probe.is_cuda:
        return cal_mod.CPU
    import torch

    return cal_mod.gpu_from_device(probe.device.name, torch.cuda.get_device_properties(probe.device.index).total_memory,
                                   load_catalog().gpus)


def _measure(probe, batches: tuple[int, ...], new_tokens: int, repeats: int, progress) -> list:
    """One point per batch size (first token, each further token, peak memory), stopping early when runs get slow."""
    from llmdeploy import calibration as cal_mod

    points = []
    for batch in batches:
        prefill, step, peak, spent = measure_batch(probe, batch, new_tokens, repeats)
        points.append(cal_mod.Point(batch, prefill, step, peak))
        progress(f"batch {batch:>3}: first token {prefill * 1e3:,.0f} ms, then {step * 1e3:,.1f} ms per token ({spent:.0f} s)")
        if spent / repeats > SLOW_BATCH_S and batch != batches[-1]:
            progress(f"batch {batch} took {spent / repeats:.0f} s per run: stopping here.")
            break
    return points


def _fitted(m, probe, points: list, *, target: str, destination: Path, bandwidth: float, new_tokens: int):
    """The speed model's constants fitted to the points: the Calibration to write."""
    from llmdeploy import calibration as cal_mod

    decode_flops, overhead, prefill_flops, prefill_overhead = cal_mod.fit(
        m, probe.dtype, points, input_tokens=probe.input_tokens, bandwidth_gbs=bandwidth, output_position=1 + new_tokens / 2)
    note = ""
    if probe.is_cuda:
        from llmdeploy.assumptions import load_assumptions
        from llmdeploy.catalog import load_catalog

        decode_flops, prefill_flops, note = cal_mod.fill_unidentified(
            decode_flops, prefill_flops, load_catalog().gpus[target], probe.dtype, load_assumptions())
    today = dt.date.today().isoformat()
    host = host_description(probe)
    return cal_mod.Calibration(
        device=target, origin="measured",
        name=f"llmdeploy calibrate on {host}, {m.name} ({probe.dtype}), {today}",
        source=str(destination), date=today,
        bandwidth_gbs=bandwidth, decode_flops=decode_flops, prefill_flops=prefill_flops,
        step_overhead_s_per_layer=overhead, prefill_overhead_s=prefill_overhead, dtype=probe.dtype, model=m.name,
        host=host, input_tokens=probe.input_tokens, points=tuple(points), note=note,
    )


def _predicted_vs_measured(m, probe, result, points: list, new_tokens: int) -> list[dict]:
    """Each point as measured and as the fitted calibration predicts it (latency and peak memory)."""
    from llmdeploy import sizing

    rows = []
    for p in points:
        lat = sizing.latency(m, probe.dtype, result, batch=p.batch, input_tokens=probe.input_tokens, output_tokens=new_tokens)
        mem = sizing.inference_memory(m, probe.dtype, batch=p.batch, input_tokens=probe.input_tokens, output_tokens=new_tokens,
                                      device="gpu" if probe.is_cuda else "cpu")
        measured_total = p.prefill_s + p.step_s * (new_tokens - 1)
        rows.append({
            "batch": p.batch,
            "measured": {"prefill_s": p.prefill_s, "step_s": p.step_s, "total_s": measured_total, "peak_bytes": p.peak_bytes},
            "predicted": {"prefill_s": lat.prefill_s, "step_s": lat.decode_step_s, "total_s": lat.total_s,
                          "peak_bytes": mem.before_buffer},
            "predicted_over_measured": {"total_s": lat.total_s / measured_total if measured_total else None,
                                        "peak_bytes": mem.before_buffer / p.peak_bytes if p.peak_bytes else None},
        })
    return rows


def _print_calibration(result, rows: list[dict], new_tokens: int) -> None:
    click.echo(f"Calibration for {result.device}: {result.name}")
    click.echo(f"  bandwidth {result.bandwidth_gbs:.1f} GB/s, decode {result.decode_flops / 1e9:,.1f} GFLOP/s, prefill "
               f"{result.prefill_flops / 1e9:,.1f} GFLOP/s, step overhead {result.step_overhead_s_per_layer * 1e3:.3f} ms per "
               f"layer, prefill overhead {result.prefill_overhead_s * 1e3:.1f} ms\n")
    click.echo(table(
        ["batch", "first token", "per token", f"{new_tokens} tokens", "predicted", "pred/meas", "peak memory", "predicted",
         "pred/meas"],
        [[r["batch"], f"{r['measured']['prefill_s'] * 1e3:,.0f} ms", f"{r['measured']['step_s'] * 1e3:,.1f} ms",
          f"{r['measured']['total_s']:.2f} s", f"{r['predicted']['total_s']:.2f} s", f"{r['predicted_over_measured']['total_s']:.2f}",
          _mib(r["measured"]["peak_bytes"]), _mib(r["predicted"]["peak_bytes"]),
          "-" if r["predicted_over_measured"]["peak_bytes"] is None else f"{r['predicted_over_measured']['peak_bytes']:.2f}"]
         for r in rows],
        right=[0, 1, 2, 3, 4, 5, 6, 7, 8],
    ))


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024**2:,.0f} MiB"
