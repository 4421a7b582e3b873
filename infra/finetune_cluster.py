"""A fine-tune GPU cluster: N instances in a cluster placement group that take themselves down.

``FinetuneCluster`` (``llmdeploy:finetune:Cluster``) declares:

- a ``cluster`` placement group (all nodes in one subnet, so one AZ);
- a security group allowing all traffic between its own members only (a
  self-referencing rule, as NCCL/EFA need), plus SSH from one configured CIDR
  (never ``0.0.0.0/0`` or ``::/0``); all outbound allowed;
- a launch template whose network interfaces the nodes launch with: where the
  catalog says the type supports EFA, one EFA (``interface_type="efa"``) on every
  network card (``Instance.network_cards``: p4d 4, p5 32), card 0 at device index 0
  (the primary interface) and cards 1..N-1 at device index 1, as AWS documents for
  full bandwidth on multi-card types; otherwise one plain primary interface. Every
  interface sits in the cluster subnet and security group and is deleted with its
  node. EFAs can't be attached to a running instance, so they must exist at launch:
  ``aws.ec2.Instance`` takes ``network_card_index`` only through a launch template
  (its own ``network_interfaces`` is deprecated in pulumi-aws 7);
- an IAM role and instance profile for the nodes: AmazonSSMManagedInstanceCore (with
  no SSH rule, Session Manager is the way in) and, when ``checkpoint_uri`` is given,
  read/write/delete under that one S3 prefix (listing only there), nothing else;
- the subnet: given, or the first subnet of the VPC in an availability zone that
  offers the instance type (DescribeInstanceTypeOfferings, location type
  availability-zone); one line naming the type and zones when none does;
- per node, an instance with an encrypted root volume, IMDSv2
  required, ``instance_initiated_shutdown_behavior="terminate"`` and user data
  that installs the on-instance autodown timer (expiry / idle shutdown). The
  node's live ``expires-at`` tag (instance-metadata tags) overrides the expiry
  in its user data, so a new TTL re-tags nodes in place (``userData`` changes
  are ignored: they would stop or replace a node mid-training);
- per node with more than one interface (p4d: 4, p5: 32) and a public IP wanted,
  an Elastic IP on its primary interface (card 0, device index 0): AWS never
  auto-assigns a public IPv4 address to an instance launched with more than one
  network interface, even in a default VPC's public subnet, and such a node would
  then have no way out (no Hugging Face Hub, no pip, no S3 without a gateway
  endpoint). See ``FinetuneClusterArgs.public_ip`` for when;
- the llmdeploy tags on every resource (managed-by, purpose fine-tune, owner,
  cost-center, stack, expires-at).

Public IPv4 (``FinetuneClusterArgs.public_ip``): ``None`` (the default) gives
nodes what the subnet gives single-interface launches: where the subnet
auto-assigns public IPv4 (``map_public_ip_on_launch``, on in every default VPC
subnet), single-interface nodes get one from AWS as before and multi-interface
nodes get an Elastic IP each; elsewhere (a private subnet routed through a NAT
gateway) neither. ``True`` / ``False`` force it either way. Elastic IPs are
billed while allocated, associated or not (AWS charges every public IPv4
address by the hour, $0.005/h at the time of writing:
https://aws.amazon.com/vpc/pricing/): each carries the cluster's tags, including
expires-at, so ``pulumi destroy`` (``finetune down``), ``finetune down``'s
leftover check and the reaper can find them; a node that autodown terminates
leaves its Elastic IP allocated until one of those runs.

No S3 gateway endpoint is created: it only works through route-table entries,
and a default VPC's route tables (or a team's) are not llmdeploy's to modify.

Every argument is validated in ``FinetuneClusterArgs.validate`` before any
resource is registered.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from llmdeploy import catalog as _catalog
from llmdeploy import finetune as _ft
from llmdeploy import tags as _tags
from llmdeploy.errors import ConfigError, UsageError
from llmdeploy.infra import iam
from llmdeploy.infra.autodown import render_user_data
from llmdeploy.infra.zones import offered_zones as zones_offering
from llmdeploy.stackconfig import check_tag_value

TYPE = "llmdeploy:finetune:Cluster"
#: Deep Learning AMI with NVIDIA driver, CUDA, EFA and PyTorch, published by Amazon (llmdeploy/data/amis.toml).
DLAMI = _ft.dlami()
DLAMI_NAME_FILTER = DLAMI.name
DLAMI_OWNER = DLAMI.owner


@dataclass
class FinetuneClusterArgs:
    expires_at: dt.datetime | str
    instance_type: str = _ft.DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    ami_id: str | None = None  # None: newest Deep Learning AMI GPU PyTorch
    subnet_id: str | None = None  # None: first subnet of vpc_id (or of the default VPC) in a zone offering the type
    vpc_id: str | None = None  # None: the subnet's VPC when subnet_id is given, else the default VPC
    ssh_cidr: str | None = None  # None: no SSH rule at all (use SSM Session Manager)
    key_name: str | None = None
    idle_minutes: int | None = None  # None/0: no idle shutdown, only the expiry
    idle_threshold: float = _ft.DEFAULT_IDLE_THRESHOLD
    owner: str = "unknown"
    cost_center: str = "unassigned"
    stack: str = _ft.DEFAULT_STACK
    root_volume_gib: int = 512
    efa: bool | None = None  # None: from the catalog
    network_cards: int | None = None  # None: from the catalog (1 where it states none)
    # None: as the subnet auto-assigns public IPv4 (on in a default VPC): AWS's own public IP on a
    # single-interface node, an Elastic IP per multi-interface node. False: none (private subnet + NAT).
    public_ip: bool | None = None
    # s3://bucket/prefix/ the nodes may read, write and delete under (e.g. checkpoints/<stack>/ of the artifact
    # bucket). None: no S3 access at all.
    checkpoint_uri: str | None = None
    catalog: _catalog.Catalog | None = field(default=None, repr=False)

    def validate(self) -> None:
        """Raise UsageError for the first bad argument. Registers nothing."""
        if isinstance(self.instance_count, bool) or not isinstance(self.instance_count, int) or self.instance_count < 1:
            raise UsageError(f"instance_count {self.instance_count!r} is not valid: a cluster needs at least 1 instance.")
        if self.ssh_cidr is not None:
            self.ssh_cidr = _ft.check_ssh_cidr(self.ssh_cidr)
        self.expires_at = self.expiry()
        if self.idle_minutes is not None and self.idle_minutes < 0:
            raise UsageError(f"idle_minutes {self.idle_minutes!r} is not valid: use 0 (off) or more.")
        if not 0 < self.idle_threshold <= 100:
            raise UsageError(f"idle_threshold {self.idle_threshold!r} is not a utilisation percent in (0, 100].")
        if self.root_volume_gib < 8:
            raise UsageError(f"root_volume_gib {self.root_volume_gib!r} is too small: use 8 GiB or more.")
        self.efa, self.network_cards = self._network()
        if isinstance(self.network_cards, bool) or not isinstance(self.network_cards, int) or self.network_cards < 1:
            raise ConfigError(f"network_cards {self.network_cards!r} is not valid: use 1 or more (the type's network cards).")
        if self.public_ip is not None and not isinstance(self.public_ip, bool):
            raise UsageError(f"public_ip {self.public_ip!r} is not valid: use True, False or None (as the subnet assigns).")
        for name in ("owner", "cost_center", "stack"):
            if not str(getattr(self, name)).strip():
                raise UsageError(f"{name} must not be empty: every resource is tagged with it.")
            check_tag_value(str(getattr(self, name)), name=name)
        if self.checkpoint_uri is not None:
            self.checkpoint_uri = _ft.check_checkpoint_uri(self.checkpoint_uri)

    def expiry(self) -> dt.datetime:
        """``expires_at`` as an aware datetime (a string is parsed); UsageError when it is not a UTC time."""
        expiry = self.expires_at if isinstance(self.expires_at, dt.datetime) else _tags.parse_expiry(str(self.expires_at))
        if expiry is None or expiry.tzinfo is None:
            raise UsageError(f"expires_at {self.expires_at!r} is not a UTC time. Use e.g. 2026-11-22T18:00:00Z.")
        return expiry

    def _network(self) -> tuple[bool, int]:
        """(efa, network_cards): each as given, else the catalog's for the instance type."""
        if self.efa is not None and self.network_cards is not None:
            return self.efa, self.network_cards
        hardware = _catalog.instance(self.catalog or _catalog.load_catalog(), self.instance_type)
        return (hardware.efa if self.efa is None else self.efa,
                hardware.network_cards if self.network_cards is None else self.network_cards)

    def tags(self) -> dict[str, str]:
        return _ft.cluster_tags(stack=self.stack, owner=self.owner, cost_center=self.cost_center, expires_at=self.expiry())

    def interfaces(self) -> list[tuple[int, int, str | None]]:
        """The network interfaces each node launches with (``interface_layout``); call after ``validate``."""
        efa, network_cards = self._network()
        return interface_layout(network_cards, efa)


