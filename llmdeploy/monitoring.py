"""What to watch on a deployed stack and when to raise the alarm: pure data, no boto3, no Pulumi.

One definition, three readers:

- ``infra/monitoring.py`` turns each ``AlarmSpec`` into a CloudWatch alarm (through ``put_metric_alarm_request``,
  the PutMetricAlarm request, which tests validate against botocore's service model) and ``dashboard_body``
  into the stack's dashboard;
- ``llmdeploy plan`` and ``preview --offline`` price them (``billable``): alarm metrics, one dashboard and, for
  the self-hosted fleet, the CloudWatch agent's GPU metrics;
- ``llmdeploy status`` reads the same metrics for the last hour (``status_queries``) and the alarms' states.

Thresholds come from the plan, recorded in the stack config (``Targets``): the latency the plan holds
requests to (``alarmLatencyMs``: its target, for async its estimate when longer) and what one instance
serves (``usageRequestsPerHourPerInstance``); the fractions that say how close to a limit is too close
live in ``data/assumptions.toml`` ``[monitoring]``.

Metric names, dimensions and statistics follow AWS's documentation (checked 2026-11-30):

- SageMaker, namespace ``AWS/SageMaker``, dimensions EndpointName + VariantName: ``ModelLatency``
  (MICROseconds), ``Invocations`` (Sum), ``InvocationsPerInstance`` (Sum), ``Invocation5XXErrors`` /
  ``Invocation4XXErrors`` (1 per 5xx/4xx answer, 0 otherwise: their Average is the error rate),
  ``ServerlessConcurrentExecutionsUtilization`` (serverless, 0..1; its page names no dimensions of its own, so
  it is read with the invocation metrics' two: an assumption to check on a live endpoint). Async endpoints publish no ``Invocations``
  or ``InvocationsPerInstance``; they publish ``ApproximateBacklogSize`` with the EndpointName dimension only
  (docs: sagemaker/latest/dg/monitoring-cloudwatch.html, async-inference-monitor.html,
  serverless-endpoints-monitoring.html).
- SageMaker instances, namespace ``/aws/sagemaker/Endpoints``: ``GPUMemoryUtilization`` (0-100 x GPUs),
  ``MemoryUtilization`` (0-100), ``GPUUtilization``, ``CPUUtilization``.
- Application Load Balancer, namespace ``AWS/ApplicationELB``, dimensions LoadBalancer (``app/NAME/ID``, the
  ARN's suffix) + TargetGroup (``targetgroup/NAME/ID``): ``TargetResponseTime`` (SECONDS, percentiles),
  ``RequestCount``, ``HTTPCode_Target_5XX_Count`` / ``_4XX_`` (reported only when non-zero, hence FILL),
  ``RequestCountPerTarget`` (Sum is the per-target average), ``UnHealthyHostCount`` (AWS recommends Minimum,
  alarmed on more than one data point).
- CloudWatch agent ``nvidia_gpu`` plugin: ``nvidia_smi_<measurement>``, memory in MiB, in the namespace and
  with the dimension the agent config below sets (amazon-cloudwatch-agent translator: section ``nvidia_gpu``,
  ``measurement``, per-section ``append_dimensions``, global ``aggregation_dimensions``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from llmdeploy.enums import Mode

if TYPE_CHECKING:  # pragma: no cover
    from llmdeploy.assumptions import MonitoringAssumptions
    from llmdeploy.catalog import Catalog
    from llmdeploy.stackconfig import StackConfig

_V = TypeVar("_V")  # a dimension's value: a str, or (infra/) a Pulumi Output of one
SAGEMAKER = "AWS/SageMaker"
SAGEMAKER_INSTANCES = "/aws/sagemaker/Endpoints"
ALB = "AWS/ApplicationELB"
GPU_NAMESPACE = "llmdeploy/GPU"  # where the reserved fleet's CloudWatch agent publishes (IAM allows only this one)
AGENT_PREFIX = "nvidia_smi_"  # the agent names a measurement nvidia_smi_<measurement>
GPU_MEASUREMENTS = ("utilization_gpu", "memory_used", "memory_total")

# Dimension names. Their values are only known once the resources exist (``bind``).
ENDPOINT, VARIANT, LOAD_BALANCER, TARGET_GROUP = "EndpointName", "VariantName", "LoadBalancer", "TargetGroup"
STACK = "Stack"  # appended by the agent to its GPU metrics; the agent also aggregates on it (fleet-wide series)

# Evaluation windows (design choices, not thresholds): 3 of 3 five-minute periods = 15 minutes sustained.
PERIOD_S = 300
EVALUATION_PERIODS = 3
DASHBOARD_PREFIX = "llmdeploy-"
# Alarms other components create that are billed like ours: sagemaker_endpoint's scale-from-zero alarm, which an
# async endpoint has only when it may scale to zero (minInstances 0).
SCALING_ALARM_METRICS = {Mode.ASYNC: 1}
GREATER = "GreaterThanThreshold"
_DASHBOARD_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Metric:
    namespace: str
    name: str
    dimensions: tuple[str, ...]
    stat: str  # Sum | Average | Minimum | Maximum | SampleCount | pNN (percentile)
    label: str = ""

    @property
    def percentile(self) -> bool:
        return bool(re.fullmatch(r"p\d{1,2}(\.\d+)?", self.stat))

    def dimension_list(self, bindings: Mapping[str, _V]) -> list[dict[str, str | _V]]:
        """CloudWatch's Dimensions list; each value as bound (a str, or in infra/ a Pulumi Output carried through)."""
        return [{"Name": d, "Value": bindings[d]} for d in self.dimensions]


