"""A deployed stack's health from CloudWatch, SageMaker and Elastic Load Balancing (``llmdeploy status``).

What is read, in order, and why:

1. ``DescribeAlarms`` with the prefix ``llmdeploy-<stack>-``: the stack's alarms (infra/monitoring.py names
   them so) with their states; their dimensions also name the endpoint or the load balancer, so no tag scan
   of the account is needed. Names whose suffix is not one of llmdeploy's alarm keys belong to another stack
   that shares the prefix (``prod`` and ``prod-eu``) and are left out.
2. The endpoint: SageMaker ``DescribeEndpoint`` (status, instance count; its tags must name the stack), or for
   the self-hosted fleet ``DescribeLoadBalancers`` + ``DescribeTargetHealth`` (healthy servers).
3. ``GetMetricData`` over the last whole hour, one period of 3600 s: requests, p50/p90 latency, 5xx/4xx
   counts (``llmdeploy.monitoring.status_queries``: the metrics the alarms watch).

IAM: ``IAM_ACTIONS`` below.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from llmdeploy import monitoring as mon
from llmdeploy.aws.clients import client, cloud_error
from llmdeploy.enums import Mode
from llmdeploy.errors import CloudError
from llmdeploy.tags import STACK as STACK_TAG
from llmdeploy.tags import tag_dict

# Every call this module makes, as IAM actions (README "Operating" lists them; tests/aws checks the calls).
IAM_ACTIONS = ("cloudwatch:DescribeAlarms", "cloudwatch:GetMetricData", "sagemaker:DescribeEndpoint", "sagemaker:ListTags",
               "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTargetGroups",
               "elasticloadbalancing:DescribeTargetHealth")


@dataclass
class AlarmState:
    key: str
    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str
    since: str  # StateUpdatedTimestamp, ISO 8601 UTC
    threshold: float | None


@dataclass
class EndpointState:
    kind: str  # "SageMaker endpoint" | "load balancer"
    name: str
    status: str
    instances: int | None  # running (SageMaker CurrentInstanceCount) or healthy targets
    desired: int | None  # DesiredInstanceCount, or registered targets
    detail: str = ""


@dataclass
class LastHour:
    start: str
    end: str
    requests: float | None
    p50_ms: float | None
    p90_ms: float | None
    errors_5xx: float | None
    errors_4xx: float | None
    load_balancer_5xx: float | None = None

    @property
    def error_rate(self) -> float | None:
        """Requests the model servers answered 5xx (what the errors-5xx alarm watches). The load balancer's own
        5xx (no healthy server, say) are counted apart: its RequestCount leaves them out."""
        if not self.requests:
            return None
        return (self.errors_5xx or 0) / self.requests


@dataclass
class Health:
    stack: str
    region: str
    mode: Mode
    endpoint: EndpointState
    last_hour: LastHour
    alarms: list[AlarmState] = field(default_factory=list)
    dashboard: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_hour"]["error_rate"] = self.last_hour.error_rate
        return data


def _call(doing: str, fn, **kwargs):
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; all become one line
        if isinstance(exc, CloudError):
            raise
        raise cloud_error(exc, doing) from None


def stack_alarms(stack: str, region: str) -> list[dict]:
    """The stack's metric alarms (DescribeAlarms entries), llmdeploy's keys only."""
    cw = client("cloudwatch", region)
    prefix = mon.alarm_name(stack, "")
    keys = mon.alarm_keys()
    alarms, token = [], None
    while True:
        kwargs = {"AlarmNamePrefix": prefix, "AlarmTypes": ["MetricAlarm"], **({"NextToken": token} if token else {})}
        page = _call("reading the stack's CloudWatch alarms (cloudwatch:DescribeAlarms)", cw.describe_alarms, **kwargs)
        alarms += [a for a in page.get("MetricAlarms", []) if a["AlarmName"][len(prefix):] in keys]
        token = page.get("NextToken")
        if not token:
            return alarms


def dimensions_of(alarms: list[dict]) -> dict[str, str]:
    """Dimension name -> value over the alarms' metrics (single-metric and metric-math alarms)."""
    out: dict[str, str] = {}
    for alarm in alarms:
        dims = list(alarm.get("Dimensions") or [])
        for query in alarm.get("Metrics") or []:
            dims += query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", [])
        for d in dims:
            out.setdefault(d["Name"], d["Value"])
    return out


def alarm_states(stack: str, alarms: list[dict]) -> list[AlarmState]:
    prefix = mon.alarm_name(stack, "")
    out = []
    for a in sorted(alarms, key=lambda a: a["AlarmName"]):
        since = a.get("StateUpdatedTimestamp")
        out.append(AlarmState(a["AlarmName"][len(prefix):], a["AlarmName"], a.get("StateValue", "?"),
                              a.get("StateReason", ""), since.astimezone(dt.UTC).isoformat() if since else "",
                              a.get("Threshold")))
    return out


