"""The whole sizing report for one model, as plain data (what `llmdeploy estimate` prints or dumps)."""

from __future__ import annotations

from llmdeploy import calibration as cal_mod
from llmdeploy import catalog as cat_mod
from llmdeploy import sizing
from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Catalog
from llmdeploy.finetune import instances_for_gpus
from llmdeploy.models import load_model_config

FINETUNE_GPU = "A100-40GB"
FINETUNE_INSTANCE = "p4d.24xlarge"


def estimate(
    model: str,
    *,
    cat: Catalog,
    revision: str | None = None,
    region: str = "us-east-1",
    dtype: str | None = None,
    batch: int = 1,
    input_tokens: int = 256,
    output_tokens: int = 64,
    buffer: float | None = None,
    loading: str = "safetensors",
    finetune_batch: int = 8,
    finetune_seq: int = 512,
    instance_types: tuple[str, ...] = (),
    calibration_files: tuple[str, ...] = (),
) -> dict:
    a = load_assumptions()
    m = load_model_config(model, revision=revision)
    dtype = dtype or m.native_dtype
    sizing.dtype_bytes(dtype)
    cat_mod.check_region(cat, region)
    params = sizing.parameter_count(m)
    mem = sizing.inference_memory(m, dtype, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens, buffer=buffer)
    host = sizing.host_ram_to_load(m, dtype, loading, a)
    cals = cal_mod.resolve(calibration_files, a, cat=cat)

    fits = _fits(cat, region, mem, host, dtype, a, cat_mod.resolve_gpu_types(cat, instance_types))
    latency = _latency(m, cat, fits, cals, dtype, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)
    finetune = _finetune(m, cat, a, batch=finetune_batch, seq_len=finetune_seq)
    return {
        "model": {"name": m.name, "hf_id": m.hf_id, "revision": m.revision or None, "model_type": m.model_type,
                  "encoder_decoder": m.encoder_decoder, "origin": m.origin, "native_dtype": m.native_dtype},
        "region": region,
        "dtype": dtype,
        "parameters": params.total,
        "active_parameters": params.active,
        "parameter_count": sizing.parameter_report(m),
        "hub": _hub(m),
        "parameter_breakdown": {"embedding": params.embedding, "encoder": params.encoder, "decoder": params.decoder,
                                "lm_head": params.lm_head, "other": params.other},
        "weights_bytes": mem.weights,
        "bytes_per_dtype": {d: sizing.weights_bytes(m, d) for d in sizing.DTYPE_BYTES},
        "inference_bytes": mem.total,
        "inference": {"batch": batch, "input_tokens": input_tokens, "output_tokens": output_tokens, "weights_bytes": mem.weights,
                      "kv_cache_bytes": mem.kv_cache, "activation_bytes": mem.activations, "buffer_fraction": mem.buffer_fraction,
                      "buffer_bytes": mem.buffer, "total_bytes": mem.total},
        "calibrations": cals.report(),
        "loading": loading,
        "host_ram_bytes": host,
        "fits": fits,
        "finetune": finetune,
        "latency": latency,
        "assumptions": _assumptions(mem, a, cat, region),
    }


def _fits(cat: Catalog, region: str, mem: sizing.InferenceMemory, host: int, dtype: str, a: Assumptions,
          only: tuple[str, ...]) -> list[dict]:
    """Whether the model fits each GPU instance of the region (``only`` these types, when given)."""
    fits = []
    for inst in cat_mod.gpu_instances(cat, region):
        if only and inst.type not in only:
            continue
        f = sizing.fit_on_instance(mem, host, inst, a, dtype=dtype)
        gpu = inst.require_gpu()
        fits.append({
            "instance_type": inst.type, "gpu": gpu.name, "gpu_count": inst.gpu_count, "gpu_memory_gib": gpu.memory_gib,
            "gpu_memory_reported_mib": gpu.memory_reported_mib, "gpu_usable_bytes": sizing.gpu_usable_bytes(gpu, a),
            "ram_gib": inst.ram_gib, "fits": f.fits, "tensor_parallel": f.tensor_parallel, "gpu_bytes_per_gpu": f.gpu_bytes_per_gpu,
            "reason": f.reason,
        })
    return fits


