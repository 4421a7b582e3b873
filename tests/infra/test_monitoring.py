"""Monitoring as code, every mode under Pulumi mocks: a dashboard, the alarms with thresholds from the plan, a topic.

Each alarm the program registers is turned back into the PutMetricAlarm request it stands for and checked
against botocore's CloudWatch model (members, types, lengths, enums) plus the rules its documentation states
(Period 10/20/30 or a multiple of 60, Period x EvaluationPeriods within a day below one-hour periods,
Statistic xor ExtendedStatistic, percentiles as pNN). The dashboard body is checked against the documented
Dashboard Body Structure (widgets array, 24-column grid, metric rows, alarm widget).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import subprocess

import pytest

from llmdeploy import monitoring as mon
from llmdeploy.errors import ConfigError, LlmdeployError
from llmdeploy.infra.offline_preview import config_values, make_mocks, run_program
from llmdeploy.tags import base_tags

from .aws_requests import put_metric_alarm
from .mocks import COST_CENTER, MODES, OWNER, of_type, one, run, stack_config

# What a plan records (llmdeploy.plan.stack_config_for): a latency target and each instance's capacity.
PLANNED = dict(alarm_latency_ms=2500, usage_requests_per_hour_per_instance=1800)
EXPECTED_KEYS = {
    "realtime": {"latency-p90", "errors-5xx", "errors-4xx", "capacity", "gpu-memory", "host-memory"},
    "async": {"latency-p90", "errors-5xx", "errors-4xx", "backlog", "gpu-memory", "host-memory"},
    "serverless": {"latency-p90", "errors-5xx", "errors-4xx", "concurrency"},
    "reserved": {"latency-p90", "errors-5xx", "errors-4xx", "unhealthy-hosts", "capacity", "gpu-memory"},
}
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"


@functools.cache
def planned(mode: str, **extra):
    overrides = {**PLANNED, **extra}
    if mode == "serverless":
        overrides["usage_requests_per_hour_per_instance"] = 0  # no instances: plan records no per-instance capacity
    return run(stack_config(mode, **overrides), stack=f"mon-{mode}")


def monitoring_alarms(mocks) -> dict[str, object]:
    """key -> alarm resource, for the alarms named llmdeploy-<stack>-<key>."""
    out = {}
    for alarm in of_type(mocks, ALARM):
        match = re.fullmatch(r"llmdeploy-mon-\w+-(.+)", alarm.inputs.get("name", ""))
        if match:
            out[match.group(1)] = alarm
    return out


# -- the request each alarm stands for, checked against botocore's model -----------------------------------


def put_metric_alarm_request(inputs: dict) -> dict:
    """pulumi-aws MetricAlarm inputs (wire names) -> the PutMetricAlarm request the provider sends."""
    return put_metric_alarm(inputs, inputs["name"])


@functools.cache
def _cloudwatch_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("cloudwatch")


def validation_errors(request: dict) -> list[str]:
    from botocore.validate import ParamValidator

    model = _cloudwatch_model()
    shape = model.operation_model("PutMetricAlarm").input_shape
    report = ParamValidator().validate(request, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    enums = {k: shape.members[k].enum for k in ("ComparisonOperator", "Statistic") if shape.members[k].enum}
    errors += [f"{k} {request[k]!r} not in {v}" for k, v in enums.items() if k in request and request[k] not in v]
    # Rules PutMetricAlarm's documentation states and the model cannot express.
    if request.get("TreatMissingData") not in (None, "breaching", "notBreaching", "ignore", "missing"):
        errors.append(f"TreatMissingData {request['TreatMissingData']!r}")
    if request.get("EvaluateLowSampleCountPercentile") not in (None, "evaluate", "ignore"):
        errors.append("EvaluateLowSampleCountPercentile")
    periods = [request["Period"]] if "Period" in request else [q["MetricStat"]["Period"] for q in request.get("Metrics", [])
                                                               if "MetricStat" in q]
    for period in periods:
        if not (period in (10, 20, 30) or period % 60 == 0):
            errors.append(f"Period {period} is not 10, 20, 30 or a multiple of 60")
        limit = 86_400 if period < 3600 else 604_800
        if period * request["EvaluationPeriods"] > limit:
            errors.append(f"Period x EvaluationPeriods {period * request['EvaluationPeriods']} > {limit}")
        if period < 60:
            errors.append("high-resolution alarm: priced differently from the catalog's standard alarms")
    if "MetricName" in request:
        if ("Statistic" in request) == ("ExtendedStatistic" in request):
            errors.append("exactly one of Statistic and ExtendedStatistic")
        if "ExtendedStatistic" in request and not re.fullmatch(r"p\d{1,2}(\.\d+)?", request["ExtendedStatistic"]):
            errors.append(f"ExtendedStatistic {request['ExtendedStatistic']!r}")
        if "Metrics" in request:
            errors.append("MetricName and Metrics together")
    else:
        queries = request.get("Metrics", [])
        if sum(1 for q in queries if q["ReturnData"]) != 1:
            errors.append("a metric-math alarm returns exactly one query")
        if any(not re.fullmatch(r"[a-z][A-Za-z0-9_]*", q["Id"]) for q in queries):
            errors.append("query ids start with a lower-case letter")
    if request.get("DatapointsToAlarm", 1) > request.get("EvaluationPeriods", 1):
        errors.append("DatapointsToAlarm > EvaluationPeriods")
    return errors


@pytest.mark.parametrize("mode", MODES)
def test_every_alarm_is_a_valid_put_metric_alarm_request(mode):
    alarms = monitoring_alarms(planned(mode))
    assert set(alarms) == EXPECTED_KEYS[mode]
    for key, alarm in alarms.items():
        request = put_metric_alarm_request(alarm.inputs)
        assert not validation_errors(request), f"{key}: {validation_errors(request)}"
        assert request["AlarmActions"] and request["OKActions"] == request["AlarmActions"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gets_one_dashboard_and_its_alarms_notify_the_stacks_topic(mode):
    mocks = planned(mode)
    dashboard = one(mocks, DASHBOARD)
    assert dashboard.inputs["dashboardName"] == f"llmdeploy-mon-{mode}"
    topic = next(t for t in of_type(mocks, "aws:sns/topic:Topic") if t.name == "monitor-alarms")
    assert topic.inputs["tags"] == base_tags(stack=f"mon-{mode}", mode=mode, owner=OWNER, cost_center=COST_CENTER)
    for key, alarm in monitoring_alarms(mocks).items():
        assert alarm.inputs["alarmActions"] == [topic.outputs["arn"]], key
        assert alarm.inputs["tags"] == topic.inputs["tags"], f"{key} is tagged like the rest of the stack"
    assert mocks.outputs["dashboard_url"].endswith(f"#dashboards/dashboard/llmdeploy-mon-{mode}")
    assert mocks.outputs["alarm_topic_arn"] == topic.outputs["arn"]


# -- thresholds come from the plan ----------------------------------------------------------------------


def _threshold(mocks, key):
    return monitoring_alarms(mocks)[key].inputs["threshold"]


@pytest.mark.parametrize("mode, min_instances", [(m, None) for m in MODES] + [("async", 1)])
def test_the_alarm_metrics_the_program_creates_are_what_plan_and_status_price(mode, min_instances):
    """Every alarm of the stack (the monitoring component's and the async scale-from-zero alarm) is billed per metric
    it reads; ``billable_for`` (plan's and status's figure) must count the same. An async stack kept warm
    (minInstances 1) has no scale-from-zero alarm."""
    from llmdeploy.catalog import load_catalog

    overrides = {**PLANNED, **({} if mode != "serverless" else {"usage_requests_per_hour_per_instance": 0})}
    if min_instances is not None:
        overrides["min_instances"] = min_instances
    config = stack_config(mode, **overrides)
    mocks = run(config, stack=f"bill-{mode}-{min_instances}")
    reads = sum(1 if a.inputs.get("metricName") else sum(1 for q in a.inputs["metricQueries"] if q.get("metric"))
                for a in of_type(mocks, ALARM))
    assert reads == mon.billable_for(config, load_catalog()).alarm_metrics


@pytest.mark.parametrize("mode", ["realtime", "async", "serverless"])
def test_sagemaker_latency_alarm_is_p90_model_latency_against_the_plans_target_in_microseconds(mode):
    alarm = monitoring_alarms(planned(mode))["latency-p90"].inputs
    assert (alarm["namespace"], alarm["metricName"], alarm["extendedStatistic"]) == ("AWS/SageMaker", "ModelLatency", "p90")
    assert alarm["threshold"] == 2500 * 1000, "ModelLatency is in microseconds: 2500 ms = 2,500,000"
    assert set(alarm["dimensions"]) == {"EndpointName", "VariantName"}
    assert alarm["evaluateLowSampleCountPercentiles"] == "ignore"
    assert _threshold(planned(mode, alarm_latency_ms=800), "latency-p90") == 800 * 1000, "it follows the plan"


def test_reserved_latency_alarm_is_the_load_balancers_p90_target_response_time_in_seconds():
    alarm = monitoring_alarms(planned("reserved"))["latency-p90"].inputs
    assert (alarm["namespace"], alarm["metricName"], alarm["extendedStatistic"]) == (
        "AWS/ApplicationELB", "TargetResponseTime", "p90")
    assert alarm["threshold"] == 2.5, "TargetResponseTime is in seconds"
    lb = one(planned("reserved"), "aws:lb/loadBalancer:LoadBalancer").outputs["arnSuffix"]
    tg = one(planned("reserved"), "aws:lb/targetGroup:TargetGroup").outputs["arnSuffix"]
    assert alarm["dimensions"] == {"LoadBalancer": lb, "TargetGroup": tg}, "dimensions are the ARNs' suffixes"


def test_capacity_alarms_follow_the_plans_requests_per_instance():
    realtime = monitoring_alarms(planned("realtime"))["capacity"].inputs
    assert (realtime["metricName"], realtime["statistic"], realtime["period"]) == ("InvocationsPerInstance", "Sum", 300)
    assert realtime["threshold"] == 1800 * 300 / 3600, "1800 requests/hour per instance = 150 per 5-minute period"
    reserved = monitoring_alarms(planned("reserved"))["capacity"].inputs
    assert (reserved["metricName"], reserved["statistic"]) == ("RequestCountPerTarget", "Sum")
    assert reserved["threshold"] == 150
    assert _threshold(planned("realtime", usage_requests_per_hour_per_instance=720), "capacity") == 60


def test_async_backlog_alarm_is_what_the_full_fleet_clears_in_the_allowed_wait():
    from llmdeploy.assumptions import load_assumptions

    alarm = monitoring_alarms(planned("async"))["backlog"].inputs
    assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"].keys()) == (
        "AWS/SageMaker", "ApproximateBacklogSize", {"EndpointName"})
    wait = load_assumptions().monitoring.async_max_wait_s
    count = stack_config("async").instance_count
    assert alarm["threshold"] == -(-count * 1800 * wait // 3600)


def test_gpu_memory_alarms_scale_with_the_gpus_and_read_the_agent_on_the_fleet():
    from llmdeploy.assumptions import load_assumptions

    fraction = load_assumptions().monitoring.gpu_memory_fraction
    sm = monitoring_alarms(planned("realtime"))["gpu-memory"].inputs
    assert (sm["namespace"], sm["metricName"]) == ("/aws/sagemaker/Endpoints", "GPUMemoryUtilization")
    assert sm["threshold"] == pytest.approx(fraction * 100), "ml.g4dn.xlarge: one T4, 0-100 %"
    four = monitoring_alarms(planned("realtime", instance_type="ml.g4dn.12xlarge"))["gpu-memory"].inputs
    assert four["threshold"] == pytest.approx(fraction * 400), "GPUMemoryUtilization runs 0-100 x GPUs (4 on g4dn.12xlarge)"
    fleet = monitoring_alarms(planned("reserved"))["gpu-memory"].inputs
    used, total = (q["metric"] for q in fleet["metricQueries"] if "metric" in q)
    assert {used["metricName"], total["metricName"]} == {"nvidia_smi_memory_used", "nvidia_smi_memory_total"}
    assert used["namespace"] == mon.GPU_NAMESPACE and used["dimensions"] == {"Stack": "mon-reserved"}
    assert fleet["treatMissingData"] == "missing", "a silent agent shows as INSUFFICIENT_DATA, not OK"


@pytest.mark.parametrize("mode", ["realtime", "reserved"])
def test_plan_to_alarms_end_to_end(mode):
    """make_plan -> stack config -> program: the alarms hold the stack to the plan's own figures."""
    from llmdeploy.catalog import load_catalog
    from llmdeploy.models import load_model_config
    from llmdeploy.plan import Traffic, make_plan, stack_config_for

    plan = make_plan(load_model_config("flan-t5-xl"), cat=load_catalog(), mode=mode, traffic=Traffic(latency_target_s=4.0))
    alarms = monitoring_alarms(run(stack_config_for(plan, owner=OWNER, cost_center=COST_CENTER), stack=f"mon-{mode}"))
    latency = alarms["latency-p90"].inputs["threshold"]
    assert latency == (4.0 * 1_000_000 if mode == "realtime" else 4.0), "the plan's 4 s target, in the metric's unit"
    per_period = round(plan.choice.requests_per_s_per_instance * 3600) * 300 / 3600
    assert alarms["capacity"].inputs["threshold"] == pytest.approx(per_period, abs=1e-3), (
        "the requests one instance serves per 5 minutes, as the plan sized it")


def test_without_a_recorded_target_there_is_no_latency_alarm_and_no_guess():
    mocks = run(stack_config("realtime"), stack="mon-none")  # a stack config written before plan recorded them
    keys = {k for k in (re.fullmatch(r"llmdeploy-mon-none-(.+)", a.inputs["name"]) for a in of_type(mocks, ALARM)) if k}
    assert {k.group(1) for k in keys} == {"errors-5xx", "errors-4xx", "gpu-memory", "host-memory"}


# -- the topic -----------------------------------------------------------------------------------------


def test_alarm_email_subscribes_to_the_new_topic():
    mocks = planned("realtime", alarm_email="oncall@example.com")
    sub = one(mocks, "aws:sns/topicSubscription:TopicSubscription")
    topic = next(t for t in of_type(mocks, "aws:sns/topic:Topic") if t.name == "monitor-alarms")
    assert (sub.inputs["protocol"], sub.inputs["endpoint"], sub.inputs["topic"]) == ("email", "oncall@example.com", topic.outputs["arn"])


def test_an_existing_topic_replaces_the_new_one():
    arn = "arn:aws:sns:us-east-1:123456789012:oncall"
    mocks = planned("reserved", alarm_topic_arn=arn)
    assert not [t for t in of_type(mocks, "aws:sns/topic:Topic") if t.name == "monitor-alarms"]
    assert all(a.inputs["alarmActions"] == [arn] for a in monitoring_alarms(mocks).values())
    assert mocks.outputs["alarm_topic_arn"] == arn


@pytest.mark.parametrize("setting, value, expected", [
    ("alarmEmail", "oncall-at-example.com", "not an email address"),
    ("alarmTopicArn", "arn:aws:sns:eu-west-1:123456789012:oncall", "notify topics in their own region"),
    ("alarmTopicArn", "oncall", "is not an SNS topic ARN"),
    ("alarmLatencyMs", "-5", "must not be negative"),
])
def test_bad_alarm_settings_stop_before_anything_is_created(setting, value, expected):
    values = config_values(stack_config("realtime"))
    values[f"llmdeploy:{setting}"] = value
    mocks = make_mocks()
    with pytest.raises(LlmdeployError) as err:
        run_program(values, stack="bad", mocks=mocks)
    assert mocks.resources == [] and isinstance(err.value, ConfigError)
    assert expected in str(err.value) and value in str(err.value) and "\n" not in str(err.value)


# -- the dashboard -------------------------------------------------------------------------------------

WIDGET_TYPES = {"metric", "text", "alarm", "log", "explorer"}


def dashboard_errors(body: dict) -> list[str]:
    """Dashboard Body Structure and Syntax (CloudWatch API reference): the rules a PutDashboard body must keep."""
    errors = []
    widgets = body.get("widgets")
    if not isinstance(widgets, list) or len(widgets) > 500:
        return ["a dashboard needs a widgets array of at most 500"]
    cells = set()
    for i, w in enumerate(widgets):
        where = f"widget {i}"
        if w.get("type") not in WIDGET_TYPES:
            errors.append(f"{where}: type {w.get('type')!r}")
        x, y, width, height = (w.get(k) for k in ("x", "y", "width", "height"))
        if not (0 <= x <= 23 and 1 <= width <= 24 and x + width <= 24 and 1 <= height <= 1000 and y >= 0):
            errors.append(f"{where}: off the 24-column grid ({x}, {y}, {width}x{height})")
        covered = {(cx, cy) for cx in range(x, x + width) for cy in range(y, y + height)}
        if covered & cells:
            errors.append(f"{where}: overlaps another widget")
        cells |= covered
        props = w.get("properties", {})
        if w["type"] == "metric":
            rows = props.get("metrics", [])
            if not props.get("region") or not 1 <= len(rows) <= 100:
                errors.append(f"{where}: a metric widget needs a region and 1-100 metrics")
            ids = set()
            for row in rows:
                if isinstance(row[0], dict):  # a math expression: [{expression, id, label}]
                    if "expression" not in row[0] or not re.fullmatch(r"[a-z]\w*", row[0].get("id", "")):
                        errors.append(f"{where}: expression row {row}")
                    continue
                opts = row[-1] if isinstance(row[-1], dict) else {}
                names = row[:-1] if opts else row
                if len(names) < 2 or len(names) % 2 or not all(isinstance(n, str) and n for n in names):
                    errors.append(f"{where}: row {row} is not [namespace, name, dimension, value, ..., options]")
                if opts.get("id"):
                    ids.add(opts["id"])
            for row in rows:
                if isinstance(row[0], dict):
                    missing = set(re.findall(r"\b(m\d+)\b", row[0]["expression"])) - ids
                    if missing:
                        errors.append(f"{where}: expression reads undefined ids {missing}")
        if w["type"] == "alarm" and not 1 <= len(props.get("alarms", [])) <= 100:
            errors.append(f"{where}: an alarm widget lists 1-100 alarm ARNs")
        if w["type"] == "text" and not props.get("markdown"):
            errors.append(f"{where}: a text widget needs markdown")
    return errors


@pytest.mark.parametrize("mode", MODES)
def test_dashboard_body_is_valid_and_shows_the_stacks_metrics_and_alarms(mode):
    mocks = planned(mode)
    body = json.loads(one(mocks, DASHBOARD).inputs["dashboardBody"])
    assert not dashboard_errors(body), dashboard_errors(body)
    alarm_widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert set(alarm_widget["properties"]["alarms"]) == {a.outputs["arn"] for a in monitoring_alarms(mocks).values()}
    rows = [r for w in body["widgets"] if w["type"] == "metric" for r in w["properties"]["metrics"] if isinstance(r[0], str)]
    if mode == "reserved":
        lb = one(mocks, "aws:lb/loadBalancer:LoadBalancer").outputs["arnSuffix"]
        assert all(lb in r for r in rows if r[0] == "AWS/ApplicationELB"), "graphs read this stack's load balancer"
    else:
        name = one(mocks, "aws:sagemaker/endpoint:Endpoint").outputs["name"]
        assert all(name in r for r in rows if r[0] in ("AWS/SageMaker", "/aws/sagemaker/Endpoints")), "and this endpoint"
    annotated = {a["label"]: a["value"] for w in body["widgets"] for a in w["properties"].get("annotations", {}).get("horizontal", [])}
    assert annotated["alarm: latency-p90"] == _threshold(mocks, "latency-p90"), "the graph draws the alarm's line"


def test_dashboard_checker_catches_what_the_docs_forbid():
    assert dashboard_errors({"widgets": [{"type": "metric", "x": 20, "y": 0, "width": 12, "height": 6,
                                          "properties": {"metrics": [["AWS/EC2"]], "region": "us-east-1"}}]})
    assert dashboard_errors({"widgets": [{"type": "alarm", "x": 0, "y": 0, "width": 6, "height": 3, "properties": {}}]})
    assert dashboard_errors({})


# -- the self-hosted fleet's GPU metrics ------------------------------------------------------------------

# The CloudWatch agent's nvidia_gpu measurements (CloudWatch user guide, "Collect NVIDIA GPU metrics").
AGENT_MEASUREMENTS = {"utilization_gpu", "temperature_gpu", "power_draw", "utilization_memory", "fan_speed", "memory_total",
                      "memory_used", "memory_free", "pcie_link_gen_current", "pcie_link_width_current",
                      "encoder_stats_session_count", "encoder_stats_average_fps", "encoder_stats_average_latency",
                      "clocks_current_graphics", "clocks_current_sm", "clocks_current_memory", "clocks_current_video"}


def _user_data(mocks) -> str:
    return base64.b64decode(one(mocks, "aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]).decode()


def test_reserved_user_data_installs_the_agent_after_the_model_server_and_never_fails_the_boot():
    script = _user_data(planned("reserved"))
    assert script.index("docker run") < script.index("amazon-cloudwatch-agent"), "serving first, monitoring after"
    assert "dnf install -y -q amazon-cloudwatch-agent" in script
    assert f"amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:{mon.AGENT_CONFIG_PATH}" in script
    assert '|| echo "llmdeploy: CloudWatch agent setup failed' in script, "a failed agent install must not stop the boot"
    config = mon.agent_config_from_user_data(script)
    gpu = config["metrics"]["metrics_collected"]["nvidia_gpu"]
    assert set(gpu["measurement"]) <= AGENT_MEASUREMENTS and set(mon.GPU_MEASUREMENTS) == set(gpu["measurement"])
    assert config["metrics"]["namespace"] == mon.GPU_NAMESPACE
    assert gpu["append_dimensions"] == {"Stack": "mon-reserved"} and config["metrics"]["aggregation_dimensions"] == [["Stack"]]
    assert "${aws:" not in json.dumps(config), "EC2 placeholders would need ec2:DescribeTags, which the role lacks"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_reserved_user_data_is_valid_bash(tmp_path):
    path = tmp_path / "user-data.sh"
    path.write_text(_user_data(planned("reserved")))
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sagemaker_modes_install_no_agent():
    for mode in ("realtime", "async", "serverless"):
        assert not of_type(planned(mode), "aws:ec2/launchTemplate:LaunchTemplate")


def test_request_checker_catches_what_the_model_and_docs_forbid():
    good = put_metric_alarm_request(monitoring_alarms(planned("realtime"))["latency-p90"].inputs)
    assert not validation_errors(good)
    for change in ({"Period": 45}, {"Statistic": "Average"}, {"ComparisonOperator": "Above"}, {"Threshold": "high"},
                   {"AlarmName": ""}, {"ExtendedStatistic": "median"}, {"TreatMissingData": "zero"},
                   {"Period": 300, "EvaluationPeriods": 289}, {"DatapointsToAlarm": 4}):
        assert validation_errors({**good, **change}), f"{change} must be rejected"
