"""Reserved mode: the LMI container on self-managed EC2 GPU instances (g4dn) behind an ALB.

For steady traffic a reserved instance costs less than SageMaker hosting of the
same hardware; the price is running the fleet yourself. Shape:

  ingressCidr --80--> ALB (its own SG) --servicePort--> instances (SG: only from the ALB SG)
  ingressCidr --443 (TLS, certificateArn)--> ALB; 80 then only redirects to 443 (HTTP 301)

Nothing is open to the internet over plain HTTP unless the stack asks for it: with
neither ``ingressCidr`` nor ``certificateArn`` the ALB is *internal* (reachable from
the VPC only, its security group admits the VPC's CIDR); ``ingressCidr`` makes it
internet-facing for that range; a certificate alone makes it internet-facing over
HTTPS for everyone. The ALB's security group opens exactly its listener ports.

Instances come from an Auto Scaling group over the default VPC's default subnets in
the availability zones that offer the instance type (DescribeInstanceTypeOfferings;
one line naming the type and region when none does), and a launch template that
requires IMDSv2 (hop limit 2, so the container can reach instance-role credentials
through the docker bridge) and encrypts its gp3 root volume. User data
(``render_user_data``, a pure function) fetches the content-addressed model artifact
from the bucket and runs the LMI container with ``--gpus all``; the handler answers
/ping and /invocations on 8080 inside the container, published on ``servicePort``.
A new artifact (or image) is a new launch template version; the group's instance
refresh then replaces the fleet, launching new instances before it terminates old
ones (min healthy 100 %, max 200 %), so no instance keeps serving an old artifact.

Public IPv4: instances keep the address the default subnets assign. Their security
group admits nothing but the ALB, but without a NAT gateway or VPC endpoints (a
default VPC has neither, and llmdeploy does not modify its route tables) that address
is their only way to ECR, S3 and Session Manager.

No SSH: operators use Session Manager (AmazonSSMManagedInstanceCore).
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from llmdeploy.assumptions import load_assumptions
from llmdeploy.containers.package import CONTAINER_MODEL_DIR
from llmdeploy.errors import ConfigError
from llmdeploy.infra import iam
from llmdeploy.infra.artifact import ARTIFACT_PREFIX
from llmdeploy.infra.lmi_image import ecr_registry, ecr_repository_arn
from llmdeploy.infra.zones import offered_zones as zones_offering
from llmdeploy.monitoring import GPU_NAMESPACE, agent_setup_lines
from llmdeploy.responses import check_body_command
from llmdeploy.stackconfig import alb_internet_facing, check_certificate_arn, check_ingress_cidr, partition

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
EVERYONE = "0.0.0.0/0"


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
    # Who may reach the load balancer from the internet (its listener ports). Empty: no one over plain HTTP (an
    # internal load balancer), or everyone over HTTPS with a certificate. Instances are never reachable directly.
    ingress_cidr: str = ""
    # ACM certificate in ``region``: HTTPS on 443, and 80 only redirects. Empty: plain HTTP on 80.
    certificate_arn: str = ""
    # CloudWatch agent config (JSON) for GPU metrics (llmdeploy.monitoring.agent_config); empty: no agent.
    agent_config: str = ""
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

    @property
    def internet_facing(self) -> bool:
        """Asked for explicitly: an ingress CIDR, or a certificate (then only TLS carries prompts and answers)."""
        return alb_internet_facing(self.ingress_cidr, self.certificate_arn)

    @property
    def public_cidr(self) -> str | None:
        """Who reaches an internet-facing ALB; None for an internal one (the VPC's CIDR then)."""
        return (self.ingress_cidr or EVERYONE) if self.internet_facing else None


def render_user_data(*, region: str, image: str, model_data_url: str, service_port: int, agent_config: str = "") -> str:
    """The instance boot script: fetch model.tar.gz, log in to ECR, run the LMI container (then the GPU metrics agent).

    The container serves exactly one model, /opt/ml/model (model.tar.gz). Where the weights are
    (weightsUri, a Hub id or packaged) is option.model_id in its serving.properties, nothing else:
    an HF_MODEL_ID variable would make DJL register a second model next to it, and /invocations
    without a model name would then answer 400 "Parameter model_name is required".
    """
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# Written by llmdeploy (reserved mode): serve the model with the LMI container.",
        "set -euo pipefail",
        "exec > >(tee -a /var/log/llmdeploy-user-data.log) 2>&1",
        f"REGION={q(region)}",
        f"IMAGE={q(image)}",
        f"MODEL_DATA_URL={q(model_data_url)}",
        f"MODEL_DIR={q(CONTAINER_MODEL_DIR)}",
        "systemctl enable --now docker",
        'mkdir -p "$MODEL_DIR"',
        # Instance-role credentials through IMDSv2; the role may read only the artifact bucket.
        'aws s3 cp --region "$REGION" "$MODEL_DATA_URL" "$MODEL_DIR.tar.gz"',
        'tar -xzf "$MODEL_DIR.tar.gz" -C "$MODEL_DIR"',
    ]
    registry = ecr_registry(image)
    if registry:
        lines.append(f'aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin {q(registry)}')
    lines.append('docker pull "$IMAGE"')
    lines.append(
        "docker run -d --name llmdeploy --restart unless-stopped --gpus all --shm-size 2g "
        f'-p {int(service_port)}:{CONTAINER_PORT} -v "$MODEL_DIR:$MODEL_DIR" "$IMAGE"'
    )
    if agent_config:
        lines += agent_setup_lines(agent_config)
    return "\n".join(lines) + "\n"


