"""How much memory and time a model needs, from its config alone.

Every function is pure: a ``ModelConfig`` and plain numbers in, frozen
dataclasses out. Bytes are bytes (not GiB) until the CLI renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Gpu, Instance
from llmdeploy.errors import ConfigError, UnknownChoiceError, UsageError
from llmdeploy.models import CLOSED_FORM_FAMILIES, ModelConfig

GIB = 1024**3
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
LOADING_STRATEGIES = ("safetensors", "in-memory", "streaming")  # the first is the handler's path and the default
DEVICES = ("gpu", "cpu")
FINETUNE_PRECISIONS = ("fp32", "bf16-mixed")


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise UnknownChoiceError("dtype", dtype, DTYPE_BYTES, fix="Pass --dtype with one of these.") from None


# -- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterCount:
    embedding: int
    encoder: int
    decoder: int  # decoder blocks and final norm (all blocks for decoder-only models)
    lm_head: int  # 0 when tied to the embedding
    other: int  # learned positions etc.
    experts_inactive: int = 0  # MoE: routed-expert parameters a token does not use
    method: str = "closed form"  # how they were counted
    from_hub: bool = False  # the Hub's count stands in for one of ours

    @property
    def total(self) -> int:
        return self.embedding + self.encoder + self.decoder + self.lm_head + self.other

    @property
    def active(self) -> int:
        """Parameters one token uses: all of them for a dense model, the routed experts' share for MoE."""
        return self.total - self.experts_inactive

    @property
    def read_per_decode_step(self) -> int:
        """Parameters every generated token touches: the decoder, its head, one embedding row."""
        head = self.lm_head or self.embedding
        return self.decoder + head


def parameter_count(m: ModelConfig) -> ParameterCount:
    """Exact parameter count of the checkpoint a config describes (untied heads counted).

    Closed forms for ``CLOSED_FORM_FAMILIES``; any other architecture carries the
    count ``llmdeploy.models`` made when it read the config (meta device or Hub).
    """
    if m.model_type not in CLOSED_FORM_FAMILIES:
        c = m.counted
        if c is None:  # from_dict counts every other family or refuses it; a hand-built config may not have
            raise ConfigError(f"no parameter count for {m.name} (model_type {m.model_type!r}); load it with llmdeploy.models.")
        return ParameterCount(c.embedding, c.encoder, c.decoder, c.lm_head, c.other, c.experts_inactive, c.method, c.from_hub)
    d, v = m.d_model, m.vocab_size
    mlp = (3 if m.gated_mlp else 2) * d * m.d_ff
    if m.model_type == "t5":
        attn = 4 * d * m.attention_inner  # q, k, v, o; T5 has no biases
        rel_bias = m.relative_attention_buckets * m.n_heads  # first layer of each stack only
        encoder = m.n_encoder_layers * (attn + mlp + 2 * d) + rel_bias + d
        decoder = m.n_layers * (2 * attn + mlp + 3 * d) + rel_bias + d
        return ParameterCount(v * d, encoder, decoder, 0 if m.tied_embeddings else v * d, 0)
    if m.model_type == "gpt2":
        attn = d * 3 * d + 3 * d + d * d + d  # fused qkv and projection, with biases
        mlp_b = 2 * d * m.d_ff + m.d_ff + d
        per_layer = attn + mlp_b + 4 * d  # two LayerNorms with bias
        return ParameterCount(v * d, 0, m.n_layers * per_layer + 2 * d, 0 if m.tied_embeddings else v * d, m.max_positions * d)
    # Llama-style decoder: grouped-query attention, gated MLP, RMSNorm without bias.
    attn = d * m.attention_inner * 2 + d * m.kv_inner * 2
    if m.attention_bias:
        attn += m.attention_inner + 2 * m.kv_inner
    per_layer = attn + mlp + 2 * d
    return ParameterCount(v * d, 0, m.n_layers * per_layer + d, 0 if m.tied_embeddings else v * d, 0)