@dataclass(frozen=True)
class AlarmSpec:
    key: str  # the alarm is named llmdeploy-<stack>-<key>
    description: str
    threshold: float
    metric: Metric | None = None  # a single metric, or:
    expression: str = ""  # metric math over ``inputs`` ((id, metric) pairs)
    inputs: tuple[tuple[str, Metric], ...] = ()
    comparison: str = GREATER
    period_s: int = PERIOD_S
    evaluation_periods: int = EVALUATION_PERIODS
    datapoints: int = EVALUATION_PERIODS
    treat_missing: str = "notBreaching"  # no traffic is not a failure

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.metric,) if self.metric else tuple(m for _, m in self.inputs)

    @property
    def alarm_metrics(self) -> int:
        """What CloudWatch bills: one per metric the alarm reads (a metric-math alarm reads several)."""
        return len(self.metrics)


@dataclass(frozen=True)
class Targets:
    """What the plan promised, as the alarms need it (``targets_for`` reads it from a stack config)."""

    mode: Mode
    latency_target_ms: int = 0  # alarmLatencyMs; 0: the plan recorded none, so no latency alarm
    requests_per_hour_per_instance: int = 0  # 0: none recorded (serverless), so no capacity alarm
    instance_count: int = 1
    gpus_per_instance: int = 0


def targets_for(config: StackConfig, cat: Catalog) -> Targets:
    gpus = 0
    if config.mode != Mode.SERVERLESS:
        from llmdeploy.catalog import instance

        gpus = instance(cat, config.instance_type).gpu_count
    return Targets(config.mode, config.alarm_latency_ms, config.usage_requests_per_hour_per_instance,
                   config.instance_count, gpus)


def _assumptions() -> MonitoringAssumptions:
    from llmdeploy.assumptions import load_assumptions

    return load_assumptions().monitoring


# -- alarms ---------------------------------------------------------------------------------------


def _sm(name: str, stat: str, label: str = "") -> Metric:
    return Metric(SAGEMAKER, name, (ENDPOINT, VARIANT), stat, label)


def _sm_host(name: str, stat: str, label: str = "") -> Metric:
    return Metric(SAGEMAKER_INSTANCES, name, (ENDPOINT, VARIANT), stat, label)


def _alb(name: str, stat: str, label: str = "") -> Metric:
    return Metric(ALB, name, (LOAD_BALANCER, TARGET_GROUP), stat, label)


def _gpu(measurement: str, stat: str, label: str = "") -> Metric:
    return Metric(GPU_NAMESPACE, AGENT_PREFIX + measurement, (STACK,), stat, label)


