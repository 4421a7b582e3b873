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

from llmdeploy.catalog import SAGEMAKER_PREFIX
from llmdeploy.enums import Mode, Term
from llmdeploy.errors import ConfigError, UnknownChoiceError, UsageError
from llmdeploy.handlers import serving_config as serving
from llmdeploy.lmi import default_lmi_version
from llmdeploy.sizing import DTYPE_BYTES

NAMESPACE = "llmdeploy"
DTYPES = tuple(d for d in serving.DTYPES if d in DTYPE_BYTES)  # the handler's dtypes that sizing knows the size of
BACKENDS = serving.BACKENDS
BATCHING_CHOICES = serving.BATCHING_CHOICES
# Pinned LMI (DJL Serving) version for sagemaker.core.image_uris.retrieve("djl-lmi", region, version):
# chosen, with its sources, in llmdeploy/data/lmi.toml.
DEFAULT_LMI_VERSION = default_lmi_version()
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,254}$")  # a git ref or commit, as the Hub accepts in /resolve/{rev}/


@dataclass(frozen=True)
class Setting:
    key: str  # camelCase, as in Pulumi.<stack>.yaml under the "llmdeploy:" namespace
    field: str  # snake_case attribute of StackConfig
    type: str  # Pulumi project config type: string | integer | boolean
    description: str
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("mode", "mode", "string", "Hosting mode: reserved (self-hosted EC2), realtime, async or serverless.", tuple(Mode)),
    Setting("model", "model", "string", "Model name from the bundled configs, or a Hugging Face id served from weightsUri."),
    Setting("modelRevision", "model_revision", "string",
            "Hugging Face Hub commit of the model that plan sized (empty for a bundled config): the checkpoint the plan describes."),
    Setting("region", "region", "string", "AWS region to deploy into."),
    Setting("instanceType", "instance_type", "string", "EC2 type (reserved) or ml.* type (realtime, async); empty for serverless."),
    Setting("instanceCount", "instance_count", "integer", "Instances for the peak (realtime, reserved) or the async scale-out maximum."),
    Setting("minInstances", "min_instances", "integer", "Autoscaling floor (0 allowed only for async)."),
    Setting("term", "term", "string", "Pricing term the plan assumed for reserved mode.", tuple(Term)),
    Setting("dtype", "dtype", "string", "Weights dtype the handler loads.", DTYPES),
    Setting("backend", "backend", "string",
            "Inference engine in the container: transformers (its batching is the batching setting) or ctranslate2 "
            "(static batches; installed from model.tar.gz's requirements.txt, model converted at start-up).", BACKENDS),
    Setting("batching", "batching", "string",
            "How the transformers backend batches: continuous (iteration-level: requests join the running decode "
            "at every step), static (whole batches, DJL's dynamic batching) or auto = static when the model server "
            "runs on GPUs (realtime, async, reserved on a GPU instance type), continuous on CPU (serverless, CPU "
            "instance types). Why: on an NVIDIA H200 (bench_serve --device cuda, 2026-11-30) iteration-level "
            "served about half the requests/s of static batches (flan-t5-xl, mixed lengths: 4.3-4.6 vs 8.4-8.6), "
            "while on CPU it won (4.66 vs 3.27); plan's speed model is calibrated on static batches. "
            "ctranslate2 always runs static batches.", BATCHING_CHOICES),
    Setting("tensorParallelDegree", "tensor_parallel_degree", "integer",
            "GPUs one model copy is split across; the LMI handler runs one copy per GPU, so 1."),
    # What the model server runs, written into model.tar.gz's serving.properties (containers/package.py); defaults
    # and ranges from handlers/serving_config.py, which the handler reads too.
    Setting("maxBatchSize", "max_batch_size", "integer",
            "Requests one model copy decodes together: the batch plan sized each instance's capacity with. "
            "serving.properties option.max_rolling_batch_size (iteration-level batching) or batch_size "
            "(static batches)."),
    Setting("maxBatchDelayMs", "max_batch_delay_ms", "integer",
            "Static batches: longest wait, in ms, for a batch to fill (serving.properties max_batch_delay)."),
    Setting("maxNewTokens", "max_new_tokens", "integer",
            "Cap on a request's max_new_tokens (at least the output tokens plan assumed)."),
    Setting("maxNumBeams", "max_num_beams", "integer", "Cap on a request's num_beams."),
    Setting("maxRequestTokens", "max_request_tokens", "integer",
            "Budget per request, max_new_tokens x num_beams x inputs; a costlier request is answered 400."),
    Setting("lmiVersion", "lmi_version", "string", "LMI container version resolved with sagemaker.core.image_uris."),
    Setting("lmiImage", "lmi_image", "string", "Full LMI image URI; overrides lmiVersion when set."),
    Setting("weightsUri", "weights_uri", "string", "s3:// prefix holding the model weights; empty = option.model_id from the Hub."),
    Setting("servicePort", "service_port", "integer", "Port the model server listens on (SageMaker container contract)."),
    Setting("ingressCidr", "ingress_cidr", "string",
            "Reserved mode: IPv4 CIDR allowed to reach the load balancer from the internet (0.0.0.0/0 = everyone). "
            "Empty: without certificateArn the load balancer is internal (reachable from the VPC only); "
            "with it, HTTPS from everyone."),
    Setting("certificateArn", "certificate_arn", "string",
            "Reserved mode: ACM certificate ARN in the stack's region; set, the load balancer serves HTTPS on 443 "
            "and port 80 only redirects to it. Empty = plain HTTP on 80."),
    Setting("alarmEmail", "alarm_email", "string",
            "Email address the stack's CloudWatch alarms notify (through a new SNS topic; confirm the subscription mail). "
            "Empty = no email."),
    Setting("alarmTopicArn", "alarm_topic_arn", "string",
            "Existing SNS topic ARN, in the stack's region, for the alarms to notify instead of a new topic."),
    Setting("targetInvocationsPerInstance", "target_invocations_per_instance", "integer",
            "Realtime autoscaling target, invocations per instance per minute."),
    Setting("serverlessMemoryMb", "serverless_memory_mb", "integer", "Serverless endpoint memory size in MB."),
    Setting("serverlessMaxConcurrency", "serverless_max_concurrency", "integer", "Serverless endpoint max concurrency."),
    Setting("serverlessProvisionedConcurrency", "serverless_provisioned_concurrency", "integer",
            "Serverless provisioned concurrency (0 = none)."),
    Setting("asyncMaxConcurrentInvocations", "async_max_concurrent_invocations", "integer", "Async: concurrent invocations per instance."),
    Setting("owner", "owner", "string", "Owner tag on every resource."),
    Setting("costCenter", "cost_center", "string", "Cost-center tag on every resource."),
    Setting("maxMonthlyUsd", "max_monthly_usd", "integer",
            "Monthly budget in USD: deploy, the Pulumi program and the policy pack refuse a stack whose estimate is "
            "higher (0 = no budget)."),
    Setting("usageRequestsPerMonth", "usage_requests_per_month", "integer", "Usage the plan assumed: requests per month."),
    Setting("usageActiveHoursPerDay", "usage_active_hours_per_day", "integer",
            "Usage the plan assumed: hours a day with traffic (async scales to zero outside)."),
    Setting("usageMsPerRequest", "usage_ms_per_request", "integer", "Usage the plan assumed: serverless compute milliseconds per request."),
    Setting("usageBytesPerRequest", "usage_bytes_per_request", "integer", "Usage the plan assumed: request + response bytes."),
    # The rest of the traffic plan was given, so that deploy can show plan's comparison for it (0 = not recorded).
    Setting("usageInputTokens", "usage_input_tokens", "integer", "Usage the plan assumed: prompt tokens per request."),
    Setting("usageOutputTokens", "usage_output_tokens", "integer", "Usage the plan assumed: generated tokens per request."),
    Setting("usagePeakRequestsPerHour", "usage_peak_requests_per_hour", "integer",
            "Usage the plan assumed: peak requests per hour when given (0 = twice the active-hours average)."),
    Setting("usageLatencyTargetMs", "usage_latency_target_ms", "integer",
            "Usage the plan assumed: the latency target per request, in milliseconds."),
    Setting("alarmLatencyMs", "alarm_latency_ms", "integer",
            "Latency the plan held requests to, in ms (async: its estimate when longer than the target): "
            "the p90 latency alarm's threshold (0 = none recorded, no alarm)."),
    Setting("usageRequestsPerHourPerInstance", "usage_requests_per_hour_per_instance", "integer",
            "Requests one instance serves per hour at the plan's batch size: the capacity alarms' threshold (0 = none)."),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class StackConfig:
    mode: Mode
    model: str = "flan-t5-xl"
    model_revision: str = ""
    region: str = "us-east-1"
    instance_type: str = ""
    instance_count: int = 1
    min_instances: int = 1
    term: Term = Term.ONE_YEAR
    dtype: str = "fp16"
    backend: str = serving.DEFAULT_BACKEND
    batching: str = serving.DEFAULT_BATCHING
    tensor_parallel_degree: int = serving.DEFAULT_TENSOR_PARALLEL_DEGREE
    max_batch_size: int = serving.DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: int = serving.DEFAULT_MAX_BATCH_DELAY_MS
    max_new_tokens: int = serving.DEFAULT_MAX_NEW_TOKENS
    max_num_beams: int = serving.DEFAULT_MAX_NUM_BEAMS
    max_request_tokens: int = serving.DEFAULT_MAX_REQUEST_TOKENS
    lmi_version: str = DEFAULT_LMI_VERSION
    lmi_image: str = ""
    weights_uri: str = ""
    service_port: int = 8080
    ingress_cidr: str = ""
    certificate_arn: str = ""
    alarm_email: str = ""
    alarm_topic_arn: str = ""
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
    alarm_latency_ms: int = 0
    usage_requests_per_hour_per_instance: int = 0

    def __post_init__(self) -> None:
        # A valid mode or term given as plain text (a stack file, a test) becomes its enum member; anything else
        # is left for validate() to refuse with the valid choices.
        for name, kind in (("mode", Mode), ("term", Term)):
            value = getattr(self, name)
            if not isinstance(value, kind) and value in {m.value for m in kind}:
                object.__setattr__(self, name, kind(value))

    # -- conversions ---------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, catalog=None, origin: str = "stack config") -> StackConfig:
        """Build and validate from ``{key: value}`` (keys with or without the ``llmdeploy:`` prefix).

        Values may be strings (as Pulumi hands them over); they are coerced by
        the declared type. ``catalog``, when given, also checks region and
        instance type against it.
        """
        values: dict[str, Any] = {}
        provider_region = None
        for key, value in raw.items():
            ns, _, bare = str(key).rpartition(":")
            if ns == "aws" and bare == "region":
                provider_region = value
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
        if provider_region not in (None, "") and str(provider_region) != config.region:
            # The AWS provider creates everything in aws:region; the program checks and prices llmdeploy:region.
            raise ConfigError(
                f"aws:region {provider_region!r} and {NAMESPACE}:region {config.region!r} in {origin} disagree: the AWS "
                f"provider would create the stack in {provider_region} while llmdeploy checks and prices {config.region}.",
                hint=f"Set both to the same region (pulumi config set aws:region {config.region}, or rerun "
                     "'llmdeploy plan --stack NAME --region REGION').")
        return config

    def to_mapping(self) -> dict[str, Any]:
        """``{"llmdeploy:key": value}`` for every setting, in declaration order."""
        return {f"{NAMESPACE}:{s.key}": _plain(getattr(self, s.field)) for s in SETTINGS}

    @property
    def internet_facing(self) -> bool:
        """Reserved mode: whether the load balancer is internet-facing (so has public IPv4 addresses to pay for)."""
        return alb_internet_facing(self.ingress_cidr, self.certificate_arn)

    def served_batching(self, catalog) -> str:
        """``continuous`` or ``static``: what the stack's model server runs (stack_batching for this mode and the
        catalog's gpu_count of instanceType)."""
        from llmdeploy import catalog as cat_mod

        gpus = cat_mod.instance(catalog, self.instance_type).gpu_count if self.mode.has_instances else 0
        return stack_batching(self.batching, self.mode, gpus)

    # -- rules ----------------------------------------------------------------------------------

    def validate(self, catalog=None) -> None:
        for s in SETTINGS:
            if s.choices and getattr(self, s.field) not in s.choices:
                raise UnknownChoiceError(f"{NAMESPACE}:{s.key}", getattr(self, s.field), s.choices)
        for name in ("instance_count", "service_port", "target_invocations_per_instance",
                     "async_max_concurrent_invocations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_key(name)} must be at least 1, got {getattr(self, name)}.")
        for name in serving.RANGES:  # what serving.properties may hold (the handler checks the same ranges)
            why = serving.out_of_range(name, getattr(self, name))
            if why:
                raise ConfigError(f"{_key(name)} {why}.", hint=f"Set {_key(name)} within that range.")
        if self.tensor_parallel_degree != 1:
            # DJL gives each worker tensorParallelDegree GPUs (CUDA_VISIBLE_DEVICES), but the handler loads one copy
            # on the first of them: the others would sit idle, and a model too big for one GPU would not load.
            raise ConfigError(f"{_key('tensor_parallel_degree')} {self.tensor_parallel_degree}: the LMI handler runs one "
                              "copy of the model per GPU, so only 1 is supported.",
                              hint=f"Set {_key('tensor_parallel_degree')} to 1 and an instance type whose GPU fits "
                                   "the model ('llmdeploy plan --stack NAME' picks one).")
        self._validate_api_limits()
        if self.min_instances < 0 or self.min_instances > self.instance_count:
            raise ConfigError(
                f"{_key('min_instances')} must be between 0 and instanceCount ({self.instance_count}), got {self.min_instances}."
            )
        if self.min_instances == 0 and self.mode != Mode.ASYNC:
            raise ConfigError(f"{_key('min_instances')} 0 is only possible in async mode (mode is '{self.mode}').")
        if not 1 <= self.usage_active_hours_per_day <= 24:
            raise ConfigError(f"{_key('usage_active_hours_per_day')} must be 1..24, got {self.usage_active_hours_per_day}.")
        for name in ("usage_requests_per_month", "usage_ms_per_request", "usage_bytes_per_request", "max_monthly_usd",
                     "usage_input_tokens", "usage_output_tokens", "usage_peak_requests_per_hour", "usage_latency_target_ms",
                     "alarm_latency_ms", "usage_requests_per_hour_per_instance"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_key(name)} must not be negative, got {getattr(self, name)}.")
        if self.model_revision and not _REVISION.match(self.model_revision):
            raise ConfigError(f"{_key('model_revision')} {self.model_revision!r} is not a Hub branch, tag or commit "
                              "(letters, digits, '.', '_', '-', '/').", hint="Re-run 'llmdeploy plan --stack NAME' to record it.")
        if self.weights_uri and not self.weights_uri.startswith("s3://"):
            raise ConfigError(f"{_key('weights_uri')} must be an s3:// URI, got {self.weights_uri!r}.")
        # Checked in every mode (only reserved uses them) so a typo never waits for a mode switch to surface.
        check_ingress_cidr(self.ingress_cidr, name=_key("ingress_cidr"))
        if self.certificate_arn:
            check_certificate_arn(self.certificate_arn, self.region, name=_key("certificate_arn"))
        if self.alarm_email:
            check_alarm_email(self.alarm_email, name=_key("alarm_email"))
        if self.alarm_topic_arn:
            check_sns_topic_arn(self.alarm_topic_arn, self.region, name=_key("alarm_topic_arn"))
        if not self.mode.has_instances:
            self._validate_serverless(catalog)
        elif not self.instance_type:
            raise ConfigError(f"mode '{self.mode}' needs {_key('instance_type')}.", hint="Run 'llmdeploy plan --stack NAME' to pick one.")
        if self.mode.ml_instances and not self.instance_type.startswith(SAGEMAKER_PREFIX):
            raise ConfigError(f"mode '{self.mode}' runs on SageMaker: {_key('instance_type')} must be an ml.* type, "
                              f"got {self.instance_type!r}.")
        if self.mode == Mode.RESERVED and self.instance_type.startswith(SAGEMAKER_PREFIX):
            raise ConfigError(f"mode '{Mode.RESERVED}' runs on EC2: {_key('instance_type')} must not be an ml.* type, "
                              f"got {self.instance_type!r}.")
        if catalog is not None:
            self._validate_against(catalog)

    def _validate_api_limits(self) -> None:
        """Ranges and patterns AWS's API models declare for the members these settings become (llmdeploy.apilimits)."""
        from llmdeploy import apilimits

        numbers = ["instance_count", "service_port", "async_max_concurrent_invocations"]
        if self.mode == Mode.SERVERLESS:
            numbers += ["serverless_memory_mb", "serverless_max_concurrency"]
            if self.serverless_provisioned_concurrency:  # 0 = none: the member is left out of the request
                numbers.append("serverless_provisioned_concurrency")
        for name in numbers:
            value = getattr(self, name)
            why = apilimits.out_of_range(_setting(name).key, value)
            if why:
                raise ConfigError(f"{_key(name)} {value} is out of range: {why}.", hint=f"Set {_key(name)} within it.")
        for name in ("owner", "cost_center"):
            check_tag_value(getattr(self, name), name=_key(name))
        if self.lmi_image:
            why = apilimits.string_problem("lmiImage", self.lmi_image)
            if why:
                raise ConfigError(f"{_key('lmi_image')} {self.lmi_image!r} is not an image URI AWS accepts: {why}.")

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
        if self.mode == Mode.RESERVED:
            cat_mod.ec2_price(catalog, self.region, self.instance_type)
        elif self.mode.ml_instances:
            cat_mod.hosting_price(catalog, self.region, self.instance_type)