def parameter_report(m: ModelConfig) -> dict:
    """Our count beside the Hub's: which one sizing uses and how far apart they are (``estimate --json``)."""
    p = parameter_count(m)
    hub = m.hub
    hub_total = hub.parameters_total if hub else None
    difference = hub_total - p.total if hub_total and not p.from_hub else None
    return {
        "used": "hub" if p.from_hub else "llmdeploy",
        "method": p.method,
        "llmdeploy": None if p.from_hub else p.total,
        "hub": hub_total,
        "hub_by_dtype": dict(hub.parameters_by_dtype) if hub else {},
        "hub_source": hub.source if hub else None,
        "hub_kind": None if hub is None else "published" if hub.recorded else "hub",  # a bundled record, or fetched
        "difference": difference,  # the Hub's count minus ours; None when there is nothing to compare
        "total": p.total,
        "active": p.active,
        "experts": m.n_experts,
        "experts_per_token": m.n_experts_per_token,
    }


def weights_bytes(m: ModelConfig, dtype: str) -> int:
    return math.ceil(parameter_count(m).total * dtype_bytes(dtype))


# -- inference memory ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceMemory:
    weights: int
    kv_cache: int
    activations: int
    buffer_fraction: float
    workspace: int = 0  # the framework's own memory on CPU (see assumptions.toml); 0 on a GPU

    @property
    def before_buffer(self) -> int:
        """Weights + KV cache + activations (+ workspace): what a measured peak is compared with."""
        return self.weights + self.kv_cache + self.activations + self.workspace

    @property
    def buffer(self) -> int:
        return math.ceil(self.before_buffer * self.buffer_fraction)

    @property
    def total(self) -> int:
        return self.before_buffer + self.buffer

    def per_gpu(self, tensor_parallel: int) -> int:
        """Weights and KV cache split across ``tensor_parallel`` GPUs; activations are not."""
        split = (self.weights + self.kv_cache) / tensor_parallel + self.activations + self.workspace
        return math.ceil(split * (1 + self.buffer_fraction))


def _compute_dtype(dtype: str) -> str:
    """Activations and KV are held in the compute dtype: fp16 for int8/int4 weights."""
    return dtype if dtype in ("fp32", "fp16", "bf16") else "fp16"


def kv_cache_bytes(m: ModelConfig, batch: int, input_tokens: int, output_tokens: int, dtype: str) -> int:
    """Keys and values kept for generation, in the compute dtype.

    Decoder-only: every layer keeps K and V for the prompt and the generated tokens. Encoder-decoder (T5):
    each decoder layer keeps self-attention K/V over the generated tokens plus cross-attention K/V over
    the encoded input, computed once (see ``cross_attention_kv_params``): the same count of tokens.
    """
    per = dtype_bytes(_compute_dtype(dtype))
    tokens = input_tokens + output_tokens
    return math.ceil(batch * m.n_layers * 2 * m.kv_inner * tokens * per)


def activation_bytes(m: ModelConfig, batch: int, input_tokens: int, dtype: str) -> int:
    """Largest transient working set of a forward pass over the prompt, plus the logits of a step.

    One layer's worth is alive at a time: the residual stream, its normalised copy and the layer output
    (3 × tokens × d_model), plus the larger of the attention block (q, k, v and the score matrix:
    three score-sized tensors for T5, whose eager attention materialises scores, position bias and
    probabilities; one for models whose SDPA kernels may fall back to materialising them) and the MLP
    (3 × tokens × d_ff for a gated MLP: gate, up and their product; 2 × otherwise). The step's logits
    are kept in fp32 twice (raw and processed) for the batch. Checked against peak RSS of generation on
    CPU for flan-t5-small, gpt2 and qwen2.5-0.5b shapes (benchmarks/bench_calibration.py).
    """
    per = dtype_bytes(_compute_dtype(dtype))
    tokens = batch * input_tokens
    residual = 3 * tokens * m.d_model
    score_copies = 3 if m.model_type == "t5" else 1
    attention = tokens * (m.attention_inner + 2 * m.kv_inner) + score_copies * batch * m.n_heads * input_tokens * input_tokens
    mlp = tokens * m.d_ff * (3 if m.gated_mlp else 2)
    logits = 2 * batch * m.vocab_size * 4
    return math.ceil((residual + max(attention, mlp)) * per + logits)


