"""Each resource the program registers, as the AWS API request(s) the provider makes to create it.

The mapping follows the Terraform AWS provider that pulumi-aws bridges (create functions of the resources
below: which input becomes which request member); values are what the mocks resolved, with auto-names
given the suffix Pulumi adds (``-`` and 7 hex characters) so that length limits are tested on real-looking
names. ``validate`` checks a request against botocore's service model: botocore's own ParamValidator
(required members, unknown members, types, minimums) plus what it leaves to the service: maximums, enums
and patterns (Java patterns, matched with the ``regex`` package, which knows ``\\p{..}``).
"""

from __future__ import annotations

import functools
from typing import Any

AUTONAME_SUFFIX = "-1a2b3c4"  # Pulumi auto-names: the logical name, "-", 7 random hex characters

Request = tuple[str, str, dict]  # (botocore service, operation, params)


def _name(res) -> str:
    given = res.inputs.get("name")
    return given if given else res.name + AUTONAME_SUFFIX


def _tag_list(tags: dict | None, key: str = "Key", value: str = "Value") -> list[dict]:
    return [{key: k, value: v} for k, v in (tags or {}).items()]


def _ec2_tags(resource_type: str, tags: dict | None) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": _tag_list(tags)}] if tags else []


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _int(value) -> int:
    """An API integer. The mock runtime hands numbers over as floats: a fraction would be a bug in the program."""
    number = float(value)
    assert number.is_integer(), f"{value!r} is not a whole number"
    return int(number)


def _bool(value) -> bool:
    return value in (True, "true", "True")