def stack_batching(batching: str, mode: Mode | str, gpu_count: int) -> str:
    """``continuous`` or ``static``: the batching the stack's model server runs, ``batching`` (the setting) resolved
    for where it runs. The server is on GPUs when the mode has instances and the instance type has GPUs
    (the catalog's gpu_count); serverless endpoints run on CPUs. The rule for auto is
    handlers/serving_config.resolve_batching's (static on GPUs, continuous on CPUs; its docstring has the
    measurement)."""
    on_gpu = Mode(mode).has_instances and gpu_count > 0
    return serving.resolve_batching(batching, on_gpu=on_gpu)


def _plain(value: Any) -> Any:
    """An enum member as its string (YAML's safe dumper represents exact types only)."""
    return value.value if isinstance(value, (Mode, Term)) else value


def _setting(field_name: str) -> Setting:
    return next(s for s in SETTINGS if s.field == field_name)


def _key(field_name: str) -> str:
    return f"{NAMESPACE}:{_setting(field_name).key}"


def check_tag_value(value: str, *, name: str = "tag value") -> str:
    """A value every tagging API llmdeploy calls accepts (IAM, ELBv2, SageMaker, Auto Scaling, SNS, KMS, EC2):
    AWS's own patterns and lengths from llmdeploy.apilimits; ConfigError naming the character and the fix."""
    from llmdeploy import apilimits

    why = apilimits.string_problem("tagValue", str(value))
    if why:
        raise ConfigError(
            f"{name} {value!r} cannot be an AWS tag value: {why}.",
            hint="Use letters, digits, spaces and _ . : / = + - @ only (e.g. replace brackets and commas with '-').")
    return str(value)


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    name = f"{NAMESPACE}:{setting.key}"
    if isinstance(value, (list, tuple, dict)):
        kind = "a YAML list" if not isinstance(value, dict) else "a YAML mapping"
        raise ConfigError(f"{name} in {origin} must be one {setting.type}, got {kind} {value!r}.",
                          hint=f"Write a single value, e.g. {name}: {_example(value)!r}.")
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


