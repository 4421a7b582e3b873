"""Monitoring as code: a stack's CloudWatch alarms, its dashboard and the SNS topic the alarms notify.

What to watch and the thresholds are pure data in ``llmdeploy.monitoring`` (from the plan recorded in the
stack config); this component only creates them:

- one ``aws.cloudwatch.MetricAlarm`` per ``AlarmSpec``, named ``llmdeploy-<stack>-<key>`` so that
  ``llmdeploy status`` finds them with one DescribeAlarms call (their dimensions name the endpoint or the load
  balancer). Each alarm's arguments are ``put_metric_alarm_request``'s, mapped one to one (tests check the
  request against botocore's PutMetricAlarm model). A named alarm is replaced delete-first: PutMetricAlarm
  overwrites by name, so creating the replacement first and deleting the old one would delete both;
- ``aws.cloudwatch.Dashboard`` ``llmdeploy-<stack>`` (dashboards take no tags in pulumi-aws 7);
- an SNS topic with an email subscription (``alarmEmail``), unless ``alarmTopicArn`` names an existing topic.
  The topic is not KMS-encrypted on purpose: CloudWatch cannot publish to a topic encrypted with the AWS
  managed key, and alarm messages carry metric values and names, nothing from requests or the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from llmdeploy import monitoring as mon
from llmdeploy.tags import tag_dict


@dataclass
class MonitoringArgs:
    stack: str
    region: str
    targets: mon.Targets
    # Dimension values: EndpointName (+ VariantName) for SageMaker, LoadBalancer + TargetGroup (ARN suffixes)
    # for the self-hosted fleet. Outputs: they are known once the endpoint exists.
    dimensions: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    alarm_email: str = ""
    alarm_topic_arn: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def alarm_args(request: dict) -> dict:
    """PutMetricAlarm request (API member names) -> aws.cloudwatch.MetricAlarm keyword arguments."""
    simple = {"AlarmName": "name", "AlarmDescription": "alarm_description", "ActionsEnabled": "actions_enabled",
              "AlarmActions": "alarm_actions", "OKActions": "ok_actions", "EvaluationPeriods": "evaluation_periods",
              "DatapointsToAlarm": "datapoints_to_alarm", "Threshold": "threshold",
              "ComparisonOperator": "comparison_operator", "TreatMissingData": "treat_missing_data",
              "Namespace": "namespace", "MetricName": "metric_name", "Period": "period", "Statistic": "statistic",
              "ExtendedStatistic": "extended_statistic",
              "EvaluateLowSampleCountPercentile": "evaluate_low_sample_count_percentiles"}
    args = {simple[k]: v for k, v in request.items() if k in simple}
    if "Dimensions" in request:
        args["dimensions"] = {d["Name"]: d["Value"] for d in request["Dimensions"]}
    if "Metrics" in request:
        queries = []
        for q in request["Metrics"]:
            query = {"id": q["Id"], "return_data": q["ReturnData"]}
            if "Expression" in q:
                query.update(expression=q["Expression"], label=q.get("Label"))
            else:
                stat = q["MetricStat"]
                query["metric"] = {"namespace": stat["Metric"]["Namespace"], "metric_name": stat["Metric"]["MetricName"],
                                   "dimensions": {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]},
                                   "period": stat["Period"], "stat": stat["Stat"]}
            queries.append(query)
        args["metric_queries"] = queries
    if "Tags" in request:
        args["tags"] = tag_dict(request["Tags"])
    return args


class Monitoring(pulumi.ComponentResource):
    dashboard_name: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmdeploy:cloudwatch:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if args.alarm_topic_arn:
            topic_arn = pulumi.Output.from_input(args.alarm_topic_arn)
        else:
            topic = aws.sns.Topic(f"{name}-alarms", display_name=f"llmdeploy {args.stack} alarms", tags=args.tags, opts=child)
            topic_arn = topic.arn
            if args.alarm_email:
                aws.sns.TopicSubscription(f"{name}-email", topic=topic.arn, protocol="email", endpoint=args.alarm_email,
                                          opts=child)

        specs = mon.alarm_specs(args.targets)
        alarms = []
        for spec in specs:
            # Dimension values and the topic are Outputs: the request carries them through as inputs.
            request = mon.put_metric_alarm_request(spec, stack=args.stack, bindings=args.dimensions, actions=[topic_arn],
                                                   tags=args.tags)
            alarms.append(aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}", **alarm_args(request),
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True)))

        keys = list(args.dimensions)
        bound = pulumi.Output.all(*args.dimensions.values()).apply(lambda values: dict(zip(keys, values, strict=True)))
        dashboard_name = mon.dashboard_name(args.stack)
        body = pulumi.Output.all(bound, *[a.arn for a in alarms]).apply(lambda v: json.dumps(mon.dashboard_body(
            stack=args.stack, region=args.region, specs=specs, bindings=v[0], alarm_arns=v[1:], t=args.targets)))
        dashboard = aws.cloudwatch.Dashboard(f"{name}-dashboard", dashboard_name=dashboard_name, dashboard_body=body,
                                             opts=child)

        self.dashboard_name = dashboard.dashboard_name
        self.dashboard_url = pulumi.Output.from_input(mon.console_url(args.region, dashboard_name))
        self.topic_arn = topic_arn
        self.register_outputs({"dashboard_name": self.dashboard_name, "dashboard_url": self.dashboard_url,
                               "topic_arn": self.topic_arn, "alarm_names": [a.name for a in alarms]})