def _per_period(per_hour: int) -> float:
    return round(per_hour * PERIOD_S / 3600, 3)


def alarm_specs(t: Targets, a: MonitoringAssumptions | None = None) -> list[AlarmSpec]:
    """The alarms a stack of this mode gets, with thresholds from the plan (``t``) and assumptions (``a``)."""
    a = a or _assumptions()
    specs: list[AlarmSpec] = []
    if t.mode == Mode.RESERVED:
        if t.latency_target_ms:
            specs.append(AlarmSpec(
                "latency-p90", f"p90 time the model servers take to answer is above the plan's latency target of "
                f"{t.latency_target_ms} ms (ALB TargetResponseTime, seconds)",
                t.latency_target_ms / 1000, _alb("TargetResponseTime", "p90", "p90 response time (s)")))
        for code, rate in (("5xx", a.error_rate_5xx), ("4xx", a.error_rate_4xx)):
            specs.append(AlarmSpec(
                f"errors-{code}", f"more than {rate:.0%} of requests answered {code.upper()} by the model servers",
                rate, expression="FILL(e, 0) / r", inputs=(
                    ("e", _alb(f"HTTPCode_Target_{code.upper()}_Count", "Sum", f"{code} answers")),
                    ("r", _alb("RequestCount", "Sum", "requests")))))
        specs.append(AlarmSpec(
            "unhealthy-hosts", "a model server fails the load balancer's /ping health check (UnHealthyHostCount "
            "Minimum > 0 for 5 minutes, as AWS recommends)", 0, _alb("UnHealthyHostCount", "Minimum", "unhealthy"),
            period_s=60, evaluation_periods=5, datapoints=5))
        if t.requests_per_hour_per_instance:
            specs.append(AlarmSpec(
                "capacity", f"each server receives more than the {t.requests_per_hour_per_instance} requests/hour "
                "the plan sized it for (RequestCountPerTarget per 5 minutes)",
                _per_period(t.requests_per_hour_per_instance), _alb("RequestCountPerTarget", "Sum", "requests per target")))
        specs.append(AlarmSpec(
            "gpu-memory", f"a GPU's memory is more than {a.gpu_memory_fraction:.0%} used (CloudWatch agent, "
            "nvidia-smi); the next large batch may run out", a.gpu_memory_fraction * 100,
            expression="100 * used / total", inputs=(("used", _gpu("memory_used", "Maximum", "MiB used")),
                                                    ("total", _gpu("memory_total", "Maximum", "MiB total"))),
            treat_missing="missing"))  # no data = the agent is not reporting: show INSUFFICIENT_DATA, not OK
        return specs

    if t.latency_target_ms:
        specs.append(AlarmSpec(
            "latency-p90", f"p90 ModelLatency is above the plan's latency target of {t.latency_target_ms} ms "
            "(ModelLatency is in microseconds)", t.latency_target_ms * 1000, _sm("ModelLatency", "p90", "p90 (µs)")))
    for code, rate in (("5xx", a.error_rate_5xx), ("4xx", a.error_rate_4xx)):
        specs.append(AlarmSpec(
            f"errors-{code}", f"more than {rate:.0%} of invocations answered {code.upper()} "
            f"(Invocation{code.upper()}Errors is 1 per such answer, 0 otherwise: its Average is the rate)",
            rate, _sm(f"Invocation{code.upper()}Errors", "Average", f"{code} rate")))
    if t.mode == Mode.REALTIME and t.requests_per_hour_per_instance:
        specs.append(AlarmSpec(
            "capacity", f"each instance receives more than the {t.requests_per_hour_per_instance} requests/hour the "
            "plan sized it for (InvocationsPerInstance per 5 minutes)",
            _per_period(t.requests_per_hour_per_instance), _sm("InvocationsPerInstance", "Sum", "invocations per instance")))
    if t.mode == Mode.ASYNC and t.requests_per_hour_per_instance:
        backlog = math.ceil(t.instance_count * t.requests_per_hour_per_instance * a.async_max_wait_s / 3600)
        specs.append(AlarmSpec(
            "backlog", f"more requests queued ({backlog}) than {t.instance_count} instance(s) clear in "
            f"{a.async_max_wait_s // 60} minutes at the plan's {t.requests_per_hour_per_instance} requests/hour each",
            backlog, Metric(SAGEMAKER, "ApproximateBacklogSize", (ENDPOINT,), "Average", "queued requests")))
    if t.mode == Mode.SERVERLESS:
        specs.append(AlarmSpec(
            "concurrency", f"more than {a.serverless_concurrency_fraction:.0%} of the endpoint's max concurrency in "
            "use: further requests are throttled", a.serverless_concurrency_fraction,
            _sm("ServerlessConcurrentExecutionsUtilization", "Maximum", "concurrency used")))
    else:
        specs.append(AlarmSpec(
            "gpu-memory", f"an instance's GPU memory is more than {a.gpu_memory_fraction:.0%} used "
            "(GPUMemoryUtilization runs 0-100 per GPU)", round(a.gpu_memory_fraction * 100 * max(t.gpus_per_instance, 1), 3),
            _sm_host("GPUMemoryUtilization", "Maximum", "GPU memory %")))
        specs.append(AlarmSpec(
            "host-memory", f"an instance's RAM is more than {a.host_memory_fraction:.0%} used",
            a.host_memory_fraction * 100, _sm_host("MemoryUtilization", "Maximum", "RAM %")))
    return specs