def invoke_command(dns_name: str, scheme: str = "http", internal: bool = False) -> str:
    """A curl call of the endpoint. With HTTPS the certificate names your domain, not the ALB's DNS name:
    the trailing shell comment says so, since curl rejects the name mismatch until that domain points here.
    An internal ALB answers only inside the VPC: the comment says that, and how to open it."""
    # DJL answers a request batched with a malformed one with 200 and an error body: check the body too.
    command = (f"curl -sS -o response.json -X POST {scheme}://{dns_name}/invocations "
               f"-H 'Content-Type: application/json' -d {shlex.quote(SAMPLE_BODY)} && {check_body_command('response.json')}")
    if scheme == "https":
        command += f"  # use your certificate's domain in place of {dns_name} once its DNS record (CNAME/alias) points here"
    elif internal:
        command += ("  # internal load balancer: run this inside the VPC (e.g. through Session Manager), or set "
                    "llmdeploy:ingressCidr / llmdeploy:certificateArn to serve the internet")
    return command


def offered_zones(instance_type: str, region: str, *, opts: pulumi.InvokeOptions | None = None) -> list[str]:
    """The availability zones of ``region`` that offer ``instance_type``; ConfigError in one line when none does."""
    zones = zones_offering(instance_type, opts=opts)
    if not zones:
        raise ConfigError(f"no availability zone of {region} offers {instance_type} (DescribeInstanceTypeOfferings).",
                          hint="Pick another instance type or region ('llmdeploy plan --region REGION').")
    return zones


@dataclass(frozen=True)
class _Network:
    """The default VPC and its default subnets: the load balancer's (every zone) and the instances' (zones offering the type)."""

    vpc_id: str
    vpc_cidr: str
    alb_subnets: Sequence[str]
    instance_subnets: Sequence[str]


