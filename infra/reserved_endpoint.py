"""Reserved mode: the LMI container on self-managed EC2 GPU instances (g4dn) behind an ALB.

For steady traffic a reserved instance costs less than SageMaker hosting of the
same hardware; the price is running the fleet yourself. Shape:

  ingressCidr --80--> ALB (its own SG) --servicePort--> instances (SG: only from the ALB SG)
  ingressCidr --443 (TLS, certificateArn)--> ALB; 80 then only redirects to 443 (HTTP 301)

The ALB's security group opens exactly its listener ports, only to ``ingressCidr``.

Instances come from an Auto Scaling group over the default VPC's subnets and a
launch template that requires IMDSv2 (hop limit 2, so the container can reach
instance-role credentials through the docker bridge) and encrypts its gp3 root
volume. User data (``render_user_data``, a pure function) fetches the model
artifact from the bucket and runs the LMI container with ``--gpus all``; the
handler answers /ping and /invocations on 8080 inside the container, published on
``servicePort``. No SSH: operators use Session Manager (AmazonSSMManagedInstanceCore).
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from llmdeploy.assumptions import load_assumptions
from llmdeploy.infra import iam
from llmdeploy.infra.artifact import ARTIFACT_PREFIX
from llmdeploy.infra.lmi_image import ecr_registry, ecr_repository_arn, partition
from llmdeploy.stackconfig import check_certificate_arn, check_ingress_cidr

# AWS's GPU base image: NVIDIA driver, Docker and the NVIDIA container toolkit preinstalled.
AMI_NAME_FILTER = "Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023) *"
CONTAINER_PORT = 8080  # the SageMaker container contract LMI follows
ROOT_VOLUME_GB = load_assumptions().root_volume_gb  # LMI image (~20 GB unpacked) + weights cache; plan prices the same
# Loading multi-GB weights takes minutes: don't let the ASG replace instances meanwhile.
HEALTH_CHECK_GRACE_S = 900
SAMPLE_BODY = '{"inputs": "Translate to German: How old are you?"}'
HTTP_PORT, HTTPS_PORT = 80, 443
# TLS 1.3 with TLS 1.2 fallback and only forward-secret AEAD ciphers: AWS's recommended policy for ALB HTTPS listeners.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass
class ReservedEndpointArgs:
    region: str
    image: str
    model_data_url: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    instance_type: str
    instance_count: int
    min_instances: int
    service_port: int = 8080
    weights_uri: str = ""
    # Who may reach the load balancer (its listener ports). The instances are never reachable directly.
    ingress_cidr: str = "0.0.0.0/0"
    # ACM certificate in ``region``: HTTPS on 443, and 80 only redirects. Empty: plain HTTP on 80.
    certificate_arn: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """ConfigError for a bad CIDR or certificate, before anything is registered (normalises the CIDR)."""
        self.ingress_cidr = check_ingress_cidr(self.ingress_cidr)
        self.certificate_arn = check_certificate_arn(self.certificate_arn, self.region) if self.certificate_arn else ""

    @property
    def listener_ports(self) -> tuple[int, ...]:
        return (HTTP_PORT, HTTPS_PORT) if self.certificate_arn else (HTTP_PORT,)

    @property
    def scheme(self) -> str:
        return "https" if self.certificate_arn else "http"


def render_user_data(*, region: str, image: str, model_data_url: str, service_port: int, weights_uri: str = "") -> str:
    """The instance boot script: fetch model.tar.gz, log in to ECR, run the LMI container."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# Written by llmdeploy (reserved mode): serve the model with the LMI container.",
        "set -euo pipefail",
        "exec > >(tee -a /var/log/llmdeploy-user-data.log) 2>&1",
        f"REGION={q(region)}",
        f"IMAGE={q(image)}",
        f"MODEL_DATA_URL={q(model_data_url)}",
        "systemctl enable --now docker",
        "mkdir -p /opt/ml/model",
        # Instance-role credentials through IMDSv2; the role may read only the artifact bucket.
        'aws s3 cp --region "$REGION" "$MODEL_DATA_URL" /opt/ml/model.tar.gz',
        "tar -xzf /opt/ml/model.tar.gz -C /opt/ml/model",
    ]
    registry = ecr_registry(image)
    if registry:
        lines.append(f'aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin {q(registry)}')
    lines.append('docker pull "$IMAGE"')
    env = f" -e HF_MODEL_ID={q(weights_uri)}" if weights_uri else ""
    lines.append(
        "docker run -d --name llmdeploy --restart unless-stopped --gpus all --shm-size 2g "
        f"-p {int(service_port)}:{CONTAINER_PORT} -v /opt/ml/model:/opt/ml/model{env} \"$IMAGE\""
    )
    return "\n".join(lines) + "\n"


def invoke_command(dns_name: str, scheme: str = "http") -> str:
    """A curl call of the endpoint. With HTTPS the certificate names your domain, not the ALB's DNS name:
    the trailing shell comment says so, since curl rejects the name mismatch until that domain points here."""
    command = (f"curl -X POST {scheme}://{dns_name}/invocations -H 'Content-Type: application/json' "
               f"-d {shlex.quote(SAMPLE_BODY)}")
    if scheme == "https":
        command += f"  # use your certificate's domain in place of {dns_name} once its DNS record (CNAME/alias) points here"
    return command


