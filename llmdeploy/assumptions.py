"""Modelling assumptions, read once from ``data/assumptions.toml`` (their one home)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PATH = Path(__file__).parent / "data" / "assumptions.toml"


@dataclass(frozen=True)
class Assumptions:
    buffer: float
    host_overhead_gib: float
    streaming_shard_gib: float
    gpu_usable_fraction: float  # of the driver-reported GPU memory
    cpu_runtime_mib: float
    bandwidth_efficiency: float
    compute_efficiency: float
    roofline_overhead_from: str  # calibration whose per-layer overhead the roofline fallback borrows
    root_volume_gb: int
    peak_to_average: float
    bytes_per_token: float
    json_overhead_bytes: int
    finetune_activation_recompute: bool
    finetune_gpu_usable_fraction: float
    monitoring: MonitoringAssumptions


@dataclass(frozen=True)
class MonitoringAssumptions:
    """Alarm thresholds that are not plan figures (``[monitoring]`` in assumptions.toml)."""

    error_rate_5xx: float
    error_rate_4xx: float
    gpu_memory_fraction: float
    host_memory_fraction: float
    serverless_concurrency_fraction: float
    async_max_wait_s: int


@cache
def load_assumptions() -> Assumptions:
    with PATH.open("rb") as fh:
        raw = tomllib.load(fh)
    m, s, t, f, r, mon = raw["memory"], raw["speed"], raw["traffic"], raw["finetune"], raw["reserved"], raw["monitoring"]
    return Assumptions(
        buffer=m["buffer"],
        host_overhead_gib=m["host_overhead_gib"],
        streaming_shard_gib=m["streaming_shard_gib"],
        gpu_usable_fraction=m["gpu_usable_fraction"],
        cpu_runtime_mib=m["cpu_runtime_mib"],
        bandwidth_efficiency=s["bandwidth_efficiency"],
        compute_efficiency=s["compute_efficiency"],
        roofline_overhead_from=s["roofline_overhead_from"],
        root_volume_gb=r["root_volume_gb"],
        peak_to_average=t["peak_to_average"],
        bytes_per_token=t["bytes_per_token"],
        json_overhead_bytes=t["json_overhead_bytes"],
        finetune_activation_recompute=f["activation_recompute"],
        finetune_gpu_usable_fraction=f["gpu_usable_fraction"],
        monitoring=MonitoringAssumptions(**{k: mon[k] for k in MonitoringAssumptions.__dataclass_fields__}),
    )