def alarm_name(stack: str, key: str) -> str:
    return f"llmdeploy-{stack}-{key}"


def dashboard_name(stack: str) -> str:
    """``llmdeploy-<stack>``; PutDashboard allows only A-Z, a-z, 0-9, - and _ (stack names may hold a '.')."""
    return DASHBOARD_PREFIX + _DASHBOARD_NAME.sub("-", stack)


def console_url(region: str, dashboard: str) -> str:
    host = "console.amazonaws.cn" if region.startswith("cn-") else "console.aws.amazon.com"
    return f"https://{region}.{host}/cloudwatch/home?region={region}#dashboards/dashboard/{dashboard}"


def put_metric_alarm_request(spec: AlarmSpec, *, stack: str, bindings: Mapping[str, object], actions: Sequence[object] = (),
                             tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CloudWatch PutMetricAlarm request for ``spec`` (API member names; botocore validates it in the tests).

    ``bindings`` values and ``actions`` are str here; infra/monitoring.py passes Pulumi Outputs, carried through."""
    request: dict[str, Any] = {
        "AlarmName": alarm_name(stack, spec.key),
        "AlarmDescription": f"llmdeploy stack {stack}: {spec.description}."[:1024],
        "ActionsEnabled": True,
        "AlarmActions": list(actions),
        "OKActions": list(actions),  # say so when it recovers, too
        "EvaluationPeriods": spec.evaluation_periods,
        "DatapointsToAlarm": spec.datapoints,
        "Threshold": float(spec.threshold),
        "ComparisonOperator": spec.comparison,
        "TreatMissingData": spec.treat_missing,
    }
    if spec.metric is not None:
        m = spec.metric
        request.update(Namespace=m.namespace, MetricName=m.name, Dimensions=m.dimension_list(bindings), Period=spec.period_s)
        if m.percentile:
            request["ExtendedStatistic"] = m.stat
            # A percentile over a handful of requests (a quiet hour, one cold start) is noise: keep the state.
            request["EvaluateLowSampleCountPercentile"] = "ignore"
        else:
            request["Statistic"] = m.stat
    else:
        request["Metrics"] = [{"Id": "alarm", "Expression": spec.expression, "Label": spec.key, "ReturnData": True}] + [
            {"Id": qid, "ReturnData": False, "MetricStat": {
                "Metric": {"Namespace": m.namespace, "MetricName": m.name, "Dimensions": m.dimension_list(bindings)},
                "Period": spec.period_s, "Stat": m.stat}}
            for qid, m in spec.inputs]
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return request


# -- what it costs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Billable:
    alarm_metrics: int
    dashboards: int
    custom_metrics: int


def custom_metric_count(mode: Mode, instance_count: int, gpus_per_instance: int) -> int:
    """The agent's GPU metrics: one series per GPU and measurement, plus the fleet-wide series per measurement."""
    if mode != Mode.RESERVED:
        return 0
    return len(GPU_MEASUREMENTS) * (instance_count * max(gpus_per_instance, 1) + 1)


@functools.cache
def billable(mode: Mode, *, instance_count: int, gpus_per_instance: int, latency_target: bool = True,
             capacity: bool = True, scales_to_zero: bool = True) -> Billable:
    """What ``plan`` prices for a stack's monitoring (the alarm set does not depend on threshold values)."""
    t = Targets(mode, 1 if latency_target else 0, 1 if capacity and mode != Mode.SERVERLESS else 0, instance_count,
                gpus_per_instance)
    alarms = sum(s.alarm_metrics for s in alarm_specs(t)) + (SCALING_ALARM_METRICS.get(mode, 0) if scales_to_zero else 0)
    return Billable(alarms, 1, custom_metric_count(mode, instance_count, gpus_per_instance))


def billable_for(config: StackConfig, cat: Catalog) -> Billable:
    t = targets_for(config, cat)
    return billable(t.mode, instance_count=t.instance_count, gpus_per_instance=t.gpus_per_instance,
                    latency_target=bool(t.latency_target_ms), capacity=bool(t.requests_per_hour_per_instance),
                    scales_to_zero=config.min_instances == 0)


# -- the dashboard -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    title: str
    metrics: tuple[Metric, ...]
    alarm_key: str = ""  # draw this alarm's threshold as a horizontal line
    expression: tuple[str, str] | tuple[()] = ()  # (expression over m0, m1..., label) drawn instead of the raw metrics


def panels(mode: Mode) -> list[Panel]:
    if mode == Mode.RESERVED:
        return [
            Panel("Latency (TargetResponseTime, seconds)", (_alb("TargetResponseTime", "p50", "p50"),
                                                          _alb("TargetResponseTime", "p90", "p90")), "latency-p90"),
            Panel("Requests and errors", (_alb("RequestCount", "Sum", "requests"),
                                          _alb("HTTPCode_Target_5XX_Count", "Sum", "5xx"),
                                          _alb("HTTPCode_Target_4XX_Count", "Sum", "4xx"),
                                          Metric(ALB, "HTTPCode_ELB_5XX_Count", (LOAD_BALANCER,), "Sum", "load balancer 5xx"))),
            Panel("Requests per server (per 5 min)", (_alb("RequestCountPerTarget", "Sum", "per target"),), "capacity"),
            Panel("Servers", (_alb("HealthyHostCount", "Minimum", "healthy"), _alb("UnHealthyHostCount", "Maximum", "unhealthy")),
                  "unhealthy-hosts"),
            Panel("GPU memory used (%)", (_gpu("memory_used", "Maximum"), _gpu("memory_total", "Maximum")), "gpu-memory",
                  ("100 * m0 / m1", "GPU memory used (%)")),
            Panel("GPU utilisation (%)", (_gpu("utilization_gpu", "Average", "average"),
                                          _gpu("utilization_gpu", "Maximum", "busiest GPU"))),
        ]
    out = [
        Panel("Model latency (microseconds)", (_sm("ModelLatency", "p50", "p50"), _sm("ModelLatency", "p90", "p90")), "latency-p90"),
        Panel("Error rate (5xx)", (_sm("Invocation5XXErrors", "Average", "5xx rate"),), "errors-5xx"),
        Panel("Error rate (4xx)", (_sm("Invocation4XXErrors", "Average", "4xx rate"),), "errors-4xx"),
    ]
    if mode == Mode.ASYNC:
        out.insert(1, Panel("Queue", (Metric(SAGEMAKER, "ApproximateBacklogSize", (ENDPOINT,), "Average", "queued"),
                                      Metric(SAGEMAKER, "ApproximateAgeOfOldestRequest", (ENDPOINT,), "Maximum", "oldest (s)")),
                            "backlog"))
    else:
        out.insert(1, Panel("Invocations (per 5 min)", (_sm("Invocations", "Sum", "invocations"),)))
    if mode == Mode.REALTIME:
        out.append(Panel("Invocations per instance (per 5 min)", (_sm("InvocationsPerInstance", "Sum", "per instance"),), "capacity"))
    if mode == Mode.SERVERLESS:
        out.append(Panel("Concurrency used", (_sm("ServerlessConcurrentExecutionsUtilization", "Maximum", "max"),), "concurrency"))
    else:
        out.append(Panel("GPU memory (% x GPUs)", (_sm_host("GPUMemoryUtilization", "Maximum", "max"),), "gpu-memory"))
        out.append(Panel("Instance utilisation (%)", (_sm_host("GPUUtilization", "Average", "GPU"),
                                                      _sm_host("CPUUtilization", "Average", "CPU"),
                                                      _sm_host("MemoryUtilization", "Maximum", "RAM")), "host-memory"))
    return out


def dashboard_body(*, stack: str, region: str, specs: Sequence[AlarmSpec], bindings: Mapping[str, str],
                   alarm_arns: Sequence[str], t: Targets) -> dict[str, Any]:
    """The CloudWatch dashboard (DashboardBody structure: a ``widgets`` array on a 24-column grid)."""
    thresholds = {s.key: s.threshold for s in specs}
    plan_line = [f"latency target **{t.latency_target_ms} ms**" if t.latency_target_ms else "no latency target recorded"]
    if t.requests_per_hour_per_instance:
        plan_line.append(f"**{t.requests_per_hour_per_instance} requests/hour** per instance")
    if t.mode != Mode.SERVERLESS:
        plan_line.append(f"up to **{t.instance_count}** instance(s)")
    widgets: list[dict[str, Any]] = [
        {"type": "text", "x": 0, "y": 0, "width": 12, "height": 3, "properties": {"markdown": (
            f"## llmdeploy stack `{stack}` ({t.mode}, {region})\n"
            f"Planned: {', '.join(plan_line)}. Thresholds and alarms come from the stack config "
            "`llmdeploy plan` wrote; `llmdeploy status --stack " + stack + "` prints this view with the month's cost.")}},
        {"type": "alarm", "x": 12, "y": 0, "width": 12, "height": 3,
         "properties": {"title": "Alarms", "alarms": list(alarm_arns)}},
    ]
    for i, panel in enumerate(panels(t.mode)):
        metrics: list[list[Any]] = []
        if panel.expression:
            expr, label = panel.expression
            metrics.append([{"expression": expr, "label": label, "id": "e0"}])
        for j, m in enumerate(panel.metrics):
            opts: dict[str, Any] = {"stat": m.stat, "label": m.label or m.name}
            if panel.expression:
                opts.update(id=f"m{j}", visible=False)
            metrics.append([m.namespace, m.name, *[x for d in m.dimensions for x in (d, bindings[d])], opts])
        props: dict[str, Any] = {"title": panel.title, "view": "timeSeries", "region": region, "period": PERIOD_S,
                                 "stat": panel.metrics[0].stat, "metrics": metrics}
        if panel.alarm_key in thresholds:
            props["annotations"] = {"horizontal": [{"label": f"alarm: {panel.alarm_key}", "value": thresholds[panel.alarm_key]}]}
        widgets.append({"type": "metric", "x": (i % 2) * 12, "y": 3 + (i // 2) * 6, "width": 12, "height": 6, "properties": props})
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


# -- the CloudWatch agent on the self-hosted fleet ---------------------------------------------------

AGENT_CONFIG_PATH = "/opt/aws/amazon-cloudwatch-agent/etc/llmdeploy-gpu.json"
AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"


def agent_config(stack: str, interval_s: int = 60) -> dict[str, Any]:
    """CloudWatch agent config: nvidia-smi GPU metrics only, tagged with the stack and rolled up fleet-wide.

    No EC2 placeholders (``${aws:InstanceId}``...) on purpose: those make the agent call ec2:DescribeTags, which
    the instance role does not grant. The raw series keep the agent's own host/index/name dimensions.
    """
    return {
        "metrics": {
            "namespace": GPU_NAMESPACE,
            "metrics_collected": {"nvidia_gpu": {
                "measurement": list(GPU_MEASUREMENTS),
                "metrics_collection_interval": interval_s,
                "append_dimensions": {STACK: stack},
            }},
            "aggregation_dimensions": [[STACK]],
        },
    }


def agent_setup_lines(config_json: str) -> list[str]:
    """Boot-script lines that install and start the agent (Amazon Linux 2023 ships it as a package).

    Monitoring must never stop the model from serving: the block runs after the container started and a
    failure only leaves a line in the boot log (the gpu-memory alarm then shows INSUFFICIENT_DATA).
    """
    return [
        "# GPU metrics for CloudWatch (llmdeploy status, the stack's dashboard and its gpu-memory alarm)",
        "{ dnf install -y -q amazon-cloudwatch-agent && "
        f"cat > {AGENT_CONFIG_PATH} <<'LLMDEPLOY_CWAGENT'",
        config_json,
        "LLMDEPLOY_CWAGENT",
        f"{AGENT_CTL} -a fetch-config -m ec2 -s -c file:{AGENT_CONFIG_PATH}; }} "
        '|| echo "llmdeploy: CloudWatch agent setup failed; GPU metrics will be missing" >&2',
    ]


def agent_config_from_user_data(script: str) -> dict[str, Any] | None:
    """The agent config a boot script installs (what ``preview --offline`` prices custom metrics from)."""
    match = re.search(r"<<'LLMDEPLOY_CWAGENT'\n(.*?)\nLLMDEPLOY_CWAGENT\n", script, re.S)
    return json.loads(match.group(1)) if match else None


def custom_metrics_of_agent(config: Mapping[str, Any], instances: int, gpus_per_instance: int) -> int:
    metrics = config.get("metrics", {})
    measurements = metrics.get("metrics_collected", {}).get("nvidia_gpu", {}).get("measurement", [])
    rollups = len(metrics.get("aggregation_dimensions", []))
    return len(measurements) * (instances * max(gpus_per_instance, 1) + rollups)


# -- llmdeploy status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusQuery:
    id: str  # GetMetricData query id (starts with a lower-case letter)
    metric: Metric
    scale: float = 1.0  # to the unit status prints (latency: milliseconds)


def status_queries(mode: Mode) -> list[StatusQuery]:
    """Last hour's requests, p50/p90 latency (ms) and error counts, from the metrics the alarms watch."""
    if mode == Mode.RESERVED:
        return [
            StatusQuery("requests", _alb("RequestCount", "Sum")),
            StatusQuery("p50", _alb("TargetResponseTime", "p50"), 1000.0),  # seconds -> ms
            StatusQuery("p90", _alb("TargetResponseTime", "p90"), 1000.0),
            StatusQuery("errors5xx", _alb("HTTPCode_Target_5XX_Count", "Sum")),
            StatusQuery("errors4xx", _alb("HTTPCode_Target_4XX_Count", "Sum")),
            StatusQuery("elb5xx", Metric(ALB, "HTTPCode_ELB_5XX_Count", (LOAD_BALANCER,), "Sum")),
        ]
    # Async endpoints publish no Invocations metric: every processed request has a ModelLatency sample.
    requests = _sm("ModelLatency", "SampleCount") if mode == Mode.ASYNC else _sm("Invocations", "Sum")
    return [
        StatusQuery("requests", requests),
        StatusQuery("p50", _sm("ModelLatency", "p50"), 1 / 1000),  # microseconds -> ms
        StatusQuery("p90", _sm("ModelLatency", "p90"), 1 / 1000),
        StatusQuery("errors5xx", _sm("Invocation5XXErrors", "Sum")),
        StatusQuery("errors4xx", _sm("Invocation4XXErrors", "Sum")),
    ]



@functools.cache
def alarm_keys() -> frozenset[str]:
    """Every alarm key llmdeploy may create, over all modes (``status`` tells its alarms from a longer stack name's)."""
    return frozenset(s.key for mode in Mode for s in alarm_specs(Targets(mode, 1, 1, 1, 1)))