def inference_memory(
    m: ModelConfig, dtype: str, *, batch: int = 1, input_tokens: int = 512, output_tokens: int = 128, buffer: float | None = None,
    device: str = "gpu", a: Assumptions | None = None,
) -> InferenceMemory:
    """Weights + KV cache + activations (+ on CPU the framework's workspace) + a buffer.

    ``device="cpu"`` adds the memory transformers itself takes on once a model is loaded (measured, see
    assumptions.toml); on a GPU that share is host memory, and the CUDA context is the driver-reported
    memory the usable fraction leaves out.
    """
    if batch < 1 or input_tokens < 1 or output_tokens < 1:
        raise UsageError(f"batch, input and output tokens must be at least 1, got {batch}, {input_tokens}, {output_tokens}.")
    if device not in DEVICES:
        raise UnknownChoiceError("device", device, DEVICES)
    a = a or load_assumptions()
    if buffer is None:
        buffer = a.buffer
    if buffer < 0:
        raise UsageError(f"buffer must not be negative, got {buffer}.", hint="Pass --buffer 0.2 for 20 %.")
    return InferenceMemory(
        weights=weights_bytes(m, dtype),
        kv_cache=kv_cache_bytes(m, batch, input_tokens, output_tokens, dtype),
        activations=activation_bytes(m, batch, input_tokens, dtype),
        buffer_fraction=buffer,
        workspace=int(a.cpu_runtime_mib * 1024**2) if device == "cpu" else 0,
    )


def host_ram_to_load(m: ModelConfig, dtype: str, strategy: str, a: Assumptions | None = None) -> int:
    """Host RAM needed while loading, before the weights reach the GPU.

    ``safetensors`` (the handler's path, the default): ``from_pretrained`` on a safetensors checkpoint
    memory-maps the file and builds the model from it (meta-device init, no random weights first), then
    ``.to(device)`` copies it to the GPU: about one copy of the weights in host RAM at the peak.
    ``in-memory``: a pickled ``.bin`` checkpoint is read whole by ``torch.load`` while the model is built
    too: two copies. ``streaming``: shards are loaded straight to the GPU one at a time
    (``device_map``): one shard at most.
    """
    a = a or load_assumptions()
    weights = weights_bytes(m, dtype)
    overhead = int(a.host_overhead_gib * GIB)
    if strategy == "safetensors":
        return weights + overhead
    if strategy == "in-memory":
        return 2 * weights + overhead
    if strategy == "streaming":
        return min(weights, int(a.streaming_shard_gib * GIB)) + overhead
    raise UnknownChoiceError("loading strategy", strategy, LOADING_STRATEGIES, fix="Pass --loading with one of these.")


def gpu_usable_bytes(gpu: Gpu, a: Assumptions | None = None) -> int:
    """What one process can allocate on ``gpu``: the driver-reported total times the usable fraction."""
    a = a or load_assumptions()
    return int(gpu.reported_bytes * a.gpu_usable_fraction)


@dataclass(frozen=True)
class Fit:
    instance_type: str
    fits: bool
    tensor_parallel: int  # GPUs one copy of the model spans (0 when it does not fit)
    replicas: int  # model copies the instance holds
    gpu_bytes_per_gpu: int
    host_ram_needed: int
    reason: str


def fit_on_instance(mem: InferenceMemory, host_ram: int, inst: Instance, a: Assumptions | None = None, *,
                    dtype: str | None = None) -> Fit:
    """Whether a model fits one GPU of ``inst``, else the tensor-parallel degree it needs, and host RAM; with
    ``dtype``, also whether the GPU computes in it (bf16 needs compute capability 8.0: no T4, no V100)."""
    fit = _fit_memory(mem, host_ram, inst, a or load_assumptions())
    if fit.fits and dtype == "bf16" and inst.gpu is not None and not inst.gpu.supports_bf16:
        return replace(fit, fits=False, reason=f"{inst.gpu.name} has no bf16; use --dtype fp16 or fp32")
    return fit