def _example(value: Any) -> str:
    items = list(value.values()) if isinstance(value, dict) else list(value)
    return "-".join(str(v) for v in items) if items else "value"


def check_stack_name(name: str) -> str:
    # fullmatch: `$` alone would let "prod\n" through (it matches before a trailing newline).
    if not _STACK_NAME.fullmatch(name or ""):
        raise ConfigError(
            f"stack name {name!r} is not valid: use 1-100 letters, digits, '-', '_' or '.'.",
        )
    return name


def check_cidr(value: str) -> str:
    """A CIDR narrow enough for an SSH rule (llmdeploy.finetune.check_ssh_cidr: /16 or narrower for IPv4)."""
    from llmdeploy.finetune import check_ssh_cidr

    try:
        return check_ssh_cidr(value, option="SSH CIDR")
    except UsageError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None


def alb_internet_facing(ingress_cidr: str, certificate_arn: str) -> bool:
    """The reserved load balancer is internet-facing only when asked for: an ingress CIDR, or a certificate (then
    only TLS carries prompts and answers); otherwise it is internal (issue 10). The one rule the program
    (infra/reserved_endpoint.py) and the pricing (plan.planned_line_items: public IPv4 addresses) share."""
    return bool(ingress_cidr or certificate_arn)


def check_ingress_cidr(value: str, *, name: str = "ingress CIDR") -> str:
    """An IPv4 CIDR for a public endpoint's load balancer, or '' (unset: see ReservedEndpointArgs). Unlike
    ``check_cidr`` it accepts 0.0.0.0/0 when written out: a user may choose to serve the internet, while an SSH
    rule must never be that open."""
    text = str(value).strip()
    if not text:
        return ""
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