@dataclass(frozen=True)
class _Network:
    """Where the nodes go and how they reach the internet, resolved before anything is registered."""

    vpc_id: str
    subnet_id: str
    want_eip: bool  # an Elastic IP per node (more than one interface: AWS gives such a node no public IP itself)
    associate_public: str | None  # the launch template's associate_public_ip_address ("true"/"false"; None: subnet's)


class FinetuneCluster(pulumi.ComponentResource):
    instance_ids: pulumi.Output
    private_ips: pulumi.Output
    public_ips: pulumi.Output
    placement_group_name: pulumi.Output

    def __init__(self, name: str, args: FinetuneClusterArgs, opts: pulumi.ResourceOptions | None = None):
        args.validate()  # before anything is registered
        super().__init__(TYPE, name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._invoke = pulumi.InvokeOptions(parent=self)
        self._tags = args.tags()
        layout = args.interfaces()

        network = self._network(multi_interface=len(layout) > 1)
        ami_id = self._ami()
        self.placement_group = aws.ec2.PlacementGroup(f"{name}-pg", strategy="cluster", tags=self._tagged("pg"),
                                                      opts=self._child)
        self._security_group(network.vpc_id)
        self._launch_template(layout, network)
        self._identity()
        self._nodes(ami_id)
        self._elastic_ips(network.want_eip)
        self._outputs()

    def _tagged(self, role: str) -> dict[str, str]:
        return {**self._tags, "Name": f"{self._name}-{role}"}

    # -- network: VPC and one subnet (a cluster placement group lives in one AZ) ------------------------

    def _network(self, *, multi_interface: bool) -> _Network:
        args, invoke = self._args, self._invoke
        # Only a multi-interface node left to the subnet's default needs the subnet's public-IP setting now:
        # whether its Elastic IPs exist must be known when they are declared, not in an apply.
        need_subnet_setting = multi_interface and args.public_ip is None
        subnet_auto_public: bool | None = None
        if args.subnet_id is not None:
            subnet_id = args.subnet_id
            subnet = aws.ec2.get_subnet(id=args.subnet_id, opts=invoke)
            if need_subnet_setting:
                subnet_auto_public = bool(subnet.map_public_ip_on_launch)
            vpc_id = args.vpc_id or subnet.vpc_id
            zone = subnet.availability_zone
            zones = offered_zones(args.instance_type, invoke)
            if zone not in zones:
                raise UsageError(f"subnet {args.subnet_id} is in {zone}, which does not offer {args.instance_type} "
                                 f"(zones that do: {', '.join(zones)}); pass a subnet in one of them.")
        else:
            vpc_id = args.vpc_id or aws.ec2.get_vpc(default=True, opts=invoke).id
            zones = offered_zones(args.instance_type, invoke)
            subnets = aws.ec2.get_subnets(filters=[aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc_id]),
                                                   aws.ec2.GetSubnetsFilterArgs(name="availability-zone", values=zones)],
                                          opts=invoke)
            subnet_id = _first_subnet(list(subnets.ids), vpc_id, args.instance_type, zones)
            if need_subnet_setting:
                subnet_auto_public = bool(aws.ec2.get_subnet(id=subnet_id, opts=invoke).map_public_ip_on_launch)
        # An Elastic IP per node only where AWS won't give the node a public IP itself (more than one interface).
        want_eip = multi_interface and (args.public_ip if args.public_ip is not None else bool(subnet_auto_public))
        # A single interface keeps AWS's own public IP: the subnet's setting unless public_ip says otherwise
        # (AWS refuses associate_public_ip_address on a launch with more than one interface).
        associate_public = None if multi_interface or args.public_ip is None else str(args.public_ip).lower()
        return _Network(vpc_id, subnet_id, want_eip, associate_public)

    def _ami(self) -> pulumi.Input[str]:
        """The given AMI, else the newest Deep Learning AMI GPU PyTorch (llmdeploy/data/amis.toml)."""
        return self._args.ami_id or aws.ec2.get_ami_output(
            most_recent=True,
            owners=[DLAMI_OWNER],
            filters=[
                aws.ec2.GetAmiFilterArgs(name="name", values=[DLAMI_NAME_FILTER]),
                aws.ec2.GetAmiFilterArgs(name="architecture", values=[DLAMI.architecture]),
            ],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).id

    # -- security group: all traffic between members, SSH from one CIDR ----------------------------------

    def _security_group(self, vpc_id: str) -> None:
        name, args, child = self._name, self._args, self._child
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description=f"llmdeploy fine-tune cluster {args.stack}: all traffic between members, SSH from one CIDR",
            tags=self._tagged("sg"),
            opts=child,
        )
        group = self.security_group.id
        self.rules = [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-from-self", security_group_id=group, referenced_security_group_id=group, ip_protocol="-1",
                description="all traffic between cluster members (NCCL, EFA)", tags=self._tagged("from-self"), opts=child),
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-to-self", security_group_id=group, referenced_security_group_id=group, ip_protocol="-1",
                description="all traffic between cluster members (EFA needs it outbound too)", tags=self._tagged("to-self"),
                opts=child),
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress", security_group_id=group, cidr_ipv4="0.0.0.0/0", ip_protocol="-1",
                description="outbound: S3, package mirrors, the Hugging Face Hub", tags=self._tagged("egress"), opts=child),
        ]
        if args.ssh_cidr is not None:
            network = ipaddress.ip_network(args.ssh_cidr.strip(), strict=False)
            cidr = {"cidr_ipv4": str(network)} if network.version == 4 else {"cidr_ipv6": str(network)}
            self.rules.append(aws.vpc.SecurityGroupIngressRule(
                f"{name}-ssh", security_group_id=group, ip_protocol="tcp", from_port=22, to_port=22,
                description="SSH from the configured CIDR only", tags=self._tagged("ssh"), opts=child, **cidr))

    # -- network interfaces: one EFA per network card, all at launch ---------------------------------------

    def _launch_template(self, layout: list[tuple[int, int, str | None]], network: _Network) -> None:
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{self._name}-lt",
            description=f"llmdeploy fine-tune cluster {self._args.stack}: network interfaces of each node",
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    network_card_index=card,
                    device_index=device,
                    interface_type=kind,
                    # Every interface in the one subnet (placement group, one AZ) and in the self-referencing
                    # group: EFA's OS-bypass traffic only flows between members of such a group.
                    subnet_id=network.subnet_id,
                    security_groups=[self.security_group.id],
                    delete_on_termination="true",  # a node that autodown terminates leaves no interfaces behind
                    description=f"llmdeploy fine-tune card {card}" + (" (EFA)" if kind else ""),
                    associate_public_ip_address=network.associate_public,
                )
                for card, device, kind in layout
            ],
            # The nodes set the same themselves; here too, so anything launched from this template gets IMDSv2
            # only (policy/'s imdsv2-required checks every launch template, like AWS Config's
            # ec2-launch-template-imdsv2-check rule).
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=2, instance_metadata_tags="enabled"),
            # No expires-at here: tag specifications are versioned, and the interfaces die with their node anyway.
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="network-interface",
                tags={k: v for k, v in self._tagged("eni").items() if k != _tags.EXPIRES_AT})],
            tags=self._tagged("lt"),
            opts=self._child,
        )

    # -- identity: Session Manager, and the checkpoint prefix ----------------------------------------------

    def _identity(self) -> None:
        name, args, child = self._name, self._args, self._child
        part = aws.get_partition(opts=self._invoke).partition
        self.role = aws.iam.Role(
            f"{name}-role",
            # No aws:SourceAccount here: EC2 sets none when it assumes an instance role (see iam.assume_role_policy).
            assume_role_policy=iam.assume_role_policy("ec2.amazonaws.com"),
            description=f"llmdeploy fine-tune nodes {args.stack}: Session Manager and the checkpoint prefix",
            tags=self._tagged("role"),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(f"{name}-ssm", role=self.role.name,
                                     policy_arn=iam.SSM_CORE_POLICY.format(partition=part), opts=child)
        if args.checkpoint_uri:
            aws.iam.RolePolicy(f"{name}-checkpoints", role=self.role.id,
                               policy=iam.to_json(iam.document(iam.checkpoint_read_write(args.checkpoint_uri, part))),
                               opts=child)
        self.instance_profile = aws.iam.InstanceProfile(f"{name}-profile", role=self.role.name, tags=self._tagged("profile"),
                                                        opts=child)

    # -- nodes ----------------------------------------------------------------------------------------------

    def _nodes(self, ami_id: pulumi.Input[str]) -> None:
        args = self._args
        user_data = render_user_data(expires_at=args.expires_at, idle_minutes=args.idle_minutes, threshold=args.idle_threshold)
        self.instances: list[aws.ec2.Instance] = [self._node(i, ami_id, user_data) for i in range(args.instance_count)]

    def _node(self, i: int, ami_id: pulumi.Input[str], user_data: str) -> aws.ec2.Instance:
        args = self._args
        return aws.ec2.Instance(
            f"{self._name}-node{i}",
            ami=ami_id,
            instance_type=args.instance_type,
            placement_group=self.placement_group.name,
            # Subnet and security groups come with the template's interfaces (setting them here conflicts).
            launch_template=aws.ec2.InstanceLaunchTemplateArgs(
                id=self.launch_template.id,
                version=self.launch_template.latest_version.apply(str),
            ),
            key_name=args.key_name,
            iam_instance_profile=self.instance_profile.name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=2,  # containers on the node can still reach IMDSv2
                instance_metadata_tags="enabled",  # autodown reads the live expires-at tag
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True,
                volume_size=args.root_volume_gib,
                volume_type="gp3",
                delete_on_termination=True,
                tags=self._tagged(f"node{i}-root"),
            ),
            instance_initiated_shutdown_behavior="terminate",
            user_data=user_data,
            tags=self._tagged(f"node{i}"),
            # A new TTL re-tags the nodes in place (autodown reads the expires-at tag through
            # IMDS); it must not stop or replace a node mid-training to rewrite its user data,
            # nor because a later launch-template version exists (it only matters at launch).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.rules],
                                        ignore_changes=["userData", "launchTemplate"]),
        )

    # -- public IPv4 of multi-interface nodes: an Elastic IP on the primary interface ----------------------

    def _elastic_ips(self, wanted: bool) -> None:
        # primary_network_interface_id is the interface at device index 0; only card 0's is (interface_layout).
        # Billed while allocated; tagged like everything else (expires-at too) so nothing leaves one behind.
        self.elastic_ips: list[aws.ec2.Eip] = [
            aws.ec2.Eip(
                f"{self._name}-node{i}-eip",
                domain="vpc",
                network_interface=node.primary_network_interface_id,
                associate_with_private_ip=node.private_ip,
                tags=self._tagged(f"node{i}-eip"),
                opts=self._child,
            )
            for i, node in enumerate(self.instances)
        ] if wanted else []

    def _outputs(self) -> None:
        self.instance_ids = pulumi.Output.all(*[n.id for n in self.instances])
        self.private_ips = pulumi.Output.all(*[n.private_ip for n in self.instances])
        self.placement_group_name = self.placement_group.name
        if self.elastic_ips:
            self.public_ips = pulumi.Output.all(*[e.public_ip for e in self.elastic_ips])
        else:  # AWS's own public IPs (None in a subnet that assigns none)
            self.public_ips = pulumi.Output.all(*[n.public_ip for n in self.instances])
        self.register_outputs(
            {
                "instance_ids": self.instance_ids,
                "private_ips": self.private_ips,
                "public_ips": self.public_ips,
                "placement_group_name": self.placement_group_name,
                "security_group_id": self.security_group.id,
                "instance_profile": self.instance_profile.name,
                "expires_at": _tags.format_expiry(self._args.expiry()),
            }
        )


