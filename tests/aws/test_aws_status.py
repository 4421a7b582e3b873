"""`llmdeploy status` against a real moto server: CloudWatch alarms and metrics, SageMaker / ELB, Cost Explorer.

The stack's alarms are created here with the very PutMetricAlarm requests the Pulumi program sends
(``llmdeploy.monitoring.put_metric_alarm_request``, through real boto3, so botocore validates each one against
the CloudWatch model); metrics are published with PutMetricData; Cost Explorer's answer is queued through moto's
``/moto-api/static/ce/cost-and-usage-results`` and the tag's activation set with UpdateCostAllocationTagsStatus
(moto_plus.py adds the tag calls and percentiles moto lacks).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request

import aws_scenario as scn
import pytest
from click.testing import CliRunner

from llmdeploy import monitoring as mon
from llmdeploy.aws import cost_explorer
from llmdeploy.aws import monitoring as aws_mon
from llmdeploy.cli.main import cli
from llmdeploy.stackconfig import StackConfig, write_stack_file
from llmdeploy.tags import base_tags

STACK = "prod"
ENDPOINT = "prod-endpoint"
REGION = "us-east-1"
TOPIC = "arn:aws:sns:us-east-1:123456789012:oncall"
# IAM prefix of each botocore service id, to compare the calls made with the documented IAM actions.
IAM_PREFIX = {"cloudwatch": "cloudwatch", "sagemaker": "sagemaker", "elastic-load-balancing-v2": "elasticloadbalancing",
              "cost-explorer": "ce"}


def realtime_config(**overrides) -> StackConfig:
    return StackConfig(**{**dict(mode="realtime", region=REGION, instance_type="ml.g4dn.xlarge", instance_count=2,
                                 min_instances=1, alarm_latency_ms=2000, usage_requests_per_hour_per_instance=1260,
                                 owner="ml-platform"), **overrides})


def reserved_config() -> StackConfig:
    return StackConfig(mode="reserved", region=REGION, instance_type="g4dn.xlarge", instance_count=2, min_instances=2,
                       term="on-demand", alarm_latency_ms=2000, usage_requests_per_hour_per_instance=1260)


@pytest.fixture
def calls(monkeypatch):
    """Every AWS call llmdeploy makes: [(IAM action, params)]."""
    from llmdeploy.aws import clients

    seen: list[tuple[str, dict]] = []
    real = clients.new_session

    def record(event_name, params, **_):
        _, service, operation = event_name.split(".")
        seen.append((f"{IAM_PREFIX.get(service, service)}:{operation}", dict(params)))

    def new_session(region=None):
        session = real(region)
        session.events.register("before-parameter-build", record)
        return session

    monkeypatch.setattr(clients, "new_session", new_session)
    clients.reset()
    return seen


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)


def put_alarms(boto, config: StackConfig, bindings: dict[str, str], *, stack: str = STACK) -> list[str]:
    """The stack's alarms, exactly as infra/monitoring.py requests them."""
    from llmdeploy.catalog import load_catalog

    cw = boto("cloudwatch")
    names = []
    for spec in mon.alarm_specs(mon.targets_for(config, load_catalog())):
        request = mon.put_metric_alarm_request(spec, stack=stack, bindings=bindings, actions=[TOPIC],
                                               tags=base_tags(stack=stack, mode=config.mode, owner="o", cost_center="c"))
        cw.put_metric_alarm(**request)
        names.append(request["AlarmName"])
    return names


def put_values(boto, namespace: str, name: str, dims: dict[str, str], values, *, minutes_ago: int = 30) -> None:
    when = _now() - dt.timedelta(minutes=minutes_ago)
    data = [{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()], "Value": float(v),
             "Timestamp": when} for v in values]
    cw = boto("cloudwatch")
    for i in range(0, len(data), 20):
        cw.put_metric_data(Namespace=namespace, MetricData=data[i:i + 20])


