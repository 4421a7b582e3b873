"""A small catalog for tests (written to a temp dir), independent of the bundled data files."""

from __future__ import annotations

from pathlib import Path

FILES = {
    "sources.toml": """schema_version = 1
[sources.test]
url = "https://example.invalid/test"
retrieved = 2026-11-20
note = "test fixture"
""",
    "gpus.toml": """schema_version = 1
[gpus.A100]
memory_gib = 40
bandwidth_gbs = 1555
fp16_tflops = 312
bf16_tflops = 312
fp32_tflops = 19.5
compute_capability = "8.0"
source = "test"
[gpus.T4]
memory_gib = 16
bandwidth_gbs = 320
fp16_tflops = 65
fp32_tflops = 8.1
compute_capability = "7.5"
source = "test"
""",
    "instances.toml": """schema_version = 1
[instances."p4d.24xlarge"]
gpu = "A100"
gpu_count = 8
vcpus = 96
ram_gib = 1152
efa = true
source = "test"
[instances."g4dn.xlarge"]
gpu = "T4"
gpu_count = 1
vcpus = 4
ram_gib = 16
source = "test"
[instances."m5.large"]
vcpus = 2
ram_gib = 8
source = "test"
[instances."t2.medium"]
vcpus = 2
ram_gib = 4
source = "test"
""",
    "ec2_prices.toml": """schema_version = 1
[ec2."us-east-1"]
"p4d.24xlarge" = { on_demand = 32.7726, source = "test" }
"g4dn.xlarge" = { on_demand = 0.526, source = "test" }
"m5.large" = { on_demand = 0.096, source = "test" }
"t2.medium" = { on_demand = 0.0464, source = "test" }
[ec2."us-west-2"]
"g4dn.xlarge" = { on_demand = 0.526, source = "test" }
"m5.large" = { on_demand = 0.096, source = "test" }
""",
    "sagemaker_prices.toml": """schema_version = 1
[hosting."us-east-1"]
"ml.m5.large" = { hourly = 0.115, source = "test" }
"ml.t2.medium" = { hourly = 0.056, source = "test" }
"ml.g4dn.xlarge" = { hourly = 0.7364, source = "test" }
[hosting."us-west-2"]
"ml.m5.large" = { hourly = 0.115, source = "test" }
[serverless."us-east-1"]
usd_per_gb_second = 0.00002
usd_per_gb_processed = 0.016
source = "test"
[serverless."us-west-2"]
usd_per_gb_second = 0.00002
usd_per_gb_processed = 0.016
source = "test"
[other."us-east-1"]
alb_hourly = 0.0225
kms_key_monthly = 1.0
source = "test"
public_ipv4_hourly = 0.005
public_ipv4_source = "test"
cloudwatch_alarm_metric_monthly = 0.10
cloudwatch_dashboard_monthly = 3.00
cloudwatch_custom_metric_monthly = 0.30
cloudwatch_source = "test"
ebs_gp3_gb_month = 0.08
ebs_source = "test"
availability_zones = 6
availability_zones_source = "test"
[other."us-west-2"]
alb_hourly = 0.0225
kms_key_monthly = 1.0
source = "test"
# no public_ipv4_hourly: the reaper shows "?" for us-west-2 Elastic IPs
""",
    "limits.toml": """schema_version = 1
[serverless]
memory_step_mb = 1024
max_payload_mb = 4
timeout_s = 60
max_image_gb = 10
gpu = false
source = "test"
[async]
max_payload_gb = 1
max_processing_s = 3600
source = "test"
""",
}


def write(directory: Path) -> Path:
    """Write the catalog files into ``directory`` (created) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (directory / name).write_text(text)
    return directory


def install(monkeypatch, tmp_path: Path):
    """Make ``load_catalog()`` (and so the CLI) read this catalog: the user-cache route."""
    from llmdeploy import catalog

    write(Path(tmp_path) / "llmdeploy-cache" / "catalog")
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(Path(tmp_path) / "llmdeploy-cache"))
    monkeypatch.delenv("LLMDEPLOY_BUNDLED_PRICES", raising=False)
    catalog.load_catalog.cache_clear()
    return catalog.load_catalog()