def interface_layout(network_cards: int, efa: bool) -> list[tuple[int, int, str | None]]:
    """``(network_card_index, device_index, interface_type)`` for each interface a node launches with.

    With EFA: one EFA per card, card 0 at device index 0 (the primary interface), the other cards at
    device index 1, as AWS's "Maximize network bandwidth on instances with multiple network cards" and its
    P5 EFA page lay out. Every one is "efa" (EFA with ENA): valid on every EFA type and as the primary
    (an "efa-only" interface can't be primary), at the price of one private IP per card. Without EFA only
    the primary interface: the extra cards exist for the fabric.
    """
    if not efa:
        return [(0, 0, None)]
    return [(card, 0 if card == 0 else 1, "efa") for card in range(network_cards)]


def offered_zones(instance_type: str, opts: pulumi.InvokeOptions | None = None) -> list[str]:
    """The availability zones of the provider's region that offer ``instance_type``; UsageError when none does."""
    zones = zones_offering(instance_type, opts=opts)
    if not zones:
        raise UsageError(f"no availability zone of this region offers {instance_type}; pass another --instance-type "
                         "or --region.")
    return zones


def _first_subnet(ids: list[str], vpc_id: str, instance_type: str, zones: list[str]) -> str:
    if not ids:
        raise UsageError(f"VPC {vpc_id} has no subnet in the zones that offer {instance_type} ({', '.join(zones)}); "
                         "pass --subnet with one there, or another --instance-type.")
    return sorted(ids)[0]


def program(args: FinetuneClusterArgs, name: str = "finetune"):
    """An inline Pulumi program (for ``llmdeploy.infra.automation.select_stack``) that builds one cluster."""

    def run() -> None:
        cluster = FinetuneCluster(name, args)
        pulumi.export("instance_ids", cluster.instance_ids)
        pulumi.export("private_ips", cluster.private_ips)
        pulumi.export("public_ips", cluster.public_ips)
        pulumi.export("placement_group_name", cluster.placement_group_name)
        pulumi.export("expires_at", _tags.format_expiry(args.expiry()))

    return run