def _fit_memory(mem: InferenceMemory, host_ram: int, inst: Instance, a: Assumptions) -> Fit:
    ram = int(inst.ram_gib * GIB)
    if inst.gpu is None or inst.gpu_count < 1:
        return Fit(inst.type, False, 0, 0, mem.total, host_ram, f"{inst.type} has no GPU")
    gpu_bytes = gpu_usable_bytes(inst.gpu, a)
    usable = _gib(gpu_bytes)
    tp = 1
    while tp <= inst.gpu_count and mem.per_gpu(tp) > gpu_bytes:
        tp *= 2
    if tp > inst.gpu_count:
        return Fit(
            inst.type, False, 0, 0, mem.per_gpu(inst.gpu_count), host_ram,
            f"needs {_gib(mem.per_gpu(inst.gpu_count))} per GPU even split over all {inst.gpu_count} × "
            f"{inst.gpu.name} ({usable} usable each)",
        )
    if host_ram > ram:
        return Fit(
            inst.type, False, tp, 0, mem.per_gpu(tp), host_ram,
            f"GPU fits but host RAM {inst.ram_gib:g} GiB < {_gib(host_ram)} needed to load",
        )
    replicas = inst.gpu_count // tp
    how = "fits one GPU" if tp == 1 else f"needs tensor parallel degree {tp}"
    return Fit(inst.type, True, tp, replicas, mem.per_gpu(tp), host_ram, f"{how} ({_gib(mem.per_gpu(tp))} of {usable} usable)")


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


# -- fine-tuning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneMemory:
    precision: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    counted: str  # what the figure includes, in words

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def total_bytes(self) -> int:
        return self.total


def finetune_memory(m: ModelConfig, precision: str = "bf16-mixed", *, batch: int = 8, seq_len: int = 512) -> FinetuneMemory:
    """Full fine-tune with Adam (all parameters trained).

    fp32: weights 4 + gradients 4 + Adam moments 8 = 16 bytes/parameter.
    bf16-mixed: bf16 weights 2 + bf16 gradients 2 + fp32 master weights 4 +
    Adam moments 8 = 16 bytes/parameter (ZeRO paper's accounting); activations
    in bf16. Activations per layer follow Korthikanti et al. (2022) without
    recomputation: s·b·h·(34 + 5·a·s/h) bytes in 16-bit, doubled in fp32.
    """
    if precision not in FINETUNE_PRECISIONS:
        raise UnknownChoiceError("fine-tune precision", precision, FINETUNE_PRECISIONS)
    if batch < 1 or seq_len < 1:
        raise UsageError(f"batch and sequence length must be at least 1, got {batch} and {seq_len}.")
    n = parameter_count(m).total
    if precision == "fp32":
        weights, grads, optim, act_scale = 4 * n, 4 * n, 8 * n, 2
    else:
        weights, grads, optim, act_scale = 2 * n + 4 * n, 2 * n, 8 * n, 1
    s, b, h, heads = seq_len, batch, m.d_model, m.n_heads
    per_layer = s * b * h * (34 + 5 * heads * s / h)
    layers = m.n_layers + m.n_encoder_layers
    activations = math.ceil(per_layer * layers * act_scale)
    counted = (
        f"weights, gradients, Adam moments{' and fp32 master weights' if precision != 'fp32' else ''}, "
        f"activations for batch {batch} × {seq_len} tokens without recomputation; no KV cache, no framework overhead"
    )
    return FinetuneMemory(precision, weights, grads, optim, activations, counted)


def gpus_for_finetune(ft: FinetuneMemory, gpu: Gpu, a: Assumptions | None = None) -> int:
    """GPUs needed when model states are sharded across them (ZeRO-3 / FSDP) and activations split by data parallelism."""
    a = a or load_assumptions()
    usable = gpu.memory_gib * GIB * a.finetune_gpu_usable_fraction
    return max(1, math.ceil(ft.total / usable))


# -- speed -----------------------------------------------------------------------------------------
# One decode step costs L·o (per-layer overhead: framework and kernel launches) + bytes / bandwidth +
# FLOPs / FLOP/s; a prefill costs its own overhead + FLOPs / prefill FLOP/s (+ the first decode step for
# an encoder-decoder). The five device numbers come from a Calibration (llmdeploy.calibration): measured,
# published, or the datasheet roofline as a fallback.