def _latency(m, cat: Catalog, fits: list[dict], cals: cal_mod.CalibrationSet, dtype: str, *, batch: int,
             input_tokens: int, output_tokens: int) -> list[dict]:
    """One speed row per GPU model, on the cheapest instance of it that fits; then serverless on CPUs."""
    latency, seen = [], set()
    for row in fits:
        if not row["fits"] or row["gpu"] in seen:
            continue
        seen.add(row["gpu"])
        gpu = cat.gpus[row["gpu"]]
        cal = cals.for_gpu(gpu, dtype)
        lat = sizing.latency(m, dtype, cal, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens,
                             tensor_parallel=row["tensor_parallel"])
        latency.append({
            "gpu": gpu.name, "instance_type": row["instance_type"], "tensor_parallel": row["tensor_parallel"],
            "prefill_s": lat.prefill_s, "decode_step_s": lat.decode_step_s, "total_s": lat.total_s,
            "tokens_per_s": lat.tokens_per_s, "bound": lat.bound, "speed_model": cal.origin,
        })
    # SageMaker serverless runs the handler on CPUs, in fp32: the CPU calibration's speed.
    cpu = cals.for_cpu()
    lat = sizing.latency(m, "fp32", cpu, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)
    latency.append({
        "gpu": None, "instance_type": "serverless (CPU, fp32)", "tensor_parallel": 1, "prefill_s": lat.prefill_s,
        "decode_step_s": lat.decode_step_s, "total_s": lat.total_s, "tokens_per_s": lat.tokens_per_s, "bound": lat.bound,
        "speed_model": cpu.origin,
    })
    return latency


def _finetune(m, cat: Catalog, a: Assumptions, *, batch: int, seq_len: int) -> list[dict]:
    """Fine-tuning memory per precision, and the A100-40GB GPUs / p4d instances it needs."""
    ft_gpu = cat.gpus.get(FINETUNE_GPU)
    ft_inst = cat.instances.get(FINETUNE_INSTANCE)
    finetune = []
    for precision in sizing.FINETUNE_PRECISIONS:
        ft = sizing.finetune_memory(m, precision, batch=batch, seq_len=seq_len)
        gpus = sizing.gpus_for_finetune(ft, ft_gpu, a) if ft_gpu else None
        per_instance = ft_inst.gpu_count if ft_inst else 8
        finetune.append({
            "precision": precision, "weights_bytes": ft.weights, "gradients_bytes": ft.gradients, "optimizer_bytes": ft.optimizer,
            "activation_bytes": ft.activations, "total_bytes": ft.total, "a100_40gb_gpus": gpus,
            "p4d_instances": None if gpus is None else instances_for_gpus(gpus, per_instance), "counted": ft.counted,
        })
    return finetune


def _assumptions(mem: sizing.InferenceMemory, a: Assumptions, cat: Catalog, region: str) -> list[str]:
    return [
        f"buffer {mem.buffer_fraction:.0%} on weights + KV cache + activations",
        f"GPU memory: {a.gpu_usable_fraction:.0%} of what the driver reports (T4: 15,360 MiB) is usable",
        f"host RAM adds {a.host_overhead_gib:g} GiB for OS, Python and CUDA; 'safetensors' loading (the handler's path) holds one "
        "copy of the weights, 'in-memory' two",
        "speed per GPU from its calibration (measured, published, or the datasheet roofline with "
        f"{a.bandwidth_efficiency:.0%} of peak bandwidth and {a.compute_efficiency:.0%} of peak FLOP/s plus a published per-layer "
        "step overhead where nothing was measured); serverless from the CPU calibration",
        "tensor parallel speed assumes ideal scaling",
        f"fine-tune GPUs: model states sharded (ZeRO-3/FSDP), {a.finetune_gpu_usable_fraction:.0%} of each GPU usable",
        f"catalog: {cat.origin}, prices of {region} from {cat.oldest_price_date(region)} or later",
    ]


def _hub(m) -> dict | None:
    """Where a Hub model's config came from (id, revision asked for, commit read) and the checkpoint's size as stored."""
    h = m.hub
    if h is None or h.commit is None and h.revision is None and h.weights_bytes is None and h.notice is None:
        return None  # a bundled model's record: its published count is in parameter_count
    return {"id": h.repo_id, "revision": h.revision, "commit": h.commit, "gated": h.gated, "weights_bytes": h.weights_bytes,
            "source": h.source, "notice": h.notice}