class ReservedEndpoint(pulumi.ComponentResource):
    url: pulumi.Output[str]
    invoke_command: pulumi.Output[str]

    def __init__(self, name: str, args: ReservedEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        args.validate()  # before anything is registered
        super().__init__("llmdeploy:ec2:ReservedEndpoint", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)

        ami = aws.ec2.get_ami_output(
            most_recent=True,
            owners=["amazon"],
            filters=[{"name": "name", "values": [AMI_NAME_FILTER]}, {"name": "architecture", "values": ["x86_64"]}],
        )
        network = self._network()
        alb_sg, instance_sg = self._security_groups(network)
        template = self._launch_template(ami, self._instance_profile(), instance_sg)
        alb, target_group = self._load_balancer(network, alb_sg)
        self._fleet(network, template, target_group)

        # CloudWatch's LoadBalancer and TargetGroup dimensions: the ARNs' final parts (app/..., targetgroup/...).
        self.load_balancer_arn_suffix = alb.arn_suffix
        self.target_group_arn_suffix = target_group.arn_suffix
        # An internal load balancer's name resolves to private addresses: call it from inside the VPC.
        self.url = pulumi.Output.concat(f"{args.scheme}://", alb.dns_name)
        self.invoke_command = alb.dns_name.apply(lambda dns: invoke_command(dns, args.scheme, not args.internet_facing))
        self.register_outputs({"url": self.url, "invoke_command": self.invoke_command})

    # -- network: the default VPC's default subnets ----------------------------------------------------

    def _network(self) -> _Network:
        args, invoke = self._args, pulumi.InvokeOptions(parent=self)
        vpc = aws.ec2.get_vpc(default=True, opts=invoke)
        default_subnets: list[aws.ec2.GetSubnetsFilterArgsDict] = [
            {"name": "vpc-id", "values": [vpc.id]}, {"name": "default-for-az", "values": ["true"]}]
        subnets = aws.ec2.get_subnets(filters=default_subnets, opts=invoke)  # the ALB: every AZ
        # The instances: only AZs that offer the type (RunInstances fails "Unsupported" in the others).
        zones = offered_zones(args.instance_type, args.region, opts=invoke)
        instance_subnets = aws.ec2.get_subnets(
            filters=default_subnets + [{"name": "availability-zone", "values": zones}], opts=invoke).ids
        if not instance_subnets:
            raise ConfigError(f"the default VPC in {args.region} has no default subnet in the zones that offer "
                              f"{args.instance_type} ({', '.join(zones)}).",
                              hint="Create a default subnet there (aws ec2 create-default-subnet --availability-zone "
                                   f"{zones[0]}) or pick another llmdeploy:instanceType.")
        return _Network(vpc.id, vpc.cidr_block, subnets.ids, instance_subnets)

    # -- security groups: the ALB is the only way in ---------------------------------------------------

    def _security_groups(self, network: _Network) -> tuple[aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]:
        name, args = self._name, self._args
        alb_sg = aws.ec2.SecurityGroup(
            f"{name}-alb-sg",
            description=f"llmdeploy load balancer: {args.scheme.upper()} in, model port out to the VPC",
            vpc_id=network.vpc_id,
            # Exactly the listener ports, only from ingressCidr (internal: from the VPC).
            ingress=[{"protocol": "tcp", "from_port": port, "to_port": port,
                      "cidr_blocks": [args.public_cidr or network.vpc_cidr],
                      "description": f"{'HTTPS' if port == HTTPS_PORT else 'HTTP'} to the load balancer"}
                     for port in args.listener_ports],
            egress=[{"protocol": "tcp", "from_port": args.service_port, "to_port": args.service_port,
                     "cidr_blocks": [network.vpc_cidr], "description": "to the model servers"}],
            tags=args.tags,
            opts=self._child,
        )
        instance_sg = aws.ec2.SecurityGroup(
            f"{name}-instance-sg",
            description="llmdeploy model servers: service port from the load balancer only, no SSH",
            vpc_id=network.vpc_id,
            ingress=[{"protocol": "tcp", "from_port": args.service_port, "to_port": args.service_port,
                      "security_groups": [alb_sg.id], "description": "model port, from the load balancer only"}],
            # Out: ECR, S3 and (without weightsUri) the Hugging Face Hub over HTTPS.
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": [EVERYONE]}],
            tags=args.tags,
            opts=self._child,
        )
        return alb_sg, instance_sg

    # -- identity: read the artifact, pull the image, Session Manager ---------------------------------

    def _instance_profile(self) -> aws.iam.InstanceProfile:
        name, args, child = self._name, self._args, self._child
        part = partition(args.region)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=iam.assume_role_policy("ec2.amazonaws.com"),
            description="llmdeploy reserved-mode instances (least privilege)",
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(lambda arn: iam.to_json(iam.instance_policy(
                bucket_arn=arn, artifact_prefix=ARTIFACT_PREFIX, ecr_repository_arn=ecr_repository_arn(args.image),
                weights_uri=args.weights_uri, partition=part,
                metrics_namespace=GPU_NAMESPACE if args.agent_config else None))),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm", role=role.name, policy_arn=iam.SSM_CORE_POLICY.format(partition=part), opts=child,
        )
        return aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=args.tags, opts=child)

    # -- instances: what each one boots --------------------------------------------------------------

    def _launch_template(self, ami, profile: aws.iam.InstanceProfile,
                         instance_sg: aws.ec2.SecurityGroup) -> aws.ec2.LaunchTemplate:
        args = self._args
        user_data = pulumi.Output.from_input(args.model_data_url).apply(lambda url: base64.b64encode(render_user_data(
            region=args.region, image=args.image, model_data_url=url, service_port=args.service_port,
            agent_config=args.agent_config).encode()).decode())
        return aws.ec2.LaunchTemplate(
            f"{self._name}-template",
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
            tag_specifications=[{"resource_type": kind, "tags": args.tags} for kind in ("instance", "volume", "network-interface")],
            tags=args.tags,
            opts=self._child,
        )

    # -- load balancer ------------------------------------------------------------------------------

    def _load_balancer(self, network: _Network,
                       alb_sg: aws.ec2.SecurityGroup) -> tuple[aws.lb.LoadBalancer, aws.lb.TargetGroup]:
        name, args, child = self._name, self._args, self._child
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=args.service_port,
            protocol="HTTP",
            target_type="instance",
            vpc_id=network.vpc_id,
            deregistration_delay=30,
            health_check={"path": "/ping", "port": str(args.service_port), "protocol": "HTTP", "matcher": "200",
                          "interval": 30, "timeout": 10, "healthy_threshold": 2, "unhealthy_threshold": 5},
            tags=args.tags,
            opts=child,
        )
        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=not args.internet_facing,
            security_groups=[alb_sg.id],
            subnets=network.alb_subnets,
            # Generation of a long answer can take a while.
            idle_timeout=120,
            drop_invalid_header_fields=True,
            tags=args.tags,
            opts=child,
        )
        self._listeners(alb, target_group)
        return alb, target_group

    def _listeners(self, alb: aws.lb.LoadBalancer, target_group: aws.lb.TargetGroup) -> None:
        name, args, child = self._name, self._args, self._child
        forward: list[aws.lb.ListenerDefaultActionArgsDict] = [{"type": "forward", "target_group_arn": target_group.arn}]
        # With a certificate, plain HTTP never reaches the model: prompts and answers only travel over TLS.
        redirect_to_https: list[aws.lb.ListenerDefaultActionArgsDict] = [
            {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": str(HTTPS_PORT), "status_code": "HTTP_301"}}]
        if args.certificate_arn:
            aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=alb.arn,
                port=HTTPS_PORT,
                protocol="HTTPS",
                certificate_arn=args.certificate_arn,
                ssl_policy=TLS_POLICY,
                default_actions=forward,
                tags=args.tags,
                opts=child,
            )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=alb.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=redirect_to_https if args.certificate_arn else forward,
            tags=args.tags,
            opts=child,
        )

    # -- the fleet: an Auto Scaling group that rolls new launch template versions through -------------

    def _fleet(self, network: _Network, template: aws.ec2.LaunchTemplate, target_group: aws.lb.TargetGroup) -> None:
        args = self._args
        aws.autoscaling.Group(
            f"{self._name}-asg",
            desired_capacity=args.instance_count,
            min_size=args.min_instances,
            max_size=args.instance_count,
            vpc_zone_identifiers=network.instance_subnets,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            target_group_arns=[target_group.arn],
            health_check_type="ELB",
            health_check_grace_period=HEALTH_CHECK_GRACE_S,
            # A new launch template version (new artifact, image or AMI) rolls through the fleet: launch a new
            # instance, wait until it is healthy and warmed up, then terminate an old one.
            instance_refresh={
                "strategy": "Rolling",
                "preferences": {"min_healthy_percentage": 100, "max_healthy_percentage": 200,
                                "instance_warmup": str(HEALTH_CHECK_GRACE_S), "skip_matching": True},
            },
            # ASGs take tags as a list; propagate them to the instances they launch.
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in args.tags.items()],
            opts=self._child,
        )
