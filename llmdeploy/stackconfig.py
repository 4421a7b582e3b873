"""The one schema of a stack's settings: what `llmdeploy plan --stack` writes and `infra/` reads.

Each setting is declared once, here: its default on the ``StackConfig`` field,
its key, type and description in ``SETTINGS``.
``Pulumi.yaml``'s ``config:`` block is generated from ``SETTINGS`` (a test keeps
them in step), ``plan`` writes ``Pulumi.<stack>.yaml`` through ``write_stack_file``
and the Pulumi program validates what it reads with ``StackConfig.from_mapping``
before it creates anything. Usage settings (``usage*``) play the role of
Infracost's usage file: the traffic figures plan assumed, so that
``llmdeploy preview --offline`` prices usage-billed resources the same way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdeploy.catalog import TERMS as catalog_TERMS
from llmdeploy.errors import ConfigError, UnknownChoiceError
from llmdeploy.sizing import DTYPE_BYTES

NAMESPACE = "llmdeploy"
MODES = ("reserved", "realtime", "async", "serverless")
TERMS = catalog_TERMS  # pricing terms are the catalog's
DTYPES = tuple(DTYPE_BYTES)  # the dtypes sizing knows the size of
# Pinned LMI (DJL Serving) version for sagemaker.core.image_uris.retrieve("djl-lmi", region, version).
DEFAULT_LMI_VERSION = "0.33.0"
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Setting:
    key: str  # camelCase, as in Pulumi.<stack>.yaml under the "llmdeploy:" namespace
    field: str  # snake_case attribute of StackConfig
    type: str  # Pulumi project config type: string | integer | boolean
    description: str
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("mode", "mode", "string", "Hosting mode: reserved (self-hosted EC2), realtime, async or serverless.", MODES),
    Setting("model", "model", "string", "Model name from the bundled configs, or a Hugging Face id served from weightsUri."),
    Setting("region", "region", "string", "AWS region to deploy into."),
    Setting("instanceType", "instance_type", "string", "EC2 type (reserved) or ml.* type (realtime, async); empty for serverless."),
    Setting("instanceCount", "instance_count", "integer", "Instances for the peak (realtime, reserved) or the async scale-out maximum."),
    Setting("minInstances", "min_instances", "integer", "Autoscaling floor (0 allowed only for async)."),
    Setting("term", "term", "string", "Pricing term the plan assumed for reserved mode.", TERMS),
    Setting("dtype", "dtype", "string", "Weights dtype the handler loads.", DTYPES),
    Setting("tensorParallelDegree", "tensor_parallel_degree", "integer", "GPUs one model copy is split across."),
    Setting("lmiVersion", "lmi_version", "string", "LMI container version resolved with sagemaker.core.image_uris."),
    Setting("lmiImage", "lmi_image", "string", "Full LMI image URI; overrides lmiVersion when set."),
    Setting("weightsUri", "weights_uri", "string", "s3:// prefix holding the model weights; empty = option.model_id from the Hub."),
    Setting("servicePort", "service_port", "integer", "Port the model server listens on (SageMaker container contract)."),
    Setting("ingressCidr", "ingress_cidr", "string",
            "Reserved mode: IPv4 CIDR allowed to reach the load balancer (0.0.0.0/0 = a public endpoint)."),
    Setting("certificateArn", "certificate_arn", "string",
            "Reserved mode: ACM certificate ARN in the stack's region; set, the load balancer serves HTTPS on 443 "
            "and port 80 only redirects to it. Empty = plain HTTP on 80."),
    Setting("targetInvocationsPerInstance", "target_invocations_per_instance", "integer", "Realtime autoscaling target, invocations per instance per minute."),
    Setting("serverlessMemoryMb", "serverless_memory_mb", "integer", "Serverless endpoint memory size in MB."),
    Setting("serverlessMaxConcurrency", "serverless_max_concurrency", "integer", "Serverless endpoint max concurrency."),
    Setting("serverlessProvisionedConcurrency", "serverless_provisioned_concurrency", "integer", "Serverless provisioned concurrency (0 = none)."),
    Setting("asyncMaxConcurrentInvocations", "async_max_concurrent_invocations", "integer", "Async: concurrent invocations per instance."),
    Setting("owner", "owner", "string", "Owner tag on every resource."),
    Setting("costCenter", "cost_center", "string", "Cost-center tag on every resource."),
    Setting("maxMonthlyUsd", "max_monthly_usd", "integer",
            "Monthly budget in USD: deploy, the Pulumi program and the policy pack refuse a stack whose estimate is "
            "higher (0 = no budget)."),
    Setting("usageRequestsPerMonth", "usage_requests_per_month", "integer", "Usage the plan assumed: requests per month."),
    Setting("usageActiveHoursPerDay", "usage_active_hours_per_day", "integer", "Usage the plan assumed: hours a day with traffic (async scales to zero outside)."),
    Setting("usageMsPerRequest", "usage_ms_per_request", "integer", "Usage the plan assumed: serverless compute milliseconds per request."),
    Setting("usageBytesPerRequest", "usage_bytes_per_request", "integer", "Usage the plan assumed: request + response bytes."),
    # The rest of the traffic plan was given, so that deploy can show plan's comparison for it (0 = not recorded).
    Setting("usageInputTokens", "usage_input_tokens", "integer", "Usage the plan assumed: prompt tokens per request."),
    Setting("usageOutputTokens", "usage_output_tokens", "integer", "Usage the plan assumed: generated tokens per request."),
    Setting("usagePeakRequestsPerHour", "usage_peak_requests_per_hour", "integer",
            "Usage the plan assumed: peak requests per hour when given (0 = twice the active-hours average)."),
    Setting("usageLatencyTargetMs", "usage_latency_target_ms", "integer",
            "Usage the plan assumed: the latency target per request, in milliseconds."),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class StackConfig:
    mode: str
    model: str = "flan-t5-xl"
    region: str = "us-east-1"
    instance_type: str = ""
    instance_count: int = 1
    min_instances: int = 1
    term: str = "1y"
    dtype: str = "fp16"
    tensor_parallel_degree: int = 1
    lmi_version: str = DEFAULT_LMI_VERSION
    lmi_image: str = ""
    weights_uri: str = ""
    service_port: int = 8080
    ingress_cidr: str = "0.0.0.0/0"
    certificate_arn: str = ""
    target_invocations_per_instance: int = 60
    serverless_memory_mb: int = 6144
    serverless_max_concurrency: int = 20
    serverless_provisioned_concurrency: int = 0
    async_max_concurrent_invocations: int = 4
    owner: str = "unknown"
    cost_center: str = "unassigned"
    max_monthly_usd: int = 0
    usage_requests_per_month: int = 0
    usage_active_hours_per_day: int = 24
    usage_ms_per_request: int = 0
    usage_bytes_per_request: int = 0
    usage_input_tokens: int = 0
    usage_output_tokens: int = 0
    usage_peak_requests_per_hour: int = 0
    usage_latency_target_ms: int = 0

    # -- conversions ---------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, catalog=None, origin: str = "stack config") -> "StackConfig":
        """Build and validate from ``{key: value}`` (keys with or without the ``llmdeploy:`` prefix).

        Values may be strings (as Pulumi hands them over); they are coerced by
        the declared type. ``catalog``, when given, also checks region and
        instance type against it.
        """
        values: dict[str, Any] = {}
        for key, value in raw.items():
            ns, _, bare = str(key).rpartition(":")
            if ns and ns != NAMESPACE:
                continue  # aws:region and friends belong to providers
            setting = BY_KEY.get(bare)
            if setting is None:
                raise UnknownChoiceError(f"setting in {origin}", bare, BY_KEY, fix="Remove it or fix its name.")
            values[setting.field] = _coerce(setting, value, origin)
        if "mode" not in values:
            raise ConfigError(f"{origin} has no {NAMESPACE}:mode.", hint="Write one with 'llmdeploy plan --stack NAME'.")
        config = cls(**values)
        config.validate(catalog)
        return config

    def to_mapping(self) -> dict[str, Any]:
        """``{"llmdeploy:key": value}`` for every setting, in declaration order."""
        return {f"{NAMESPACE}:{s.key}": getattr(self, s.field) for s in SETTINGS}

    # -- rules ----------------------------------------------------------------------------------

    def validate(self, catalog=None) -> None:
        for s in SETTINGS:
            if s.choices and getattr(self, s.field) not in s.choices:
                raise UnknownChoiceError(f"{NAMESPACE}:{s.key}", getattr(self, s.field), s.choices)
        for name in ("instance_count", "tensor_parallel_degree", "service_port", "target_invocations_per_instance",
                     "async_max_concurrent_invocations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_key(name)} must be at least 1, got {getattr(self, name)}.")
        if self.min_instances < 0 or self.min_instances > self.instance_count:
            raise ConfigError(
                f"{_key('min_instances')} must be between 0 and instanceCount ({self.instance_count}), got {self.min_instances}."
            )
        if self.min_instances == 0 and self.mode != "async":
            raise ConfigError(f"{_key('min_instances')} 0 is only possible in async mode (mode is {self.mode!r}).")
        if not 1 <= self.usage_active_hours_per_day <= 24:
            raise ConfigError(f"{_key('usage_active_hours_per_day')} must be 1..24, got {self.usage_active_hours_per_day}.")
        for name in ("usage_requests_per_month", "usage_ms_per_request", "usage_bytes_per_request", "max_monthly_usd",
                     "usage_input_tokens", "usage_output_tokens", "usage_peak_requests_per_hour", "usage_latency_target_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_key(name)} must not be negative, got {getattr(self, name)}.")
        if self.weights_uri and not self.weights_uri.startswith("s3://"):
            raise ConfigError(f"{_key('weights_uri')} must be an s3:// URI, got {self.weights_uri!r}.")
        # Checked in every mode (only reserved uses them) so a typo never waits for a mode switch to surface.
        check_ingress_cidr(self.ingress_cidr, name=_key("ingress_cidr"))
        if self.certificate_arn:
            check_certificate_arn(self.certificate_arn, self.region, name=_key("certificate_arn"))
        if self.mode == "serverless":
            self._validate_serverless(catalog)
        elif not self.instance_type:
            raise ConfigError(f"mode {self.mode!r} needs {_key('instance_type')}.", hint="Run 'llmdeploy plan --stack NAME' to pick one.")
        if self.mode in ("realtime", "async") and not self.instance_type.startswith("ml."):
            raise ConfigError(f"mode {self.mode!r} runs on SageMaker: {_key('instance_type')} must be an ml.* type, got {self.instance_type!r}.")
        if self.mode == "reserved" and self.instance_type.startswith("ml."):
            raise ConfigError(f"mode 'reserved' runs on EC2: {_key('instance_type')} must not be an ml.* type, got {self.instance_type!r}.")
        if catalog is not None:
            self._validate_against(catalog)

    def _validate_serverless(self, catalog) -> None:
        if catalog is None:
            return
        limits = catalog.serverless_limits
        if self.serverless_memory_mb not in limits.memory_sizes_mb:
            raise ConfigError(
                f"{_key('serverless_memory_mb')} {self.serverless_memory_mb} is not a SageMaker serverless memory size; "
                f"valid: {', '.join(map(str, limits.memory_sizes_mb))}."
            )
        if not 1 <= self.serverless_max_concurrency <= limits.max_concurrency:
            raise ConfigError(
                f"{_key('serverless_max_concurrency')} {self.serverless_max_concurrency} is outside 1..{limits.max_concurrency} "
                "(SageMaker serverless limit per endpoint)."
            )
        if not 0 <= self.serverless_provisioned_concurrency <= min(self.serverless_max_concurrency, limits.max_provisioned_concurrency):
            raise ConfigError(
                f"{_key('serverless_provisioned_concurrency')} {self.serverless_provisioned_concurrency} must be 0..maxConcurrency "
                f"({self.serverless_max_concurrency})."
            )

    def _validate_against(self, catalog) -> None:
        from llmdeploy import catalog as cat_mod

        cat_mod.check_region(catalog, self.region)
        if self.mode == "reserved":
            cat_mod.ec2_price(catalog, self.region, self.instance_type)
        elif self.mode in ("realtime", "async"):
            cat_mod.hosting_price(catalog, self.region, self.instance_type)


def _key(field_name: str) -> str:
    return next(f"{NAMESPACE}:{s.key}" for s in SETTINGS if s.field == field_name)


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    name = f"{NAMESPACE}:{setting.key}"
    if setting.type == "integer":
        if isinstance(value, bool):
            raise ConfigError(f"{name} in {origin} must be an integer, got {value!r}.")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} in {origin} must be an integer, got {value!r}.") from None
    if setting.type == "boolean":
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise ConfigError(f"{name} in {origin} must be true or false, got {value!r}.")
        return text == "true"
    return "" if value is None else str(value)


def check_stack_name(name: str) -> str:
    if not _STACK_NAME.match(name or ""):
        raise ConfigError(
            f"stack name {name!r} is not valid: use 1-100 letters, digits, '-', '_' or '.'.",
        )
    return name


def check_cidr(value: str) -> str:
    """A CIDR that is not the whole internet (used for SSH rules)."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"{value!r} is not a CIDR block (example: 203.0.113.0/24).") from None
    if net.prefixlen == 0:
        raise ConfigError(f"CIDR {value!r} opens to the whole internet; give your office or VPN range instead.")
    return str(net)