def partition(region: str) -> str:
    """The AWS partition of a region, as ARNs name it: aws-cn (China), aws-us-gov (GovCloud), else aws."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


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
    expected = partition(region)
    if arn_partition != expected:
        raise ConfigError(f"{name} {value!r} names partition {arn_partition!r}; region {region} is in {expected!r}.")
    return str(value).strip()


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# arn:PARTITION:sns:REGION:ACCOUNT:NAME (topic names: 1-256 letters, digits, '-' and '_'; FIFO ends in .fifo).
_TOPIC_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):sns:([a-z0-9-]+):(\d{12}):[A-Za-z0-9_-]{1,251}(\.fifo)?$")


def check_alarm_email(value: str, *, name: str = "alarm email") -> str:
    if not _EMAIL.match(str(value).strip()):
        raise ConfigError(f"{name} {value!r} is not an email address (example: oncall@example.com).")
    return str(value).strip()


def check_sns_topic_arn(value: str, region: str, *, name: str = "SNS topic ARN") -> str:
    """An SNS topic a CloudWatch alarm in ``region`` can notify: alarm actions name topics of their own region."""
    match = _TOPIC_ARN.match(str(value).strip())
    if not match:
        raise ConfigError(f"{name} {value!r} is not an SNS topic ARN; expected arn:aws:sns:{region}:ACCOUNT:TOPIC "
                          "(see 'aws sns list-topics').")
    if match.group(2) != region:
        raise ConfigError(f"{name} {value!r} is in {match.group(2)}, but the stack deploys to {region}; "
                          f"CloudWatch alarms notify topics in their own region: use a topic in {region}, or leave it "
                          "empty and set alarmEmail.")
    return str(value).strip()


# -- files -------------------------------------------------------------------------------------------


def stack_file(project_dir: str | Path, stack: str) -> Path:
    return Path(project_dir) / f"Pulumi.{check_stack_name(stack)}.yaml"


# Keys of Pulumi.NAME.yaml that `plan --stack` decides (from the plan's choice and traffic: the model with the Hub
# commit it sized, the batch it sized capacity with and what feeds it (async's concurrent invocations), token caps
# that let its requests through, the usage it priced, the targets the alarms hold the stack to), plus `aws:region`,
# kept equal to llmdeploy:region. Every other key of an existing file is the user's and is kept as it is:
# ingressCidr, certificateArn, alarmEmail / alarmTopicArn, maxMonthlyUsd (the budget), lmiVersion / lmiImage,
# weightsUri, servicePort, backend, batching (auto resolves per target when deployed, so plan need not write it),
# maxBatchDelayMs, maxNumBeams, the autoscaling and concurrency settings plan leaves
# at their defaults, `secure:` values, provider settings (aws:profile),
# and the top-level keys Pulumi owns (encryptionsalt, secretsprovider, encryptedkey, environment).
# tests/unit/bad_input/test_stack_file_edits.py checks that plan sets no setting outside this list.
PLANNED = (
    "mode", "model", "modelRevision", "region", "instanceType", "instanceCount", "minInstances", "term", "dtype",
    "tensorParallelDegree", "maxBatchSize", "maxNewTokens", "maxRequestTokens", "asyncMaxConcurrentInvocations",
    "serverlessMemoryMb", "serverlessMaxConcurrency", "owner", "costCenter",
    "usageRequestsPerMonth", "usageActiveHoursPerDay", "usageMsPerRequest", "usageBytesPerRequest",
    "usageInputTokens", "usageOutputTokens", "usagePeakRequestsPerHour", "usageLatencyTargetMs",
    "alarmLatencyMs", "usageRequestsPerHourPerInstance",
)
PLANNED_KEYS = ("aws:region", *(f"{NAMESPACE}:{k}" for k in PLANNED))
_HEADER_START = "# Written by `llmdeploy plan`"


@dataclass(frozen=True)
class StackUpdate:
    """What writing a plan into ``path`` would do; nothing is written until :meth:`write`.

    ``changes`` are ``(key, old, new)`` for the keys plan sets that differ (``old`` is None for a key the
    file lacks); ``kept`` the keys of the existing file plan leaves alone; ``mode`` the file mode kept.
    """

    path: Path
    text: str
    existed: bool
    changes: tuple[tuple[str, Any, Any], ...]
    kept: tuple[str, ...]
    mode: int
    comments_kept: bool = True
    config: StackConfig | None = None  # the llmdeploy settings the file holds once written (kept keys included)

    def write(self) -> Path:
        from llmdeploy.fileio import write_atomic

        return write_atomic(self.path, self.text, mode=self.mode)

    def brief(self, n: int = 3) -> str:
        """The changes in a few words, for one line."""
        parts = [f"{k} ({_scalar(o)} -> {_scalar(v)})" if o is not None else f"{k} (new: {_scalar(v)})"
                 for k, o, v in self.changes[:n]]
        more = f" and {len(self.changes) - n} more" if len(self.changes) > n else ""
        return ", ".join(parts) + more

    def summary(self) -> list[str]:
        """Lines for a person: what changes (a diff of the keys) and what is kept."""
        name = self.path.name
        if not self.existed:
            return [f"{name} is new: writing {len(self.changes)} settings."]
        if not self.changes:
            return [f"{name} already matches the plan; nothing to write."]
        kept = ", ".join(self.kept[:8]) + (f", ... ({len(self.kept)} in all)" if len(self.kept) > 8 else "")
        lines = [f"{name} exists; plan changes {len(self.changes)} setting(s)"
                 + (f" and keeps the {len(self.kept)} other key(s) ({kept})" if self.kept else "") + ":"]
        for key, old, new in self.changes:
            lines.append(f"  + {key}: {_scalar(new)}" if old is None else f"  ~ {key}: {_scalar(old)} -> {_scalar(new)}")
        if not self.comments_kept:
            lines.append("  (its config: block is not in block style, so the file is rewritten without its comments)")
        return lines


def _scalar(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


def prepare_stack_file(path: str | Path, config: StackConfig, *, header: str = "",
                       keep_existing: tuple[str, ...] = ()) -> StackUpdate:
    """The update of ``Pulumi.<stack>.yaml`` that deploys ``config``, merged into the file if it exists.

    A new file gets every setting. In an existing one only ``PLANNED_KEYS`` are set (less
    ``keep_existing``, bare setting names such as "owner" whose value in the file wins); everything
    else stays byte for byte: other keys, values, comments, order. Raises ConfigError, before anything
    is written, when the existing file cannot be read or the merged settings are not valid.
    """
    import yaml

    from llmdeploy.fileio import check_output_path, read_text_utf8

    path = check_output_path(path, "stack config")
    wanted = {"aws:region": config.region, **config.to_mapping()}
    prefix = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    if not path.exists():
        text = prefix + yaml.safe_dump({"config": wanted}, sort_keys=False, default_flow_style=False)
        return StackUpdate(path, text, False, tuple((k, None, v) for k, v in wanted.items()), (), 0o644, config=config)

    mode = path.stat().st_mode & 0o7777
    old_text = read_text_utf8(path, "stack config")
    try:
        doc = yaml.safe_load(old_text)
        root = yaml.compose(old_text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"stack config {path} is not valid YAML ({exc.__class__.__name__}); plan will not overwrite it.",
                          hint="Fix it or move it away, then run plan again.") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}) or {}, dict):
        raise ConfigError(f"stack config {path} is not a mapping with a 'config:' mapping; plan will not overwrite it.",
                          hint="Fix it or move it away, then run plan again.")
    old_config = dict(doc.get("config") or {})
    keep = {f"{NAMESPACE}:{k}" for k in keep_existing}
    owned = [k for k in PLANNED_KEYS if k not in keep or k not in old_config]
    changes = tuple((k, old_config.get(k), wanted[k]) for k in owned if k not in old_config or old_config[k] != wanted[k])
    kept = tuple(k for k in [*(k for k in doc if k != "config"), *old_config] if k not in owned or k in keep)
    # The user's own keys and values first (what a person wants to see kept), then settings still at plan's default.
    kept = tuple(sorted(kept, key=lambda k: k in wanted and old_config.get(k) == wanted[k]))
    merged = {**old_config, **{k: wanted[k] for k in owned}}
    # The merged file must be one deploy accepts: a user's certificateArn in another region than the plan's,
    # or a mistyped key, is refused here, before anything is written. (secure: values are opaque.)
    try:
        merged_config = StackConfig.from_mapping({k: v for k, v in merged.items() if not isinstance(v, dict)}, origin=str(path))
    except UsageError as exc:
        raise ConfigError(f"{path} with this plan merged in would not deploy, so it is left as it is: {exc}") from None
    if not changes:
        return StackUpdate(path, old_text, True, (), kept, mode, config=merged_config)
    expected = {**doc, "config": merged}
    spliced = _splice(old_text, root, {k: wanted[k] for k, _, _ in changes}, prefix)
    comments_kept = spliced is not None and _parses_to(spliced, expected)
    if spliced is not None and comments_kept:
        text = spliced
    else:
        text = prefix + yaml.safe_dump(expected, sort_keys=False, default_flow_style=False)
    return StackUpdate(path, text, True, changes, kept, mode, comments_kept, merged_config)


def _parses_to(text: str, expected: dict) -> bool:
    import yaml

    try:
        return yaml.safe_load(text) == expected
    except (yaml.YAMLError, ValueError):
        return False


def _splice(text: str, root, values: dict[str, Any], prefix: str) -> str | None:
    """``text`` with each key of ``values`` set in its block-style ``config:`` mapping, or None if it is not one.

    Values are replaced where they stand (comments on the line stay); new keys go after the last entry,
    at its indentation. The caller re-parses the result and falls back to a plain dump if it differs.
    """
    import yaml

    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        return None
    config = next((v for k, v in root.value if getattr(k, "value", None) == "config"), None)
    if config is None:
        body = text if text.endswith("\n") or not text else text + "\n"
        added = yaml.safe_dump({"config": values}, sort_keys=False, default_flow_style=False, width=10**9)
        return _with_header(body + added, prefix)
    if not isinstance(config, yaml.MappingNode) or config.flow_style or not config.value:
        return None
    edits: list[tuple[int, int, str]] = []
    present = {}
    for key_node, value_node in config.value:
        present[key_node.value] = value_node
    for key, value in values.items():
        node = present.get(key)
        if node is None:
            continue
        start, end = node.start_mark.index, node.end_mark.index
        while end > start and text[end - 1] in " \t\n":
            end -= 1
        edits.append((start, end, _scalar(value)))
    new_keys = [k for k in values if k not in present]
    if new_keys:
        indent = " " * config.value[0][0].start_mark.column
        end = config.value[-1][1].end_mark.index
        while end > 0 and text[end - 1] in " \t\n":
            end -= 1
        newline = text.find("\n", end)
        at = len(text) if newline == -1 else newline + 1
        lines = "".join(indent + yaml.safe_dump({k: values[k]}, default_flow_style=False, width=10**9) for k in new_keys)
        edits.append((at, at, ("\n" if newline == -1 else "") + lines))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return _with_header(text, prefix)


def _with_header(text: str, prefix: str) -> str:
    """Our own header comment refreshed (date, price); any other leading comment is the user's and stays."""
    if not text.startswith(_HEADER_START):
        return text
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return prefix + "".join(lines[n:])


def write_stack_file(path: str | Path, config: StackConfig, *, header: str = "", keep_existing: tuple[str, ...] = ()) -> Path:
    """Write ``Pulumi.<stack>.yaml`` atomically, merged into an existing file (see :func:`prepare_stack_file`)."""
    update = prepare_stack_file(path, config, header=header, keep_existing=keep_existing)
    return update.write() if update.changes else update.path


def read_stack_file(path: str | Path, *, catalog=None) -> StackConfig:
    import yaml

    from llmdeploy.fileio import read_text_utf8

    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"stack config {path} is not a regular file.")
    if not path.is_file():
        raise ConfigError(
            f"stack config {path} does not exist.", hint=f"Write it with 'llmdeploy plan --stack {path.stem.removeprefix('Pulumi.')}'."
        )
    try:
        data = yaml.safe_load(read_text_utf8(path, "stack config")) or {}
    except (yaml.YAMLError, ValueError) as exc:
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
            entry["default"] = _plain(default)
        block[f"{NAMESPACE}:{s.key}"] = entry
    return block


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StackConfig)}
assert [f.name for f in dataclasses.fields(StackConfig)] == [s.field for s in SETTINGS], "SETTINGS and StackConfig drifted"
