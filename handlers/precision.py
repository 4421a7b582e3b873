"""Device and dtype choice as a pure function of the GPU's compute capability.

``choose_precision(requested, DeviceInfo(...))`` decides without touching a GPU,
so tests can cover a T4 (7.5), an A10G (8.6), an A100 (8.0) and the CPU.
Only ``detect_device`` and ``apply_precision`` look at torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

try:
    from .serving_config import MissingBackendError, ServingConfigError, normalise_dtype
except ImportError:  # copied flat next to model.py in the container
    from serving_config import MissingBackendError, ServingConfigError, normalise_dtype  # type: ignore[no-redef]

# T5's feed-forward output projection overflows in fp16 (activations beyond 65504);
# transformers lists it in T5PreTrainedModel._keep_in_fp32_modules. We apply it ourselves
# so the rule holds whatever the loader does.
T5_KEEP_IN_FP32 = ("wo",)


@dataclass(frozen=True)
class DeviceInfo:
    kind: str = "cpu"  # "cpu" or "cuda"
    index: int = 0
    capability: tuple[int, int] | None = None  # (major, minor) for CUDA
    name: str = "cpu"

    @property
    def torch_device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def supports_bf16(self) -> bool:
        return self.kind == "cuda" and self.capability is not None and self.capability >= (8, 0)


# Simulated devices for tests and for `--dry-run`-style reasoning.
T4 = DeviceInfo("cuda", 0, (7, 5), "Tesla T4")
A10G = DeviceInfo("cuda", 0, (8, 6), "NVIDIA A10G")
A100 = DeviceInfo("cuda", 0, (8, 0), "NVIDIA A100-SXM4-40GB")
CPU = DeviceInfo()


@dataclass(frozen=True)
class Precision:
    dtype: str  # "float32" | "float16" | "bfloat16" (compute/storage dtype of the non-quantised weights)
    load_in_8bit: bool = False
    keep_in_fp32: tuple[str, ...] = ()  # module-name suffixes kept in fp32
    reason: str = ""


def _has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def choose_precision(requested: str, device: DeviceInfo, *, has_bitsandbytes=None,
                     keep_in_fp32: tuple[str, ...] = T5_KEEP_IN_FP32) -> Precision:
    """The dtype to load with, from what serving.properties asks and what the device can do.

    auto: bf16 on compute capability >= 8.0 (A10G, A100, L4, H100), fp16 with T5's ``wo``
    layers in fp32 below (T4, V100), fp32 on CPU. int8 needs CUDA and bitsandbytes.
    """
    requested = normalise_dtype(requested)
    has_bnb = _has_bitsandbytes() if has_bitsandbytes is None else has_bitsandbytes
    if requested == "int8":
        if device.kind != "cuda":
            raise ServingConfigError("option.dtype=int8 needs a CUDA GPU (bitsandbytes has no CPU kernels here)")
        if not has_bnb:
            raise MissingBackendError(
                "option.dtype=int8 needs bitsandbytes, which is not installed: pip install bitsandbytes "
                "(or choose option.dtype=auto)"
            )
        return Precision("float16", load_in_8bit=True, keep_in_fp32=keep_in_fp32,
                         reason="int8 weights (bitsandbytes LLM.int8), fp16 activations")
    if device.kind == "cpu":
        return Precision("float32", reason="CPU: fp32" + ("" if requested in ("auto", "fp32")
                                                          else f" ({requested} is not used on CPU)"))
    if requested == "fp32":
        return Precision("float32", reason="fp32 requested")
    if requested == "bf16" or (requested == "auto" and device.supports_bf16):
        if device.supports_bf16:
            return Precision("bfloat16", reason=f"bf16: compute capability {device.capability} >= (8, 0)")
        # bf16 asked on a T4: emulated and slow; fp16 with fp32 wo is the safe fast choice.
        return Precision("float16", keep_in_fp32=keep_in_fp32,
                         reason=f"bf16 unsupported at compute capability {device.capability}; fp16 with "
                                f"{'/'.join(keep_in_fp32)} in fp32")
    # fp16 asked, or auto below 8.0
    return Precision("float16", keep_in_fp32=keep_in_fp32,
                     reason=f"fp16 with {'/'.join(keep_in_fp32)} in fp32 (T5 overflows in fp16 there)")


def detect_device(preference: str = "auto") -> DeviceInfo:
    import torch

    if preference == "cpu" or not torch.cuda.is_available():
        if preference.startswith("cuda"):
            raise ServingConfigError(f"device {preference!r} requested but CUDA is not available")
        return CPU
    index = int(preference.split(":", 1)[1]) if ":" in preference else 0
    major, minor = torch.cuda.get_device_capability(index)
    return DeviceInfo("cuda", index, (major, minor), torch.cuda.get_device_name(index))


def torch_dtype(precision: Precision):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[precision.dtype]


def apply_precision(model, precision: Precision):
    """Cast ``model`` to the chosen dtype, then put the keep-in-fp32 modules back in fp32.

    For an 8-bit model only the fp32 rule is applied (bitsandbytes owns the rest).
    Returns the names of the modules kept in fp32.
    """
    import torch

    if not precision.load_in_8bit:
        model.to(torch_dtype(precision))
    kept = []
    if precision.keep_in_fp32 and precision.dtype != "float32":
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in precision.keep_in_fp32:
                if precision.load_in_8bit and type(module).__name__.startswith("Linear8bit"):
                    continue
                module.to(torch.float32)
                kept.append(name)
    return kept