def check_ingress_cidr(value: str, *, name: str = "ingress CIDR") -> str:
    """An IPv4 CIDR for a public endpoint's load balancer. Unlike ``check_cidr`` it accepts 0.0.0.0/0:
    serving the internet is this setting's normal case, while an SSH rule must never be that open."""
    text = str(value).strip()
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{name} {value!r} is not a CIDR block; use e.g. 203.0.113.0/24, or 0.0.0.0/0 for everyone.") from None
        # Host bits set: AWS would widen it silently; say what the rule would really allow.
        raise ConfigError(f"{name} {value!r} has host bits set; did you mean {str(fixed)!r}?") from None
    if "/" not in text:
        raise ConfigError(f"{name} {value!r} has no prefix length; use e.g. {text}/32 for one address.")
    if net.version != 4:
        # The load balancer is IPv4-only (no dualstack, no ipv6 ingress rule).
        raise ConfigError(f"{name} {value!r} is IPv6; the load balancer is IPv4-only, use an IPv4 CIDR such as 0.0.0.0/0.")
    return str(net)


# arn:PARTITION:acm:REGION:ACCOUNT:certificate/ID (ACM certificate ids are UUIDs).
_CERT_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):acm:([a-z0-9-]+):(\d{12}):certificate/[A-Za-z0-9-]+$")