def queue_cost(moto_server: str, amount: str, *, estimated: bool = True) -> None:
    """What GetCostAndUsage answers next (moto's documented way to set Cost Explorer results)."""
    first = dt.date.today().replace(day=1).isoformat()
    body = {"results": [{"ResultsByTime": [{"TimePeriod": {"Start": first, "End": dt.date.today().isoformat()},
                                            "Total": {"AmortizedCost": {"Amount": amount, "Unit": "USD"}},
                                            "Groups": [], "Estimated": estimated}]}]}
    request = urllib.request.Request(f"{moto_server}/moto-api/static/ce/cost-and-usage-results", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def activate_tag(boto, status: str = "Active") -> None:
    boto("ce").update_cost_allocation_tags_status(CostAllocationTagsStatus=[{"TagKey": "llmdeploy:stack", "Status": status}])


@pytest.fixture
def realtime_stack(aws, boto, moto_server, tmp_path):
    """A deployed realtime stack: endpoint, its alarms (one in ALARM), an hour of metrics, a month's cost."""
    config = realtime_config()
    write_stack_file(tmp_path / f"Pulumi.{STACK}.yaml", config)
    sm = boto("sagemaker")
    scn.endpoint(sm, ENDPOINT, base_tags(stack=STACK, mode="realtime", owner="o", cost_center="c"),
                 itype="ml.g4dn.xlarge", count=2)
    dims = {mon.ENDPOINT: ENDPOINT, mon.VARIANT: "AllTraffic"}
    put_alarms(boto, config, dims)
    cw = boto("cloudwatch")
    cw.set_alarm_state(AlarmName="llmdeploy-prod-latency-p90", StateValue="ALARM", StateReason="Threshold Crossed: p90 2100000.0")
    cw.set_alarm_state(AlarmName="llmdeploy-prod-errors-5xx", StateValue="OK", StateReason="Threshold not crossed")
    # AWS creates alarms in INSUFFICIENT_DATA; moto in OK. Say which states the test means explicitly.
    cw.set_alarm_state(AlarmName="llmdeploy-prod-gpu-memory", StateValue="INSUFFICIENT_DATA", StateReason="no datapoints")
    # Another stack whose name starts like this one, and an alarm that is not llmdeploy's: neither is listed.
    put_alarms(boto, realtime_config(), {mon.ENDPOINT: "other", mon.VARIANT: "AllTraffic"}, stack="prod-eu")
    cw.put_metric_alarm(AlarmName="llmdeploy-prod-handmade", MetricName="CPUUtilization", Namespace="AWS/EC2",
                        Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    # The last hour: 120 invocations, latencies 100..2000 ms (raw samples, microseconds), 3 answered 5xx, 2 4xx.
    put_values(boto, mon.SAGEMAKER, "Invocations", dims, [12] * 10)
    put_values(boto, mon.SAGEMAKER, "Invocations", dims, [1000], minutes_ago=150)  # outside the hour
    put_values(boto, mon.SAGEMAKER, "ModelLatency", dims, [100_000 * i for i in range(1, 21)])
    put_values(boto, mon.SAGEMAKER, "Invocation5XXErrors", dims, [1, 1, 1, 0, 0])
    put_values(boto, mon.SAGEMAKER, "Invocation4XXErrors", dims, [1, 1, 0])
    activate_tag(boto)
    queue_cost(moto_server, "301.2345")
    return config, tmp_path


def _status(folder, *extra):
    return CliRunner().invoke(cli, ["status", "--stack", STACK, "--project-dir", str(folder), *extra])


def test_status_reports_endpoint_last_hour_alarms_and_cost_against_the_plan(realtime_stack, calls):
    config, folder = realtime_stack
    result = _status(folder, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["endpoint"]["name"] == ENDPOINT and doc["endpoint"]["status"] == "InService"
    assert doc["endpoint"]["kind"] == "SageMaker endpoint"
    hour = doc["last_hour"]
    assert hour["requests"] == 120, "Invocations Sum over the last hour only"
    assert hour["p50_ms"] == pytest.approx(1000) and hour["p90_ms"] == pytest.approx(1800), (
        "ModelLatency p50/p90 from CloudWatch, microseconds shown as milliseconds")
    assert (hour["errors_5xx"], hour["errors_4xx"]) == (3, 2)
    assert hour["error_rate"] == pytest.approx(3 / 120)
    states = {a["key"]: a["state"] for a in doc["alarms"]}
    assert set(states) == {"latency-p90", "errors-5xx", "errors-4xx", "capacity", "gpu-memory", "host-memory"}, (
        "the stack's own alarms, not prod-eu's nor a hand-made one")
    assert (states["latency-p90"], states["errors-5xx"], states["gpu-memory"]) == ("ALARM", "OK", "INSUFFICIENT_DATA")
    latency = next(a for a in doc["alarms"] if a["key"] == "latency-p90")
    assert latency["threshold"] == 2000 * 1000, "the plan's 2000 ms target, in ModelLatency's microseconds"

    cost = doc["cost"]
    assert cost["tag"] == {"key": "llmdeploy:stack", "status": "Active"}
    assert cost["month_to_date"]["usd"] == pytest.approx(301.23) and cost["month_to_date"]["estimated"] is True
    # The plan for this stack, by hand from the test catalog: 2 x ml.g4dn.xlarge always on, 6 alarm metrics, 1 dashboard.
    assert cost["plan_monthly_usd"] == pytest.approx(2 * 0.7364 * 730 + 6 * 0.10 + 3.00, abs=0.005)
    now = dt.datetime.now(dt.UTC)
    hours = (now - now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    assert cost["plan_to_date_usd"] == pytest.approx(cost["plan_monthly_usd"] * hours / 730, abs=0.05)
    assert doc["dashboard_url"].endswith("#dashboards/dashboard/llmdeploy-prod")

    requests = [params for action, params in calls if action == "ce:GetCostAndUsage"]
    assert len(requests) == 1
    (ask,) = requests
    assert ask["Filter"] == {"Tags": {"Key": "llmdeploy:stack", "Values": [STACK], "MatchOptions": ["EQUALS"]}}
    assert ask["Metrics"] == ["AmortizedCost"] and ask["Granularity"] == "MONTHLY"
    first, end, _ = cost_explorer.month_bounds(now)
    assert ask["TimePeriod"] == {"Start": first.isoformat(), "End": end.isoformat()}


def test_every_call_status_makes_is_in_the_documented_iam_actions(realtime_stack, calls):
    _, folder = realtime_stack
    assert _status(folder).exit_code == 0
    made = {action for action, _ in calls}
    documented = set(aws_mon.IAM_ACTIONS) | set(cost_explorer.IAM_ACTIONS)
    assert made <= documented, f"undocumented calls: {made - documented}"
    assert made == documented - {a for a in documented if a.startswith("elasticloadbalancing:")}


def test_status_prints_one_screen_for_people(realtime_stack):
    _, folder = realtime_stack
    result = _status(folder)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Stack {STACK} (realtime, us-east-1): SageMaker endpoint {ENDPOINT} InService" in out
    assert "120 requests, latency p50 1,000 ms / p90 1,800 ms (target 2,000 ms), 5xx 3 (2.50%), 4xx 2" in out
    assert "Alarms (6): 1 ALARM, 1 INSUFFICIENT_DATA, 4 OK" in out
    assert re.search(r"\n  ALARM +latency-p90 ", out) and "Threshold Crossed: p90 2100000.0" in out
    assert "Cost this month: $301.23 (estimated), " in out and "of the plan's $" in out
    assert "AmortizedCost of resources tagged llmdeploy:stack=prod" in out


def test_an_inactive_tag_is_named_with_the_fix_and_no_cost_is_asked(realtime_stack, boto, calls):
    _, folder = realtime_stack
    activate_tag(boto, "Inactive")
    result = _status(folder, "--json")
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["cost"]
    assert cost["tag"]["status"] == "Inactive" and cost["month_to_date"] is None
    assert "not an active cost-allocation tag" in cost["note"]
    assert "aws ce update-cost-allocation-tags-status" in cost["note"] and "TagKey=llmdeploy:stack,Status=Active" in cost["note"]
    assert not [a for a, _ in calls if a == "ce:GetCostAndUsage"], "a $0 from an inactive tag would mislead: not asked"


def test_a_tag_cost_explorer_has_not_seen_says_so(aws, boto, tmp_path):
    write_stack_file(tmp_path / f"Pulumi.{STACK}.yaml", realtime_config())
    scn.endpoint(boto("sagemaker"), ENDPOINT, base_tags(stack=STACK, mode="realtime", owner="o", cost_center="c"),
                 itype="ml.g4dn.xlarge", count=2)
    put_alarms(boto, realtime_config(), {mon.ENDPOINT: ENDPOINT, mon.VARIANT: "AllTraffic"})
    result = _status(tmp_path)
    assert result.exit_code == 0, result.output
    assert "Cost Explorer has not seen tag llmdeploy:stack yet" in result.output
    assert "0 requests" in result.output and "p50 - / p90 -" in result.output, "a quiet hour: no requests, no latency"


def test_no_cost_makes_no_cost_explorer_request(realtime_stack, calls):
    _, folder = realtime_stack
    result = _status(folder, "--no-cost", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost"]["note"] == "not read (--no-cost)"
    assert not [a for a, _ in calls if a.startswith("ce:")]


def test_a_cost_explorer_failure_still_shows_health_then_one_line(realtime_stack, monkeypatch):
    from botocore.exceptions import ClientError

    from llmdeploy.aws import clients

    real = clients.new_session

    def deny(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform ce:GetCostAndUsage"}},
                          "GetCostAndUsage")

    def new_session(region=None):
        session = real(region)
        session.events.register("before-call.cost-explorer.GetCostAndUsage", deny)
        return session

    monkeypatch.setattr(clients, "new_session", new_session)
    clients.reset()
    _, folder = realtime_stack
    result = _status(folder)
    assert result.exit_code == 1
    assert "SageMaker endpoint prod-endpoint InService" in result.stdout, "health first"
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: reading month-to-date cost (ce:GetCostAndUsage) failed: AccessDeniedException")
    assert "Traceback" not in result.output


def test_a_stack_that_was_never_deployed_is_one_line(aws, tmp_path):
    write_stack_file(tmp_path / f"Pulumi.{STACK}.yaml", realtime_config())
    result = _status(tmp_path)
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: stack 'prod' has no llmdeploy alarms in us-east-1: it is not deployed there, "
                                     "or was deployed before llmdeploy created alarms. Deploy it: llmdeploy deploy --stack prod.")


def test_missing_credentials_are_one_line(aws, tmp_path, monkeypatch):
    write_stack_file(tmp_path / f"Pulumi.{STACK}.yaml", realtime_config())
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = _status(tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith("Error: no AWS credentials found") and len(result.output.strip().splitlines()) == 1


def test_missing_stack_file_is_a_usage_error(tmp_path):
    result = _status(tmp_path)
    assert result.exit_code == 2
    assert "Pulumi.prod.yaml does not exist" in result.output and "llmdeploy plan --stack prod" in result.output


def test_status_of_the_self_hosted_fleet_reads_the_load_balancer(aws, boto, moto_server, tmp_path):
    config = reserved_config()
    write_stack_file(tmp_path / f"Pulumi.{STACK}.yaml", config)
    ec2, elb = boto("ec2"), boto("elbv2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    lb = elb.create_load_balancer(Name="serve-alb-1a2b3c", Subnets=subnets, Type="application")["LoadBalancers"][0]
    tg = elb.create_target_group(Name="serve-tg-4d5e6f", Protocol="HTTP", Port=8080, VpcId=vpc,
                                 TargetType="instance")["TargetGroups"][0]
    instances = scn.instance(ec2, scn.managed(None, stack=STACK), itype="g4dn.xlarge", count=2)
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": i, "Port": 8080} for i in instances])
    lb_dim, tg_dim = lb["LoadBalancerArn"].split(":loadbalancer/")[1], tg["TargetGroupArn"].split(":")[-1]
    dims = {mon.LOAD_BALANCER: lb_dim, mon.TARGET_GROUP: tg_dim}
    put_alarms(boto, config, {**dims, mon.STACK: STACK})
    put_values(boto, mon.ALB, "RequestCount", dims, [50, 50])
    put_values(boto, mon.ALB, "TargetResponseTime", dims, [0.1 * i for i in range(1, 11)])  # seconds
    put_values(boto, mon.ALB, "HTTPCode_Target_5XX_Count", dims, [4])
    put_values(boto, mon.ALB, "HTTPCode_ELB_5XX_Count", {mon.LOAD_BALANCER: lb_dim}, [1])
    activate_tag(boto)
    queue_cost(moto_server, "512.5", estimated=False)

    result = _status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["endpoint"]["kind"] == "load balancer" and doc["endpoint"]["name"] == "serve-alb-1a2b3c"
    assert doc["endpoint"]["desired"] == 2, "both registered servers are counted"
    hour = doc["last_hour"]
    assert hour["requests"] == 100 and hour["p50_ms"] == pytest.approx(500) and hour["p90_ms"] == pytest.approx(900), (
        "TargetResponseTime is in seconds: shown in ms")
    assert hour["errors_5xx"] == 4 and hour["load_balancer_5xx"] == 1 and hour["errors_4xx"] == 0, (
        "the ALB reports only non-zero counts: no datapoint is zero")
    assert hour["error_rate"] == pytest.approx(4 / 100), "the servers' 5xx over the requests they were given"
    assert {a["key"] for a in doc["alarms"]} == {"latency-p90", "errors-5xx", "errors-4xx", "unhealthy-hosts", "capacity",
                                                  "gpu-memory"}
    # 2 x g4dn.xlarge on demand + their 200 GB gp3 root volumes + ALB hours (internal: no public IPv4), 9 alarm
    # metrics, a dashboard, 3 GPU measurements x (2 GPUs + fleet-wide).
    assert doc["cost"]["plan_monthly_usd"] == pytest.approx(
        2 * 0.526 * 730 + 2 * 200 * 0.08 + 0.0225 * 730 + 9 * 0.10 + 3.00 + 3 * (2 + 1) * 0.30, abs=0.005)
    assert doc["cost"]["month_to_date"]["usd"] == 512.5 and doc["cost"]["month_to_date"]["estimated"] is False