@dataclass(frozen=True)
class StepWork:
    bytes: float  # weights and KV cache read
    flops: float


def cross_attention_kv_params(m: ModelConfig) -> int:
    """T5's cross-attention K and V projections: applied once to the encoded input (in the first decode
    step, then cached), so they cost prefill FLOPs, not per-token reads."""
    return m.n_layers * 2 * m.d_model * m.kv_inner if m.encoder_decoder else 0


def decode_step_work(m: ModelConfig, dtype: str, batch: int, input_tokens: int, position: float) -> StepWork:
    """Bytes read and FLOPs of generating token number ``position`` (1-based) for ``batch`` sequences."""
    params = parameter_count(m)
    step_params = params.read_per_decode_step - cross_attention_kv_params(m)
    kv_per = dtype_bytes(_compute_dtype(dtype))
    context = input_tokens + position  # positions attended: prompt (or encoded input) + generated so far
    kv = batch * m.n_layers * 2 * m.kv_inner * context * kv_per
    attention = 4 * batch * m.n_layers * m.attention_inner * context  # q·K and p·V
    return StepWork(step_params * dtype_bytes(dtype) + kv, 2 * step_params * batch + attention)


def prefill_flops(m: ModelConfig, batch: int, input_tokens: int) -> float:
    """FLOPs of the prompt pass: every dense layer over every prompt token, attention over the prompt, and
    for T5 the cross-attention K/V projections of the encoded input."""
    params = parameter_count(m)
    s = input_tokens
    if m.encoder_decoder:
        dense = params.encoder - m.relative_attention_buckets * m.n_heads
        attention = 4 * batch * m.n_encoder_layers * m.attention_inner * s * s
        return 2 * dense * s * batch + attention + 2 * cross_attention_kv_params(m) * s * batch
    dense = params.decoder
    attention = 2 * batch * m.n_layers * m.attention_inner * s * s  # causal: half the score matrix
    return 2 * dense * s * batch + attention + 2 * (params.lm_head or params.embedding) * batch


@dataclass(frozen=True)
class Latency:
    batch: int
    prefill_s: float  # time to the first token: prompt / encoder pass (+ the first decode step)
    decode_step_s: float  # mean time of each further token
    output_tokens: int
    bound: str  # what dominates a decode step: "per-step overhead", "memory bandwidth" or "compute"
    speed_model: str = ""  # the calibration's label

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_step_s * (self.output_tokens - 1)

    @property
    def requests_per_s(self) -> float:
        return self.batch / self.total_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.output_tokens / self.total_s


def latency(m: ModelConfig, dtype: str, cal, *, batch: int, input_tokens: int, output_tokens: int,
            tensor_parallel: int = 1) -> Latency:
    """Time of one batch of requests on the device ``cal`` describes (``tensor_parallel`` of them, ideal scaling)."""
    if batch < 1 or input_tokens < 1 or output_tokens < 1:
        raise UsageError(f"batch, input and output tokens must be at least 1, got {batch}, {input_tokens}, {output_tokens}.")
    bw = cal.bandwidth_gbs * 1e9 * tensor_parallel
    flops = cal.decode_flops * tensor_parallel
    overhead = m.n_layers * cal.step_overhead_s_per_layer

    def step(position: float) -> tuple[float, float, float]:
        work = decode_step_work(m, dtype, batch, input_tokens, position)
        return overhead, work.bytes / bw, work.flops / flops

    prefill_layers = m.n_encoder_layers if m.encoder_decoder else m.n_layers
    prefill_s = (cal.prefill_overhead_s + prefill_layers * cal.step_overhead_s_per_layer
                 + prefill_flops(m, batch, input_tokens) / (cal.prefill_flops * tensor_parallel))
    if m.encoder_decoder:
        prefill_s += sum(step(1))
    # KV reads grow linearly with the position: the mean step is the step at the mean position.
    parts = step(1 + output_tokens / 2)
    bound = ("per-step overhead", "memory bandwidth", "compute")[parts.index(max(parts))]
    return Latency(batch, prefill_s, sum(parts), output_tokens, bound, cal.label())
