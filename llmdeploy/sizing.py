"""How much memory and time a model needs, from its config alone.

Every function is pure: a ``ModelConfig`` and plain numbers in, frozen
dataclasses out. Bytes are bytes (not GiB) until the CLI renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Gpu, Instance
from llmdeploy.errors import ConfigError, UnknownChoiceError, UsageError
from llmdeploy.models import CLOSED_FORM_FAMILIES, ModelConfig

GIB = 1024**3
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
LOADING_STRATEGIES = ("in-memory", "streaming")
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

    @property
    def buffer(self) -> int:
        return math.ceil((self.weights + self.kv_cache + self.activations) * self.buffer_fraction)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.buffer

    def per_gpu(self, tensor_parallel: int) -> int:
        """Weights and KV cache split across ``tensor_parallel`` GPUs; activations are not."""
        split = (self.weights + self.kv_cache) / tensor_parallel + self.activations
        return math.ceil(split * (1 + self.buffer_fraction))


def kv_cache_bytes(m: ModelConfig, batch: int, input_tokens: int, output_tokens: int, dtype: str) -> int:
    """Keys and values kept for generation. KV is held in the compute dtype (fp16 for int8/int4 weights)."""
    kv_dtype = dtype if dtype in ("fp32", "fp16", "bf16") else "fp16"
    per = dtype_bytes(kv_dtype)
    if m.encoder_decoder:
        # Decoder self-attention over generated tokens plus cross-attention over the encoded input.
        tokens = output_tokens + input_tokens
    else:
        tokens = input_tokens + output_tokens
    return math.ceil(batch * m.n_layers * 2 * m.kv_inner * tokens * per)


def activation_bytes(m: ModelConfig, batch: int, input_tokens: int, dtype: str) -> int:
    """Largest transient tensors of a forward pass over the input: attention scores or the MLP."""
    kv_dtype = dtype if dtype in ("fp32", "fp16", "bf16") else "fp16"
    per = dtype_bytes(kv_dtype)
    scores = batch * m.n_heads * input_tokens * input_tokens
    mlp = batch * input_tokens * m.d_ff * (2 if m.gated_mlp else 1)
    return math.ceil(max(scores, mlp) * per + batch * input_tokens * m.d_model * per * 2)


def inference_memory(
    m: ModelConfig, dtype: str, *, batch: int = 1, input_tokens: int = 512, output_tokens: int = 128, buffer: float | None = None
) -> InferenceMemory:
    if batch < 1 or input_tokens < 1 or output_tokens < 1:
        raise UsageError(f"batch, input and output tokens must be at least 1, got {batch}, {input_tokens}, {output_tokens}.")
    if buffer is None:
        buffer = load_assumptions().buffer
    if buffer < 0:
        raise UsageError(f"buffer must not be negative, got {buffer}.", hint="Pass --buffer 0.2 for 20 %.")
    return InferenceMemory(
        weights=weights_bytes(m, dtype),
        kv_cache=kv_cache_bytes(m, batch, input_tokens, output_tokens, dtype),
        activations=activation_bytes(m, batch, input_tokens, dtype),
        buffer_fraction=buffer,
    )


def host_ram_to_load(m: ModelConfig, dtype: str, strategy: str, a: Assumptions | None = None) -> int:
    """Host RAM needed while loading, before the weights reach the GPU.

    ``in-memory``: the whole state dict is read into RAM and the model is built
    there too before moving to the GPU (``torch.load`` of a .bin checkpoint, or
    loading without ``low_cpu_mem_usage``): two copies of the weights.
    ``streaming``: safetensors shards are memory-mapped and moved to the GPU one
    at a time: one shard at most.
    """
    a = a or load_assumptions()
    weights = weights_bytes(m, dtype)
    overhead = int(a.host_overhead_gib * GIB)
    if strategy == "in-memory":
        return 2 * weights + overhead
    if strategy == "streaming":
        return min(weights, int(a.streaming_shard_gib * GIB)) + overhead
    raise UnknownChoiceError("loading strategy", strategy, LOADING_STRATEGIES, fix="Pass --loading with one of these.")


@dataclass(frozen=True)
class Fit:
    instance_type: str
    fits: bool
    tensor_parallel: int  # GPUs one copy of the model spans (0 when it does not fit)
    replicas: int  # model copies the instance holds
    gpu_bytes_per_gpu: int
    host_ram_needed: int
    reason: str


def fit_on_instance(mem: InferenceMemory, host_ram: int, inst: Instance, a: Assumptions | None = None) -> Fit:
    """Whether a model fits one GPU of ``inst``, else the tensor-parallel degree it needs, and host RAM."""
    a = a or load_assumptions()
    ram = int(inst.ram_gib * GIB)
    if inst.gpu is None or inst.gpu_count < 1:
        return Fit(inst.type, False, 0, 0, mem.total, host_ram, f"{inst.type} has no GPU")
    gpu_bytes = int(inst.gpu.memory_gib * GIB * a.gpu_usable_fraction)
    tp = 1
    while tp <= inst.gpu_count and mem.per_gpu(tp) > gpu_bytes:
        tp *= 2
    if tp > inst.gpu_count:
        return Fit(
            inst.type, False, 0, 0, mem.per_gpu(inst.gpu_count), host_ram,
            f"needs {_gib(mem.per_gpu(inst.gpu_count))} per GPU even split over all {inst.gpu_count} × "
            f"{inst.gpu.name} ({inst.gpu.memory_gib:g} GiB each)",
        )
    if host_ram > ram:
        return Fit(
            inst.type, False, tp, 0, mem.per_gpu(tp), host_ram,
            f"GPU fits but host RAM {inst.ram_gib:g} GiB < {_gib(host_ram)} needed to load",
        )
    replicas = inst.gpu_count // tp
    how = "fits one GPU" if tp == 1 else f"needs tensor parallel degree {tp}"
    return Fit(inst.type, True, tp, replicas, mem.per_gpu(tp), host_ram, f"{how} ({_gib(mem.per_gpu(tp))} of {inst.gpu.memory_gib:g} GiB)")


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


@dataclass(frozen=True)
class Latency:
    batch: int
    prefill_s: float
    decode_step_s: float
    output_tokens: int
    bound: str  # what limits decoding: "memory bandwidth" or "compute"

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_step_s * self.output_tokens

    @property
    def requests_per_s(self) -> float:
        return self.batch / self.total_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.output_tokens / self.total_s


def _peak_flops(gpu: Gpu, dtype: str) -> float:
    if dtype == "bf16" and gpu.supports_bf16:
        return gpu.bf16_tflops * 1e12
    if dtype == "fp32":
        return gpu.fp32_tflops * 1e12
    return gpu.fp16_tflops * 1e12  # fp16, and int8/int4 weights dequantised to fp16 for the matmuls


def latency(
    m: ModelConfig, dtype: str, *, bandwidth_gbs: float, flops: float, batch: int, input_tokens: int, output_tokens: int,
    a: Assumptions | None = None,
) -> Latency:
    """Roofline estimate: prefill is compute-bound, each decode step bandwidth-bound (weights + KV read once per step)."""
    a = a or load_assumptions()
    params = parameter_count(m)
    per = dtype_bytes(dtype)
    eff_flops = flops * a.compute_efficiency
    eff_bw = bandwidth_gbs * 1e9 * a.bandwidth_efficiency
    prefill_params = params.encoder if m.encoder_decoder else params.total
    prefill_s = 2 * prefill_params * input_tokens * batch / eff_flops
    step_params = params.read_per_decode_step
    kv = kv_cache_bytes(m, batch, input_tokens, output_tokens, dtype)
    step_bytes = step_params * per + kv
    step_mem = step_bytes / eff_bw
    step_compute = 2 * step_params * batch / eff_flops
    bound = "memory bandwidth" if step_mem >= step_compute else "compute"
    return Latency(batch, prefill_s, max(step_mem, step_compute), output_tokens, bound)


def gpu_latency(m: ModelConfig, dtype: str, gpu: Gpu, tensor_parallel: int = 1, **kw) -> Latency:
    """Latency on ``tensor_parallel`` GPUs of one kind (ideal scaling: an optimistic bound)."""
    return latency(m, dtype, bandwidth_gbs=gpu.bandwidth_gbs * tensor_parallel, flops=_peak_flops(gpu, dtype) * tensor_parallel, **kw)


def cpu_latency(m: ModelConfig, dtype: str, a: Assumptions | None = None, **kw) -> Latency:
    """Latency on SageMaker serverless CPUs (assumed bandwidth and FLOP/s, see assumptions.toml)."""
    a = a or load_assumptions()
    return latency(m, dtype, bandwidth_gbs=a.serverless_cpu_bandwidth_gbs, flops=a.serverless_cpu_gflops * 1e9, a=a, **kw)