def check_certificate_arn(value: str, region: str, *, name: str = "certificate ARN") -> str:
    """An ACM certificate ARN a load balancer in ``region`` can use: ALBs only take certificates of their own region."""
    match = _CERT_ARN.match(str(value).strip())
    if not match:
        raise ConfigError(
            f"{name} {value!r} is not an ACM certificate ARN; expected arn:aws:acm:{region}:ACCOUNT:certificate/ID "
            "(see 'aws acm list-certificates')."
        )
    arn_partition, arn_region = match.group(1), match.group(2)
    if arn_region != region:
        raise ConfigError(
            f"{name} {value!r} is in {arn_region}, but the stack deploys to {region}; "
            f"request or import the certificate in {region} (ACM certificates are regional)."
        )
    expected = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    if arn_partition != expected:
        raise ConfigError(f"{name} {value!r} names partition {arn_partition!r}; region {region} is in {expected!r}.")
    return str(value).strip()


# -- files -------------------------------------------------------------------------------------------


def stack_file(project_dir: str | Path, stack: str) -> Path:
    return Path(project_dir) / f"Pulumi.{check_stack_name(stack)}.yaml"


def write_stack_file(path: str | Path, config: StackConfig, *, header: str = "") -> Path:
    """Write ``Pulumi.<stack>.yaml`` atomically. Keeps provider keys (``aws:region``) in step."""
    import yaml

    from llmdeploy.fileio import write_atomic

    body = {"config": {"aws:region": config.region, **config.to_mapping()}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    prefix = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return write_atomic(path, prefix + text)


def read_stack_file(path: str | Path, *, catalog=None) -> StackConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"stack config {path} does not exist.", hint=f"Write it with 'llmdeploy plan --stack {path.stem.removeprefix('Pulumi.')}'."
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"stack config {path} is not valid YAML ({exc.__class__.__name__}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(f"stack config {path} has no 'config:' mapping.")
    return StackConfig.from_mapping(data["config"], catalog=catalog, origin=str(path))


def pulumi_project_config() -> dict[str, dict[str, Any]]:
    """The ``config:`` block of Pulumi.yaml, generated from SETTINGS."""
    block: dict[str, dict[str, Any]] = {}
    for s in SETTINGS:
        entry: dict[str, Any] = {"type": s.type, "description": s.description}
        default = _DEFAULTS[s.field]
        if default is not dataclasses.MISSING:
            entry["default"] = default
        block[f"{NAMESPACE}:{s.key}"] = entry
    return block


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StackConfig)}
assert [f.name for f in dataclasses.fields(StackConfig)] == [s.field for s in SETTINGS], "SETTINGS and StackConfig drifted"