class ReservedEndpoint(pulumi.ComponentResource):
    url: pulumi.Output[str]
    invoke_command: pulumi.Output[str]

    def __init__(self, name: str, args: ReservedEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        args.validate()  # before anything is registered
        super().__init__("llmdeploy:ec2:ReservedEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags

        ami = aws.ec2.get_ami_output(
            most_recent=True,
            owners=["amazon"],
            filters=[{"name": "name", "values": [AMI_NAME_FILTER]}, {"name": "architecture", "values": ["x86_64"]}],
        )
        vpc = aws.ec2.get_vpc_output(default=True)
        subnets = aws.ec2.get_subnets_output(filters=[
            {"name": "vpc-id", "values": [vpc.id]},
            {"name": "default-for-az", "values": ["true"]},
        ])

        # -- network: the ALB is the only way in --------------------------------------------------
        alb_sg = aws.ec2.SecurityGroup(
            f"{name}-alb-sg",
            description=f"llmdeploy load balancer: {args.scheme.upper()} in, model port out to the VPC",
            vpc_id=vpc.id,
            # Exactly the listener ports, only from ingressCidr.
            ingress=[{"protocol": "tcp", "from_port": port, "to_port": port, "cidr_blocks": [args.ingress_cidr],
                      "description": f"{'HTTPS' if port == HTTPS_PORT else 'HTTP'} to the load balancer"}
                     for port in args.listener_ports],
            egress=[{"protocol": "tcp", "from_port": args.service_port, "to_port": args.service_port,
                     "cidr_blocks": [vpc.cidr_block], "description": "to the model servers"}],
            tags=tags,
            opts=child,
        )
        instance_sg = aws.ec2.SecurityGroup(
            f"{name}-instance-sg",
            description="llmdeploy model servers: service port from the load balancer only, no SSH",
            vpc_id=vpc.id,
            ingress=[{"protocol": "tcp", "from_port": args.service_port, "to_port": args.service_port,
                      "security_groups": [alb_sg.id], "description": "model port, from the load balancer only"}],
            # Out: ECR, S3 and (without weightsUri) the Hugging Face Hub over HTTPS.
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            tags=tags,
            opts=child,
        )

        # -- identity: read the artifact, pull the image, Session Manager --------------------------
        part = partition(args.region)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=iam.assume_role_policy("ec2.amazonaws.com"),
            description="llmdeploy reserved-mode instances (least privilege)",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(lambda arn: iam.to_json(iam.instance_policy(
                bucket_arn=arn, artifact_prefix=ARTIFACT_PREFIX, ecr_repository_arn=ecr_repository_arn(args.image),
                weights_uri=args.weights_uri, partition=part))),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm", role=role.name, policy_arn=iam.SSM_CORE_POLICY.format(partition=part), opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=child)

        # -- instances -----------------------------------------------------------------------------
        user_data = pulumi.Output.from_input(args.model_data_url).apply(lambda url: base64.b64encode(render_user_data(
            region=args.region, image=args.image, model_data_url=url, service_port=args.service_port,
            weights_uri=args.weights_uri).encode()).decode())
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            image_id=ami.id,
            instance_type=args.instance_type,
            iam_instance_profile={"arn": profile.arn},
            vpc_security_group_ids=[instance_sg.id],
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only
                "http_put_response_hop_limit": 2,  # one hop more for the container's bridge network
            },
            block_device_mappings=[{
                "device_name": ami.root_device_name,
                "ebs": {"volume_size": ROOT_VOLUME_GB, "volume_type": "gp3", "encrypted": "true",
                        "delete_on_termination": "true"},
            }],
            user_data=user_data,
            update_default_version=True,
            tag_specifications=[{"resource_type": kind, "tags": tags} for kind in ("instance", "volume", "network-interface")],
            tags=tags,
            opts=child,
        )

        # -- load balancer -------------------------------------------------------------------------
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=args.service_port,
            protocol="HTTP",
            target_type="instance",
            vpc_id=vpc.id,
            deregistration_delay=30,
            health_check={"path": "/ping", "port": str(args.service_port), "protocol": "HTTP", "matcher": "200",
                          "interval": 30, "timeout": 10, "healthy_threshold": 2, "unhealthy_threshold": 5},
            tags=tags,
            opts=child,
        )
        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[alb_sg.id],
            subnets=subnets.ids,
            # Generation of a long answer can take a while.
            idle_timeout=120,
            drop_invalid_header_fields=True,
            tags=tags,
            opts=child,
        )
        forward = [{"type": "forward", "target_group_arn": target_group.arn}]
        if args.certificate_arn:
            aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=alb.arn,
                port=HTTPS_PORT,
                protocol="HTTPS",
                certificate_arn=args.certificate_arn,
                ssl_policy=TLS_POLICY,
                default_actions=forward,
                tags=tags,
                opts=child,
            )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=alb.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            # With a certificate, plain HTTP never reaches the model: prompts and answers only travel over TLS.
            default_actions=[{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": str(HTTPS_PORT),
                                                               "status_code": "HTTP_301"}}]
            if args.certificate_arn else forward,
            tags=tags,
            opts=child,
        )
        aws.autoscaling.Group(
            f"{name}-asg",
            desired_capacity=args.instance_count,
            min_size=args.min_instances,
            max_size=args.instance_count,
            vpc_zone_identifiers=subnets.ids,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            target_group_arns=[target_group.arn],
            health_check_type="ELB",
            health_check_grace_period=HEALTH_CHECK_GRACE_S,
            # ASGs take tags as a list; propagate them to the instances they launch.
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in tags.items()],
            opts=child,
        )

        self.url = pulumi.Output.concat(f"{args.scheme}://", alb.dns_name)
        self.invoke_command = alb.dns_name.apply(lambda dns: invoke_command(dns, args.scheme))
        self.register_outputs({"url": self.url, "invoke_command": self.invoke_command})