def _sagemaker_endpoint(stack: str, region: str, name: str) -> EndpointState:
    sm = client("sagemaker", region)
    desc = _call(f"describing SageMaker endpoint {name!r} (sagemaker:DescribeEndpoint)", sm.describe_endpoint, EndpointName=name)
    tags = tag_dict(_call("reading its tags (sagemaker:ListTags)", sm.list_tags, ResourceArn=desc["EndpointArn"]).get("Tags"))
    if tags.get(STACK_TAG) != stack:
        raise CloudError(f"the alarms of stack {stack!r} watch SageMaker endpoint {name!r}, which is tagged "
                         f"{STACK_TAG}={tags.get(STACK_TAG)!r}, not {stack!r}; check the alarms (llmdeploy-{stack}-*).")
    variants = desc.get("ProductionVariants") or [{}]
    v = variants[0]
    serverless = v.get("CurrentServerlessConfig")
    detail = (f"serverless, {serverless.get('MemorySizeInMB')} MB, max concurrency {serverless.get('MaxConcurrency')}"
              if serverless else "")
    if desc.get("FailureReason"):
        detail = desc["FailureReason"]
    return EndpointState("SageMaker endpoint", name, desc.get("EndpointStatus", "?"),
                         None if serverless else v.get("CurrentInstanceCount"),
                         None if serverless else v.get("DesiredInstanceCount"), detail)


def _load_balancer(region: str, lb_suffix: str, tg_suffix: str) -> EndpointState:
    elb = client("elbv2", region)
    lb_name, tg_name = lb_suffix.split("/")[1], tg_suffix.split("/")[1]
    lbs = _call(f"describing load balancer {lb_name!r} (elasticloadbalancing:DescribeLoadBalancers)",
                elb.describe_load_balancers, Names=[lb_name]).get("LoadBalancers", [])
    tgs = _call(f"describing target group {tg_name!r} (elasticloadbalancing:DescribeTargetGroups)",
                elb.describe_target_groups, Names=[tg_name]).get("TargetGroups", [])
    if not lbs or not tgs:
        raise CloudError(f"load balancer {lb_name!r} or target group {tg_name!r} named by the stack's alarms no longer exists.")
    health = _call("reading target health (elasticloadbalancing:DescribeTargetHealth)", elb.describe_target_health,
                   TargetGroupArn=tgs[0]["TargetGroupArn"]).get("TargetHealthDescriptions", [])
    states = [h.get("TargetHealth", {}).get("State", "?") for h in health]
    others = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states) - {"healthy"}))
    return EndpointState("load balancer", lb_name, lbs[0].get("State", {}).get("Code", "?"), states.count("healthy"),
                         len(states), others if states else "no servers registered")


def last_hour(mode: Mode, region: str, dimensions: dict[str, str], now: dt.datetime) -> LastHour:
    """One 3600 s period ending at ``now`` (to the minute): CloudWatch returns one datapoint per query."""
    end = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    start = end - dt.timedelta(hours=1)
    queries = mon.status_queries(mode)
    missing = sorted({d for q in queries for d in q.metric.dimensions} - set(dimensions))
    if missing:
        raise CloudError(f"the stack's alarms do not name its {', '.join(missing)}; redeploy it ('llmdeploy deploy').")
    request = [{"Id": q.id, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": q.metric.namespace, "MetricName": q.metric.name,
                   "Dimensions": q.metric.dimension_list(dimensions)},
        "Period": 3600, "Stat": q.metric.stat}} for q in queries]
    cw = client("cloudwatch", region)
    values: dict[str, float | None] = {}
    token = None
    while True:
        page = _call("reading the last hour's metrics (cloudwatch:GetMetricData)", cw.get_metric_data,
                     MetricDataQueries=request, StartTime=start, EndTime=end, ScanBy="TimestampDescending",
                     **({"NextToken": token} if token else {}))
        for r in page.get("MetricDataResults", []):
            if r.get("Values"):
                values[r["Id"]] = r["Values"][0]
        token = page.get("NextToken")
        if not token:
            break
    scaled = {q.id: None if (value := values.get(q.id)) is None else value * q.scale for q in queries}
    counts = ("requests", "errors5xx", "errors4xx", "elb5xx")
    # A count metric with no datapoint in the hour means none happened (ALB reports non-zero values only).
    for key in counts:
        if key in scaled and scaled[key] is None:
            scaled[key] = 0.0
    return LastHour(start.isoformat(), end.isoformat(), scaled["requests"], scaled["p50"], scaled["p90"],
                    scaled["errors5xx"], scaled["errors4xx"], scaled.get("elb5xx"))


def health(stack: str, region: str, mode: Mode, *, now: dt.datetime) -> Health:
    alarms = stack_alarms(stack, region)
    if not alarms:
        raise CloudError(f"stack {stack!r} has no llmdeploy alarms in {region}: it is not deployed there, or was "
                         f"deployed before llmdeploy created alarms.", hint=f"Deploy it: llmdeploy deploy --stack {stack}.")
    dims = dimensions_of(alarms)
    if mode == Mode.RESERVED:
        if mon.LOAD_BALANCER not in dims or mon.TARGET_GROUP not in dims:
            raise CloudError(f"the alarms of stack {stack!r} name no load balancer; is its mode really '{Mode.RESERVED}'?")
        endpoint = _load_balancer(region, dims[mon.LOAD_BALANCER], dims[mon.TARGET_GROUP])
    else:
        if mon.ENDPOINT not in dims:
            raise CloudError(f"the alarms of stack {stack!r} name no SageMaker endpoint; is its mode really '{mode}'?")
        endpoint = _sagemaker_endpoint(stack, region, dims[mon.ENDPOINT])
    return Health(stack, region, mode, endpoint, last_hour(mode, region, dims, now), alarm_states(stack, alarms),
                  mon.dashboard_name(stack))