def requests_for(res, by_id: dict[str, Any]) -> list[Request] | None:
    """The create-time requests for one recorded resource; None for a type this module does not know."""
    i, t = res.inputs, res.type
    tags = i.get("tags")
    bucket = lambda: by_id[i["bucket"]].outputs["bucket"] if i.get("bucket") in by_id else i["bucket"]  # noqa: E731
    out: list[Request]
    if t == "aws:s3/bucket:Bucket":
        out = [("s3", "CreateBucket", {"Bucket": res.outputs["bucket"]})]
        if tags:
            out.append(("s3", "PutBucketTagging", {"Bucket": res.outputs["bucket"], "Tagging": {"TagSet": _tag_list(tags)}}))
    elif t == "aws:s3/bucketOwnershipControls:BucketOwnershipControls":
        out = [("s3", "PutBucketOwnershipControls", {"Bucket": bucket(), "OwnershipControls": {
            "Rules": [{"ObjectOwnership": i["rule"]["objectOwnership"]}]}})]
    elif t == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        out = [("s3", "PutPublicAccessBlock", {"Bucket": bucket(), "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": i["blockPublicAcls"], "IgnorePublicAcls": i["ignorePublicAcls"],
            "BlockPublicPolicy": i["blockPublicPolicy"], "RestrictPublicBuckets": i["restrictPublicBuckets"]}})]
    elif t == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        out = [("s3", "PutBucketEncryption", {"Bucket": bucket(), "ServerSideEncryptionConfiguration": {"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": r["applyServerSideEncryptionByDefault"]["sseAlgorithm"]},
             "BucketKeyEnabled": r.get("bucketKeyEnabled", False)} for r in i["rules"]]}})]
    elif t == "aws:s3/bucketVersioning:BucketVersioning":
        out = [("s3", "PutBucketVersioning", {"Bucket": bucket(), "VersioningConfiguration": {
            "Status": i["versioningConfiguration"]["status"]}})]
    elif t == "aws:s3/bucketPolicy:BucketPolicy":
        out = [("s3", "PutBucketPolicy", {"Bucket": bucket(), "Policy": i["policy"]})]
    elif t == "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration":
        rules = []
        for r in i["rules"]:
            rule = {"ID": r["id"], "Status": r["status"], "Filter": {"Prefix": r["filter"].get("prefix", "")}}
            if "expiration" in r:
                exp = r["expiration"]
                rule["Expiration"] = ({"Days": _int(exp["days"])} if "days" in exp
                                      else {"ExpiredObjectDeleteMarker": exp["expiredObjectDeleteMarker"]})
            if "noncurrentVersionExpiration" in r:
                rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": _int(r["noncurrentVersionExpiration"]["noncurrentDays"])}
            if "abortIncompleteMultipartUpload" in r:
                rule["AbortIncompleteMultipartUpload"] = {
                    "DaysAfterInitiation": _int(r["abortIncompleteMultipartUpload"]["daysAfterInitiation"])}
            rules.append(rule)
        out = [("s3", "PutBucketLifecycleConfiguration", {"Bucket": bucket(), "LifecycleConfiguration": {"Rules": rules}})]
    elif t == "aws:s3/bucketObjectv2:BucketObjectv2":
        from urllib.parse import urlencode

        out = [("s3", "PutObject", _drop_empty({"Bucket": bucket(), "Key": i["key"], "ContentType": i.get("contentType"),
                                                "ServerSideEncryption": i.get("serverSideEncryption"),
                                                "Tagging": urlencode(tags) if tags else None}))]
    elif t == "aws:iam/role:Role":
        out = [("iam", "CreateRole", _drop_empty({"RoleName": _name(res), "AssumeRolePolicyDocument": i["assumeRolePolicy"],
                                                  "Description": i.get("description"), "Tags": _tag_list(tags)}))]
    elif t == "aws:iam/rolePolicy:RolePolicy":
        out = [("iam", "PutRolePolicy", {"RoleName": _role_name(i["role"], by_id), "PolicyName": _name(res),
                                         "PolicyDocument": i["policy"]})]
    elif t == "aws:iam/rolePolicyAttachment:RolePolicyAttachment":
        out = [("iam", "AttachRolePolicy", {"RoleName": _role_name(i["role"], by_id), "PolicyArn": i["policyArn"]})]
    elif t == "aws:iam/instanceProfile:InstanceProfile":
        name = _name(res)
        out = [("iam", "CreateInstanceProfile", _drop_empty({"InstanceProfileName": name, "Tags": _tag_list(tags)})),
               ("iam", "AddRoleToInstanceProfile", {"InstanceProfileName": name, "RoleName": _role_name(i["role"], by_id)})]
    elif t == "aws:sagemaker/model:Model":
        c = i["primaryContainer"]
        out = [("sagemaker", "CreateModel", _drop_empty({
            "ModelName": _name(res), "ExecutionRoleArn": i["executionRoleArn"],
            "PrimaryContainer": {"Image": c["image"], "ModelDataUrl": c.get("modelDataUrl"),
                                 "Environment": c.get("environment")},
            "Tags": _tag_list(tags)}))]
    elif t == "aws:sagemaker/endpointConfiguration:EndpointConfiguration":
        out = [("sagemaker", "CreateEndpointConfig", _drop_empty({
            "EndpointConfigName": _name(res), "ProductionVariants": [_variant(v) for v in i["productionVariants"]],
            "AsyncInferenceConfig": _async_config(i.get("asyncInferenceConfig")), "Tags": _tag_list(tags)}))]
    elif t == "aws:sagemaker/endpoint:Endpoint":
        out = [("sagemaker", "CreateEndpoint", _drop_empty({"EndpointName": _name(res),
                                                            "EndpointConfigName": i["endpointConfigName"],
                                                            "Tags": _tag_list(tags)}))]
    elif t == "aws:appautoscaling/target:Target":
        out = [("application-autoscaling", "RegisterScalableTarget", _drop_empty({
            "ServiceNamespace": i["serviceNamespace"], "ResourceId": i["resourceId"],
            "ScalableDimension": i["scalableDimension"], "MinCapacity": _int(i["minCapacity"]),
            "MaxCapacity": _int(i["maxCapacity"]), "Tags": tags}))]
    elif t == "aws:appautoscaling/policy:Policy":
        out = [("application-autoscaling", "PutScalingPolicy", _drop_empty({
            "PolicyName": _name(res), "ServiceNamespace": i["serviceNamespace"], "ResourceId": i["resourceId"],
            "ScalableDimension": i["scalableDimension"], "PolicyType": i["policyType"],
            "TargetTrackingScalingPolicyConfiguration": _target_tracking(i.get("targetTrackingScalingPolicyConfiguration")),
            "StepScalingPolicyConfiguration": _step(i.get("stepScalingPolicyConfiguration"))}))]
    elif t == "aws:cloudwatch/metricAlarm:MetricAlarm":
        out = [("cloudwatch", "PutMetricAlarm", put_metric_alarm(i, _name(res)))]
    elif t == "aws:cloudwatch/dashboard:Dashboard":
        # resourceDashboardPut: PutDashboard on create and on every update (the body replaces the old one).
        out = [("cloudwatch", "PutDashboard", {"DashboardName": i["dashboardName"], "DashboardBody": i["dashboardBody"]})]
    elif t == "aws:kms/key:Key":
        out = [("kms", "CreateKey", _drop_empty({"Description": i.get("description"),
                                                 "Tags": _tag_list(tags, "TagKey", "TagValue")})),
               ("kms", "EnableKeyRotation", {"KeyId": res.outputs["keyId"]}),
               # Sent on delete, but fixed now: the waiting period AWS accepts.
               ("kms", "ScheduleKeyDeletion", {"KeyId": res.outputs["keyId"],
                                               "PendingWindowInDays": _int(i["deletionWindowInDays"])})]
    elif t == "aws:sns/topic:Topic":
        # resourceTopicCreate: CreateTopic carries the name and tags (and only FIFO attributes); every other
        # attribute (DisplayName, KmsMasterKeyId, ...) is one SetTopicAttributes call after it.
        arn = res.outputs["arn"]
        out = [("sns", "CreateTopic", _drop_empty({"Name": _name(res), "Tags": _tag_list(tags)}))]
        for member, attribute in (("displayName", "DisplayName"), ("kmsMasterKeyId", "KmsMasterKeyId")):
            if i.get(member):
                out.append(("sns", "SetTopicAttributes", {"TopicArn": arn, "AttributeName": attribute,
                                                          "AttributeValue": i[member]}))
    elif t == "aws:sns/topicSubscription:TopicSubscription":
        # resourceTopicSubscriptionCreate: Subscribe with ReturnSubscriptionArn (an unconfirmed email subscription
        # still gets its ARN); attributes other than endpoint, protocol and topic go in Attributes.
        out = [("sns", "Subscribe", {"TopicArn": i["topic"], "Protocol": i["protocol"], "Endpoint": i["endpoint"],
                                     "ReturnSubscriptionArn": True})]
    elif t == "aws:ec2/securityGroup:SecurityGroup":
        gid = res.id
        out = [("ec2", "CreateSecurityGroup", _drop_empty({"GroupName": _name(res), "Description": i["description"],
                                                           "VpcId": i.get("vpcId"),
                                                           "TagSpecifications": _ec2_tags("security-group", tags)}))]
        for kind, op in (("ingress", "AuthorizeSecurityGroupIngress"), ("egress", "AuthorizeSecurityGroupEgress")):
            if i.get(kind):
                out.append(("ec2", op, {"GroupId": gid, "IpPermissions": [_permission(r) for r in i[kind]]}))
    elif t in ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
               "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"):
        op = "AuthorizeSecurityGroupIngress" if "Ingress" in t else "AuthorizeSecurityGroupEgress"
        perm = _drop_empty({"IpProtocol": i["ipProtocol"], "FromPort": _opt_int(i.get("fromPort")),
                            "ToPort": _opt_int(i.get("toPort")),
                            "IpRanges": [{"CidrIp": i["cidrIpv4"], "Description": i.get("description")}] if i.get("cidrIpv4") else None,
                            "Ipv6Ranges": [{"CidrIpv6": i["cidrIpv6"], "Description": i.get("description")}] if i.get("cidrIpv6") else None,
                            "UserIdGroupPairs": [{"GroupId": i["referencedSecurityGroupId"], "Description": i.get("description")}]
                            if i.get("referencedSecurityGroupId") else None})
        out = [("ec2", op, _drop_empty({"GroupId": i["securityGroupId"], "IpPermissions": [perm],
                                        "TagSpecifications": _ec2_tags("security-group-rule", tags)}))]
    elif t == "aws:ec2/placementGroup:PlacementGroup":
        out = [("ec2", "CreatePlacementGroup", _drop_empty({"GroupName": _name(res), "Strategy": i["strategy"],
                                                            "TagSpecifications": _ec2_tags("placement-group", tags)}))]
    elif t == "aws:ec2/launchTemplate:LaunchTemplate":
        out = [("ec2", "CreateLaunchTemplate", _drop_empty({
            "LaunchTemplateName": _name(res), "VersionDescription": None,
            "LaunchTemplateData": _launch_template_data(i),
            "TagSpecifications": _ec2_tags("launch-template", tags)}))]
    elif t == "aws:ec2/instance:Instance":
        out = [("ec2", "RunInstances", _drop_empty({
            "ImageId": i["ami"], "InstanceType": i["instanceType"], "MinCount": 1, "MaxCount": 1,
            "LaunchTemplate": {"LaunchTemplateId": i["launchTemplate"]["id"], "Version": str(i["launchTemplate"]["version"])},
            "Placement": {"GroupName": i.get("placementGroup")}, "KeyName": i.get("keyName"),
            "IamInstanceProfile": {"Name": i.get("iamInstanceProfile")} if i.get("iamInstanceProfile") else None,
            "MetadataOptions": _metadata(i.get("metadataOptions")), "UserData": i.get("userData"),
            "InstanceInitiatedShutdownBehavior": i.get("instanceInitiatedShutdownBehavior"),
            "BlockDeviceMappings": None,
            "TagSpecifications": _ec2_tags("instance", tags)
            + _ec2_tags("volume", (i.get("rootBlockDevice") or {}).get("tags"))}))]
    elif t == "aws:ec2/eip:Eip":
        out = [("ec2", "AllocateAddress", _drop_empty({"Domain": i["domain"], "TagSpecifications": _ec2_tags("elastic-ip", tags)})),
               ("ec2", "AssociateAddress", _drop_empty({"AllocationId": res.id, "NetworkInterfaceId": i.get("networkInterface"),
                                                        "PrivateIpAddress": i.get("associateWithPrivateIp")}))]
    elif t == "aws:lb/targetGroup:TargetGroup":
        hc = i["healthCheck"]
        out = [("elbv2", "CreateTargetGroup", _drop_empty({
            "Name": _name(res), "Protocol": i["protocol"], "Port": _int(i["port"]), "VpcId": i["vpcId"],
            "TargetType": i["targetType"], "HealthCheckProtocol": hc["protocol"], "HealthCheckPort": hc["port"],
            "HealthCheckPath": hc["path"], "HealthCheckIntervalSeconds": _int(hc["interval"]),
            "HealthCheckTimeoutSeconds": _int(hc["timeout"]), "HealthyThresholdCount": _int(hc["healthyThreshold"]),
            "UnhealthyThresholdCount": _int(hc["unhealthyThreshold"]), "Matcher": {"HttpCode": hc["matcher"]},
            "Tags": _tag_list(tags)})),
               ("elbv2", "ModifyTargetGroupAttributes", {"TargetGroupArn": res.outputs["arn"], "Attributes": [
                   {"Key": "deregistration_delay.timeout_seconds", "Value": str(_int(i["deregistrationDelay"]))}]})]
    elif t == "aws:lb/loadBalancer:LoadBalancer":
        out = [("elbv2", "CreateLoadBalancer", _drop_empty({
            "Name": _name(res), "Subnets": i["subnets"], "SecurityGroups": i["securityGroups"],
            "Scheme": "internal" if i.get("internal") else "internet-facing", "Type": i["loadBalancerType"],
            "Tags": _tag_list(tags)})),
               ("elbv2", "ModifyLoadBalancerAttributes", {"LoadBalancerArn": res.outputs["arn"], "Attributes": [
                   {"Key": "idle_timeout.timeout_seconds", "Value": str(_int(i["idleTimeout"]))},
                   {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": str(i["dropInvalidHeaderFields"]).lower()}]})]
    elif t == "aws:lb/listener:Listener":
        out = [("elbv2", "CreateListener", _drop_empty({
            "LoadBalancerArn": i["loadBalancerArn"], "Protocol": i["protocol"], "Port": _int(i["port"]),
            "SslPolicy": i.get("sslPolicy"),
            "Certificates": [{"CertificateArn": i["certificateArn"]}] if i.get("certificateArn") else None,
            "DefaultActions": [_action(a) for a in i["defaultActions"]], "Tags": _tag_list(tags)}))]
    elif t == "aws:autoscaling/group:Group":
        name = _name(res)
        refresh = i.get("instanceRefresh")
        out = [("autoscaling", "CreateAutoScalingGroup", _drop_empty({
            "AutoScalingGroupName": name, "MinSize": _int(i["minSize"]), "MaxSize": _int(i["maxSize"]),
            "DesiredCapacity": _int(i["desiredCapacity"]), "VPCZoneIdentifier": ",".join(i["vpcZoneIdentifiers"]),
            "LaunchTemplate": {"LaunchTemplateId": i["launchTemplate"]["id"], "Version": i["launchTemplate"]["version"]},
            "TargetGroupARNs": i.get("targetGroupArns"), "HealthCheckType": i.get("healthCheckType"),
            "HealthCheckGracePeriod": _opt_int(i.get("healthCheckGracePeriod")),
            "Tags": [{"Key": tg["key"], "Value": tg["value"], "PropagateAtLaunch": tg["propagateAtLaunch"],
                      "ResourceId": name, "ResourceType": "auto-scaling-group"} for tg in i.get("tags", [])]}))]
        if refresh:
            p = refresh.get("preferences", {})
            out.append(("autoscaling", "StartInstanceRefresh", _drop_empty({
                "AutoScalingGroupName": name, "Strategy": refresh["strategy"],
                "Preferences": {"MinHealthyPercentage": _opt_int(p.get("minHealthyPercentage")),
                                "MaxHealthyPercentage": _opt_int(p.get("maxHealthyPercentage")),
                                "InstanceWarmup": _opt_int(p.get("instanceWarmup")),
                                "SkipMatching": p.get("skipMatching")}})))
    elif t == "random:index/randomId:RandomId":
        out = []  # no AWS call
    else:
        return None
    return out


def _opt_int(value):
    return None if value is None else _int(value)


def put_metric_alarm(i: dict, name: str) -> dict:
    """MetricAlarm inputs -> the PutMetricAlarm request (the provider's expandPutMetricAlarmInput).

    A single-metric alarm names its metric at the top level (Namespace, MetricName, Dimensions, Period, Statistic
    or ExtendedStatistic); a metric-math alarm (metric_query) sends a Metrics list instead, one expression with
    ReturnData and the metrics it reads as MetricStat, and no top-level metric.
    """
    return _drop_empty({
        "AlarmName": name, "AlarmDescription": i.get("alarmDescription"),
        "ActionsEnabled": _bool(i.get("actionsEnabled", True)),  # always sent (the provider's default is true)
        "AlarmActions": i.get("alarmActions"), "OKActions": i.get("okActions"),
        "Namespace": i.get("namespace"), "MetricName": i.get("metricName"),
        "Dimensions": _tag_list(i.get("dimensions"), "Name", "Value"), "Period": _opt_int(i.get("period")),
        "Statistic": i.get("statistic"), "ExtendedStatistic": i.get("extendedStatistic"),
        "EvaluateLowSampleCountPercentile": i.get("evaluateLowSampleCountPercentiles"),
        "Metrics": [_metric_query(q) for q in i.get("metricQueries") or []],
        "EvaluationPeriods": _int(i["evaluationPeriods"]), "DatapointsToAlarm": _opt_int(i.get("datapointsToAlarm")),
        "Threshold": float(i["threshold"]), "ComparisonOperator": i["comparisonOperator"],
        "TreatMissingData": i.get("treatMissingData", "missing"),  # always sent (the provider's default)
        "Tags": _tag_list(i.get("tags"))})


def _metric_query(q: dict) -> dict:
    """expandMetricAlarmMetrics: one metric_query -> MetricDataQuery (an expression, or a MetricStat)."""
    m = q.get("metric")
    return _drop_empty({
        "Id": q["id"], "Expression": q.get("expression") or None, "Label": q.get("label") or None,
        "ReturnData": _bool(q.get("returnData", False)), "Period": _opt_int(q.get("period")) or None,
        "MetricStat": {"Metric": {"Namespace": m.get("namespace"), "MetricName": m["metricName"],
                                  "Dimensions": _tag_list(m.get("dimensions"), "Name", "Value")},
                       "Period": _int(m["period"]), "Stat": m["stat"], "Unit": m.get("unit")} if m else None,
    })


def _role_name(role_input: str, by_id: dict) -> str:
    """``role`` inputs are the role's id (its name at AWS) or its name output."""
    role = by_id.get(role_input) or next((r for r in by_id.values() if r.outputs.get("name") == role_input), None)
    return _name(role) if role is not None else role_input


def _variant(v: dict) -> dict:
    s = v.get("serverlessConfig")
    return _drop_empty({
        "VariantName": v["variantName"], "ModelName": v["modelName"], "InstanceType": v.get("instanceType"),
        "InitialInstanceCount": _opt_int(v.get("initialInstanceCount")),
        "ContainerStartupHealthCheckTimeoutInSeconds": _opt_int(v.get("containerStartupHealthCheckTimeoutInSeconds")),
        "ModelDataDownloadTimeoutInSeconds": _opt_int(v.get("modelDataDownloadTimeoutInSeconds")),
        "ServerlessConfig": {"MemorySizeInMB": _int(s["memorySizeInMb"]), "MaxConcurrency": _int(s["maxConcurrency"]),
                             "ProvisionedConcurrency": _opt_int(s.get("provisionedConcurrency"))} if s else None,
    })


def _async_config(a: dict | None) -> dict | None:
    if not a:
        return None
    o, n = a["outputConfig"], a["outputConfig"].get("notificationConfig", {})
    return _drop_empty({
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": _int(a["clientConfig"]["maxConcurrentInvocationsPerInstance"])},
        "OutputConfig": {"S3OutputPath": o["s3OutputPath"], "S3FailurePath": o.get("s3FailurePath"), "KmsKeyId": o.get("kmsKeyId"),
                         "NotificationConfig": {"SuccessTopic": n.get("successTopic"), "ErrorTopic": n.get("errorTopic"),
                                                "IncludeInferenceResponseIn": n.get("includeInferenceResponseIns")}},
    })


def _target_tracking(c: dict | None) -> dict | None:
    if not c:
        return None
    pre, cus = c.get("predefinedMetricSpecification"), c.get("customizedMetricSpecification")
    return _drop_empty({
        "TargetValue": float(c["targetValue"]),
        "PredefinedMetricSpecification": {"PredefinedMetricType": pre["predefinedMetricType"]} if pre else None,
        "CustomizedMetricSpecification": {"MetricName": cus["metricName"], "Namespace": cus["namespace"],
                                          "Dimensions": [{"Name": d["name"], "Value": d["value"]} for d in cus.get("dimensions", [])],
                                          "Statistic": cus["statistic"]} if cus else None,
        "ScaleOutCooldown": _opt_int(c.get("scaleOutCooldown")), "ScaleInCooldown": _opt_int(c.get("scaleInCooldown")),
    })


def _step(c: dict | None) -> dict | None:
    if not c:
        return None
    return _drop_empty({
        "AdjustmentType": c["adjustmentType"], "MetricAggregationType": c.get("metricAggregationType"),
        "Cooldown": _opt_int(c.get("cooldown")),
        "StepAdjustments": [{"MetricIntervalLowerBound": float(a["metricIntervalLowerBound"]),
                             "ScalingAdjustment": _int(a["scalingAdjustment"])} for a in c["stepAdjustments"]],
    })


def _permission(r: dict) -> dict:
    return _drop_empty({
        "IpProtocol": r["protocol"], "FromPort": _int(r["fromPort"]), "ToPort": _int(r["toPort"]),
        "IpRanges": [{"CidrIp": c, "Description": r.get("description")} for c in r.get("cidrBlocks") or []],
        "UserIdGroupPairs": [{"GroupId": g, "Description": r.get("description")} for g in r.get("securityGroups") or []],
    })


def _metadata(m: dict | None) -> dict | None:
    if not m:
        return None
    return _drop_empty({"HttpEndpoint": m.get("httpEndpoint"), "HttpTokens": m.get("httpTokens"),
                        "HttpPutResponseHopLimit": _opt_int(m.get("httpPutResponseHopLimit")),
                        "InstanceMetadataTags": m.get("instanceMetadataTags")})


def _launch_template_data(i: dict) -> dict:
    return _drop_empty({
        "ImageId": i.get("imageId"), "InstanceType": i.get("instanceType"),
        "IamInstanceProfile": {"Arn": i["iamInstanceProfile"]["arn"]} if i.get("iamInstanceProfile") else None,
        "SecurityGroupIds": i.get("vpcSecurityGroupIds"), "MetadataOptions": _metadata(i.get("metadataOptions")),
        "BlockDeviceMappings": [{"DeviceName": b["deviceName"], "Ebs": _drop_empty({
            "VolumeSize": _opt_int(b["ebs"].get("volumeSize")), "VolumeType": b["ebs"].get("volumeType"),
            "Encrypted": _bool(b["ebs"].get("encrypted")), "DeleteOnTermination": _bool(b["ebs"].get("deleteOnTermination"))})}
            for b in i.get("blockDeviceMappings") or []],
        "NetworkInterfaces": [_drop_empty({
            "NetworkCardIndex": _opt_int(n.get("networkCardIndex")), "DeviceIndex": _opt_int(n.get("deviceIndex")),
            "InterfaceType": n.get("interfaceType"), "SubnetId": n.get("subnetId"), "Groups": n.get("securityGroups"),
            "DeleteOnTermination": _bool(n.get("deleteOnTermination")), "Description": n.get("description"),
            "AssociatePublicIpAddress": _bool(n["associatePublicIpAddress"]) if "associatePublicIpAddress" in n else None})
            for n in i.get("networkInterfaces") or []],
        "UserData": i.get("userData"),
        "TagSpecifications": [{"ResourceType": s["resourceType"], "Tags": _tag_list(s.get("tags"))}
                              for s in i.get("tagSpecifications") or []],
    })


def _action(a: dict) -> dict:
    r = a.get("redirect")
    return _drop_empty({"Type": a["type"], "TargetGroupArn": a.get("targetGroupArn"),
                        "RedirectConfig": {"Protocol": r.get("protocol"), "Port": r.get("port"),
                                           "StatusCode": r["statusCode"]} if r else None})


# -- validation against botocore's models ---------------------------------------------------------------------


@functools.cache
def _model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def validate(service: str, operation: str, params: dict) -> list[str]:
    """Every way ``params`` breaks the input shape of ``operation`` (empty: AWS's model accepts it)."""
    from botocore.validate import ParamValidator

    shape = _model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    problems = [line for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    _facets(params, shape, f"{service}.{operation}", problems)
    return problems


def _facets(value, shape, path: str, problems: list[str]) -> None:
    """What ParamValidator leaves to the service: max, enum, pattern."""
    import regex

    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                _facets(value[key], member, f"{path}.{key}", problems)
        return
    if shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} items, at most {meta['max']}")
        for n, item in enumerate(value):
            _facets(item, shape.member, f"{path}[{n}]", problems)
        return
    if shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            _facets(k, shape.key, f"{path}.<key>", problems)
            _facets(v, shape.value, f"{path}[{k}]", problems)
        return
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} characters, at most {meta['max']}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
        if "pattern" in meta:
            java = meta["pattern"].replace("\\uD800\\uDC00-\\uDBFF\\uDFFF", "\\U00010000-\\U0010FFFF")
            # AWS matches the whole value (Java's Matcher.matches).
            if regex.fullmatch(java, value) is None:
                problems.append(f"{path}: {value[:80]!r} does not match {meta['pattern']}")
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, (int, float)) \
            and "max" in meta and value > meta["max"]:
        problems.append(f"{path}: {value} is above the maximum {meta['max']}")
