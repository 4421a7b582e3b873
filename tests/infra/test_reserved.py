"""Reserved: a GPU Auto Scaling group behind an ALB, reachable only through it."""

import base64

import pytest

from llmdeploy.infra.reserved_endpoint import AMI_NAME_FILTER, render_user_data

from .mocks import of_type, one, run, run_mode, stack_config

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.36.0-lmi27.0.0-cu130"


def _sgs(mocks):
    return {sg.name: sg for sg in of_type(mocks, "aws:ec2/securityGroup:SecurityGroup")}


def test_gpu_ami_lookup():
    mocks = run_mode("reserved")
    calls = [args for token, args in mocks.calls if token == "aws:ec2/getAmi:getAmi"]
    assert calls, "the program must look the GPU AMI up"
    args = calls[0]
    assert args["mostRecent"] is True and args["owners"] == ["amazon"]
    assert {"name": "name", "values": [AMI_NAME_FILTER]} in args["filters"]
    template = one(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["imageId"] == "ami-0123456789abcdef0"


def test_instances_must_require_imdsv2():
    meta = one(run_mode("reserved"), "aws:ec2/launchTemplate:LaunchTemplate").inputs["metadataOptions"]
    assert meta["httpTokens"] == "required", "instances must require IMDSv2"
    assert meta["httpPutResponseHopLimit"] == 2, "containers need a hop limit of 2 to reach IMDSv2"


def test_root_volume_must_be_encrypted_gp3():
    (mapping,) = one(run_mode("reserved"), "aws:ec2/launchTemplate:LaunchTemplate").inputs["blockDeviceMappings"]
    assert mapping["deviceName"] == "/dev/xvda", "the mapping must target the AMI's root device"
    assert mapping["ebs"]["encrypted"] == "true", "root volume must be encrypted"
    assert mapping["ebs"]["volumeType"] == "gp3"


def test_asg_size_and_subnets_follow_the_stack():
    mocks = run_mode("reserved")
    expected = stack_config("reserved")
    asg = one(mocks, "aws:autoscaling/group:Group")
    assert asg.inputs["desiredCapacity"] == expected.instance_count
    assert asg.inputs["minSize"] == expected.min_instances
    assert asg.inputs["maxSize"] == expected.instance_count
    assert asg.inputs["vpcZoneIdentifiers"] == ["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"], \
        "ASG must span the default VPC's subnets in every AZ that offers g4dn.xlarge"
    template = one(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
    assert asg.inputs["launchTemplate"]["id"] == template.id
    assert template.inputs["instanceType"] == expected.instance_type
    assert asg.inputs["targetGroupArns"] == [one(mocks, "aws:lb/targetGroup:TargetGroup").outputs["arn"]]
    assert asg.inputs["healthCheckType"] == "ELB"
    assert any(token == "aws:ec2/getVpc:getVpc" and args.get("default") is True for token, args in mocks.calls)


def test_load_balancer_health_checks_ping_on_the_service_port():
    mocks = run_mode("reserved")
    tg = one(mocks, "aws:lb/targetGroup:TargetGroup")
    assert tg.inputs["port"] == 8080
    assert tg.inputs["healthCheck"]["path"] == "/ping"
    assert tg.inputs["healthCheck"]["port"] == "8080"
    alb = one(mocks, "aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["loadBalancerType"] == "application"
    listener = one(mocks, "aws:lb/listener:Listener")
    assert listener.inputs["loadBalancerArn"] == alb.outputs["arn"]
    assert listener.inputs["defaultActions"][0]["targetGroupArn"] == tg.outputs["arn"]


def test_instance_port_must_only_be_reachable_from_the_load_balancer():
    mocks = run_mode("reserved")
    sgs = _sgs(mocks)
    alb_sg, instance_sg = sgs["serve-alb-sg"], sgs["serve-instance-sg"]
    assert one(mocks, "aws:lb/loadBalancer:LoadBalancer").inputs["securityGroups"] == [alb_sg.id]
    assert one(mocks, "aws:ec2/launchTemplate:LaunchTemplate").inputs["vpcSecurityGroupIds"] == [instance_sg.id]
    (rule,) = instance_sg.inputs["ingress"]
    assert rule["fromPort"] == rule["toPort"] == 8080, "instance port must only be the service port"
    assert rule.get("securityGroups") == [alb_sg.id], "instance port must only be reachable from the load balancer"
    assert not rule.get("cidrBlocks") and not rule.get("ipv6CidrBlocks"), "instance port must only be reachable from the load balancer"
    for sg in sgs.values():
        for r in sg.inputs["ingress"]:
            assert not (r["fromPort"] <= 22 <= r["toPort"]), "no SSH"
    (alb_rule,) = alb_sg.inputs["ingress"]
    assert alb_rule["fromPort"] == alb_rule["toPort"] == 80


def test_service_port_follows_the_stack():
    mocks = run(stack_config("reserved", service_port=9000), stack="port")
    assert one(mocks, "aws:lb/targetGroup:TargetGroup").inputs["healthCheck"]["port"] == "9000"
    (rule,) = _sgs(mocks)["serve-instance-sg"].inputs["ingress"]
    assert rule["fromPort"] == 9000
    user_data = base64.b64decode(one(mocks, "aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]).decode()
    assert "-p 9000:8080" in user_data


def test_instance_profile_uses_the_instance_role():
    mocks = run_mode("reserved")
    role = one(mocks, "aws:iam/role:Role")
    assert "ec2.amazonaws.com" in role.inputs["assumeRolePolicy"]
    profile = one(mocks, "aws:iam/instanceProfile:InstanceProfile")
    assert profile.inputs["role"] == role.outputs["name"]
    template = one(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["iamInstanceProfile"]["arn"] == profile.outputs["arn"]


def test_user_data_runs_the_lmi_container_with_the_artifact():
    mocks = run_mode("reserved")
    bucket = one(mocks, "aws:s3/bucket:Bucket").outputs["bucket"]
    script = base64.b64decode(one(mocks, "aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]).decode()
    key = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2").inputs["key"]
    assert key.startswith("model/") and f"MODEL_DATA_URL=s3://{bucket}/{key}" in script, "the content-addressed artifact"
    assert IMAGE in script


def test_render_user_data():
    script = render_user_data(region="us-east-1", image=IMAGE, model_data_url="s3://b/model/model.tar.gz", service_port=8080)
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    assert "MODEL_DIR=/opt/ml/model\n" in script
    assert 'aws s3 cp --region "$REGION" "$MODEL_DATA_URL" "$MODEL_DIR.tar.gz"' in script
    assert 'tar -xzf "$MODEL_DIR.tar.gz" -C "$MODEL_DIR"' in script
    assert "docker login --username AWS --password-stdin 763104351884.dkr.ecr.us-east-1.amazonaws.com" in script
    run_line = next(line for line in script.splitlines() if line.startswith("docker run"))
    assert "--gpus all" in run_line and "-p 8080:8080" in run_line and '-v "$MODEL_DIR:$MODEL_DIR"' in run_line
    assert " -e " not in run_line, "the container gets no model variables: it serves /opt/ml/model alone"


def test_render_user_data_quotes_and_no_ecr_login_elsewhere():
    script = render_user_data(region="eu-west-1", image="docker.io/me/lmi:1", model_data_url="s3://b/m y.tar.gz",
                              service_port=9000)
    assert "docker login" not in script, "no ECR login for a non-ECR image"
    assert "MODEL_DATA_URL='s3://b/m y.tar.gz'" in script and "-p 9000:8080" in script


def test_weights_uri_reaches_the_container_only_through_serving_properties(tmp_path):
    """Reserved with weightsUri: one model (ours), its serving.properties naming the weights; no HF_MODEL_ID.

    DJL registers a second model for HF_MODEL_ID next to /opt/ml/model, and /invocations without a
    model name then answers 400 "Parameter model_name is required".
    """
    import tarfile

    from llmdeploy.infra.offline_preview import run_program

    mocks = run_program(stack_config("reserved", weights_uri="s3://weights-bucket/flan-t5-xl/"), stack="reserved-weights",
                        artifact_dir=str(tmp_path))
    script = base64.b64decode(one(mocks, "aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]).decode()
    assert "HF_MODEL_ID" not in script and "weights-bucket" not in script
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        props = tar.extractfile("serving.properties").read().decode()
    assert "option.model_id=s3://weights-bucket/flan-t5-xl/\n" in props


def test_outputs_give_a_curl_command():
    mocks = run_mode("reserved")
    dns = one(mocks, "aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    assert mocks.outputs["url"] == f"http://{dns}"
    assert mocks.outputs["invoke_command"].startswith(f"curl -sS -o response.json -X POST http://{dns}/invocations ")
    from llmdeploy.responses import check_body_command

    # The default load balancer is internal (issue 10): the command ends in a comment saying where it works.
    command, _, comment = mocks.outputs["invoke_command"].partition("  # ")
    assert command.endswith(f" && {check_body_command('response.json')}"), "the body is checked, not only the status"
    assert comment.startswith("internal load balancer: run this inside the VPC")


# -- load balancer hardening: ingressCidr and certificateArn ------------------------------------------

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def _listeners(mocks) -> dict[int, object]:
    return {int(li.inputs["port"]): li for li in of_type(mocks, "aws:lb/listener:Listener")}


def _alb_ports_and_cidrs(mocks) -> list[tuple[int, int, list]]:
    return [(r["fromPort"], r["toPort"], r.get("cidrBlocks")) for r in _sgs(mocks)["serve-alb-sg"].inputs["ingress"]]


def test_default_is_not_reachable_from_the_internet():
    mocks = run_mode("reserved")
    listeners = _listeners(mocks)
    assert set(listeners) == {80}, "without certificateArn the load balancer listens on port 80 only"
    assert listeners[80].inputs["protocol"] == "HTTP"
    alb = one(mocks, "aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["internal"] is True, \
        "without ingressCidr or certificateArn the model must not be served over plain HTTP to the internet"
    assert _alb_ports_and_cidrs(mocks) == [(80, 80, ["172.31.0.0/16"])], \
        "an internal load balancer admits the VPC's CIDR only (the default VPC's here), never 0.0.0.0/0"
    assert "inside the VPC" in mocks.outputs["invoke_command"], "the invoke command must say where it works"


def test_asking_for_the_internet_makes_the_load_balancer_internet_facing():
    mocks = run(stack_config("reserved", ingress_cidr="0.0.0.0/0"), stack="open")
    assert one(mocks, "aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is False
    assert _alb_ports_and_cidrs(mocks) == [(80, 80, ["0.0.0.0/0"])], "an explicit 0.0.0.0/0 is the user's choice"
    tls = run(stack_config("reserved", certificate_arn=CERT), stack="tls-everyone")
    assert one(tls, "aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is False
    assert sorted(_alb_ports_and_cidrs(tls)) == [(80, 80, ["0.0.0.0/0"]), (443, 443, ["0.0.0.0/0"])], \
        "a certificate alone serves everyone, over HTTPS only (80 redirects)"


def test_asg_subnets_are_only_in_zones_offering_the_type():
    mocks = run(stack_config("reserved", instance_type="g5.xlarge", instance_count=1, min_instances=1), stack="g5")
    offerings = [args for token, args in mocks.calls if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"]
    assert offerings and offerings[0]["locationType"] == "availability-zone"
    assert offerings[0]["filters"] == [{"name": "instance-type", "values": ["g5.xlarge"]}]
    # The mocks offer g5 in us-east-1a and 1b only (FAKE_OFFERINGS): subnet-0ccc (1c) must not be in the group.
    assert one(mocks, "aws:autoscaling/group:Group").inputs["vpcZoneIdentifiers"] == ["subnet-0aaa", "subnet-0bbb"]
    assert one(mocks, "aws:lb/loadBalancer:LoadBalancer").inputs["subnets"] == ["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"], \
        "the load balancer still spans every zone"


def test_no_zone_offering_the_type_is_one_line():
    from llmdeploy.errors import ConfigError
    from llmdeploy.infra import offline_preview

    saved = dict(offline_preview.FAKE_OFFERINGS)
    offline_preview.FAKE_OFFERINGS.pop("g4dn")
    try:
        with pytest.raises(ConfigError) as err:
            run(stack_config("reserved"), stack="nowhere")
    finally:
        offline_preview.FAKE_OFFERINGS.update(saved)
    assert "no availability zone of us-east-1 offers g4dn.xlarge" in str(err.value) and "\n" not in str(err.value)


def test_launch_template_changes_roll_through_the_fleet():
    mocks = run_mode("reserved")
    asg = one(mocks, "aws:autoscaling/group:Group")
    refresh = asg.inputs["instanceRefresh"]
    assert refresh["strategy"] == "Rolling", "a new launch template version must replace running instances"
    prefs = refresh["preferences"]
    assert prefs["minHealthyPercentage"] == 100 and prefs["maxHealthyPercentage"] == 200, \
        "launch a new instance before terminating an old one: no capacity lost during the roll"
    assert int(prefs["instanceWarmup"]) >= 600, "wait for the model to load before moving on"
    template = one(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
    assert asg.inputs["launchTemplate"]["version"] == str(template.outputs["latestVersion"]), \
        "the group must follow the template's latest version, so each new version triggers the refresh"
    assert template.inputs["updateDefaultVersion"] is True


def test_ingress_cidr_limits_who_reaches_the_load_balancer():
    mocks = run(stack_config("reserved", ingress_cidr="203.0.113.0/24"), stack="cidr")
    assert _alb_ports_and_cidrs(mocks) == [(80, 80, ["203.0.113.0/24"])], \
        "the ALB security group must open only the listener ports, only to ingressCidr"
    (rule,) = _sgs(mocks)["serve-instance-sg"].inputs["ingress"]
    assert rule.get("securityGroups") == [_sgs(mocks)["serve-alb-sg"].id] and not rule.get("cidrBlocks"), \
        "instances must accept the service port only from the ALB security group, whatever ingressCidr is"


def test_certificate_turns_on_https_and_80_only_redirects():
    mocks = run(stack_config("reserved", certificate_arn=CERT, ingress_cidr="198.51.100.0/24"), stack="tls")
    listeners = _listeners(mocks)
    assert set(listeners) == {80, 443}, "with certificateArn the load balancer listens on 443 (HTTPS) and 80 (redirect)"
    https, http = listeners[443].inputs, listeners[80].inputs
    tg_arn = one(mocks, "aws:lb/targetGroup:TargetGroup").outputs["arn"]
    assert https["protocol"] == "HTTPS" and https["certificateArn"] == CERT, "HTTPS listener must use the configured certificate"
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06", "HTTPS listener must use the TLS 1.3/1.2 policy"
    assert https["defaultActions"] == [{"type": "forward", "targetGroupArn": tg_arn}], "HTTPS forwards to the model servers"
    (action,) = http["defaultActions"]
    assert action["type"] == "redirect" and not action.get("targetGroupArn"), \
        "with a certificate, port 80 must only redirect (never forward plain HTTP to the model)"
    assert action["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}, \
        "port 80 must redirect to HTTPS 443 with HTTP 301"
    assert sorted(_alb_ports_and_cidrs(mocks)) == [(80, 80, ["198.51.100.0/24"]), (443, 443, ["198.51.100.0/24"])], \
        "the ALB security group must open only the listener ports (80, 443), only to ingressCidr"
    (rule,) = _sgs(mocks)["serve-instance-sg"].inputs["ingress"]
    assert rule["fromPort"] == rule["toPort"] == 8080 and rule.get("securityGroups") == [_sgs(mocks)["serve-alb-sg"].id], \
        "instances must accept the service port only from the ALB security group"
    dns = one(mocks, "aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    assert mocks.outputs["url"] == f"https://{dns}", "with a certificate the endpoint URL is https"
    assert mocks.outputs["invoke_command"].startswith(f"curl -sS -o response.json -X POST https://{dns}/invocations "), \
        "with a certificate the invoke command must use https"


def test_https_stack_costs_its_public_addresses_more():
    """HTTPS adds listeners, which cost nothing: the ALB hour is priced either way. But a certificate makes the
    ALB internet-facing (the plain default is internal since issue 10), and an internet-facing ALB holds one
    public IPv4 address per Availability Zone (issue 11's line item): exactly that is the difference."""
    from llmdeploy import costs
    from llmdeploy.catalog import load_catalog
    from llmdeploy.infra.offline_preview import price_resources

    cat = load_catalog()
    plain, tls = stack_config("reserved"), stack_config("reserved", certificate_arn=CERT)
    items = [[i for r in price_resources(run(c, stack=s).resources, c, cat) for i in r.items]
             for c, s in ((plain, "cost-http"), (tls, "cost-https"))]
    extra = [i for i in items[1] if i not in items[0]]
    assert [i.kind for i in extra] == ["public-ipv4"] and costs.total(items[0]) > 0
    assert costs.total(items[1]) - costs.total(items[0]) == pytest.approx(costs.load_balancer_ipv4(cat, plain.region).monthly_usd)


def test_invoke_command_with_https_notes_the_certificate_domain():
    from llmdeploy.infra.reserved_endpoint import invoke_command

    plain = invoke_command("lb.example.elb.amazonaws.com")
    assert plain.startswith("curl -sS -o response.json -X POST http://lb.example.elb.amazonaws.com/invocations ")
    assert "  # " not in plain
    assert "inside the VPC" in invoke_command("internal-lb.example.elb.amazonaws.com", internal=True)
    tls = invoke_command("lb.example.elb.amazonaws.com", "https")
    assert tls.startswith("curl -sS -o response.json -X POST https://lb.example.elb.amazonaws.com/invocations ")
    assert "# use your certificate's domain" in tls, "the https command must say the certificate names another host"
