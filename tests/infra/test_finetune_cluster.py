"""Rules of the fine-tune cluster component, checked with Pulumi mocks (no cloud, no CLI)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pulumi
import pytest


class ClusterMocks(pulumi.runtime.Mocks):
    """Record every resource and answer the AMI / VPC / subnet lookups."""

    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        rid = f"{args.name}-id"
        outputs = {**args.inputs, "name": args.inputs.get("name", args.name), "id": rid, "arn": f"arn:aws:mock:::{args.name}"}
        if args.typ == "aws:ec2/instance:Instance":
            outputs["privateIp"] = f"10.0.0.{len(self.resources)}"
            outputs["primaryNetworkInterfaceId"] = f"eni-{args.name}-primary"
        if args.typ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = f"198.51.100.{len(self.resources)}"
            outputs["allocationId"] = f"eipalloc-{args.name}"
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args)
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0dlami", "name": "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) 20261101"}
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-default", "default": True}
        if args.token == "aws:ec2/getSubnets:getSubnets":
            zones = next((f["values"] for f in args.args["filters"] if f["name"] == "availability-zone"), None)
            return {"id": "us-east-1", "ids": [s for s in ("subnet-b", "subnet-a") if zones is None or SUBNET_ZONES[s] in zones]}
        if args.token == "aws:ec2/getSubnet:getSubnet":
            sid = args.args.get("id")
            # The default VPC's subnets (and "subnet-public") auto-assign public IPv4; "subnet-private" (NAT) does not.
            public = sid in ("subnet-a", "subnet-b", "subnet-public")
            return {"id": sid, "vpcId": "vpc-default" if sid in ("subnet-a", "subnet-b") else "vpc-from-subnet",
                    "mapPublicIpOnLaunch": public, "defaultForAz": sid in ("subnet-a", "subnet-b"),
                    "availabilityZone": SUBNET_ZONES.get(sid, "us-east-1a")}
        if args.token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            (itype,) = next(f["values"] for f in args.args["filters"] if f["name"] == "instance-type")
            zones = OFFERED.get(itype, ["us-east-1a", "us-east-1b"])
            return {"id": "us-east-1", "locations": zones, "locationTypes": ["availability-zone"] * len(zones),
                    "instanceTypes": [itype] * len(zones)}
        if args.token == "aws:index/getPartition:getPartition":
            return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"}
        return {}


# What DescribeInstanceTypeOfferings (location type availability-zone) answers in the fake region.
SUBNET_ZONES = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-x": "us-east-1a"}
OFFERED = {"p5.48xlarge": ["us-east-1b"], "p5e.48xlarge": [], "p6-b200.48xlarge": ["us-east-1c"]}


MOCKS = ClusterMocks()
pulumi.runtime.set_mocks(MOCKS, preview=False)  # before the component module is imported

from llmdeploy.errors import UnknownChoiceError, UsageError  # noqa: E402
from llmdeploy.infra import finetune_cluster as fc  # noqa: E402

_spec = importlib.util.spec_from_file_location("fakecat_infra", Path(__file__).parents[1] / "aws" / "fakecat.py")
fakecat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakecat)

EXPIRES = dt.datetime(2026, 11, 22, 18, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def fresh_mocks():
    MOCKS.resources.clear()
    MOCKS.calls.clear()
    pulumi.runtime.set_mocks(MOCKS, preview=False)  # other test modules may have installed theirs
    yield


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    from llmdeploy.catalog import load_catalog_from

    return load_catalog_from(fakecat.write(tmp_path_factory.mktemp("catalog")))


def make_args(cat, **overrides) -> fc.FinetuneClusterArgs:
    base = dict(
        expires_at=EXPIRES,
        instance_type="p4d.24xlarge",
        instance_count=2,
        ssh_cidr="203.0.113.7/32",
        idle_minutes=30,
        owner="ana",
        cost_center="ml-42",
        stack="ft-test",
        catalog=cat,
    )
    base.update(overrides)
    return fc.FinetuneClusterArgs(**base)


def of_type(typ: str):
    return [r for r in MOCKS.resources if r.typ == typ]


def settled(cluster: fc.FinetuneCluster, check):
    """Run ``check`` once every output of the cluster has resolved."""
    return pulumi.Output.all(cluster.instance_ids, cluster.private_ips, cluster.placement_group_name, cluster.public_ips).apply(lambda _: check())


@pulumi.runtime.test
def test_instances_require_imdsv2(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        nodes = of_type("aws:ec2/instance:Instance")
        assert len(nodes) == 2, "one instance per requested node"
        for n in nodes:
            assert n.inputs["metadataOptions"]["httpTokens"] == "required", "fine-tune instances must require IMDSv2"

    return settled(cluster, check)


@pulumi.runtime.test
def test_instances_terminate_on_shutdown(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["instanceInitiatedShutdownBehavior"] == "terminate", "instances must terminate on shutdown"

    return settled(cluster, check)


@pulumi.runtime.test
def test_root_volumes_encrypted(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, root_volume_gib=1024))

    def check():
        for n in of_type("aws:ec2/instance:Instance"):
            root = n.inputs["rootBlockDevice"]
            assert root["encrypted"] is True, "root volumes must be encrypted"
            assert root["volumeSize"] == 1024, "root volume size comes from the args"

    return settled(cluster, check)


@pulumi.runtime.test
def test_every_resource_is_tagged(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        from .mocks import is_taggable

        cloud = [r for r in MOCKS.resources if r.custom and is_taggable(r.typ)]  # policies/attachments take no tags
        assert cloud, "the component must register resources"
        for r in cloud:
            tags = r.inputs.get("tags") or {}
            assert tags.get("managed-by") == "llmdeploy", f"every resource must carry managed-by=llmdeploy and expires-at ({r.typ} {r.name})"
            assert tags.get("expires-at") == "2026-11-22T18:00:00Z", f"every resource must carry managed-by=llmdeploy and expires-at ({r.typ} {r.name})"
            assert tags.get("llmdeploy:purpose") == "fine-tune", f"every resource must carry purpose fine-tune ({r.name})"
            assert tags.get("owner") == "ana" and tags.get("cost-center") == "ml-42", f"owner and cost-center tags ({r.name})"
            assert tags.get("llmdeploy:stack") == "ft-test", f"stack tag ({r.name})"
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["rootBlockDevice"]["tags"]["managed-by"] == "llmdeploy", "root volumes must be tagged too"

    return settled(cluster, check)


@pulumi.runtime.test
def test_instances_in_cluster_placement_group(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        groups = of_type("aws:ec2/placementGroup:PlacementGroup")
        assert len(groups) == 1 and groups[0].inputs["strategy"] == "cluster", "instances must be in a cluster placement group"
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["placementGroup"] == groups[0].name, "instances must be in a cluster placement group"

    return settled(cluster, check)


def interfaces():
    """The launch template's network interfaces (what every node launches with)."""
    (template,) = of_type("aws:ec2/launchTemplate:LaunchTemplate")
    return template, template.inputs["networkInterfaces"]


def layout(ifaces):
    return [(i["networkCardIndex"], i["deviceIndex"], i.get("interfaceType")) for i in ifaces]


@pytest.fixture(scope="module")
def bundled():
    from llmdeploy.catalog import BUNDLED_DIR, load_catalog_from

    return load_catalog_from(BUNDLED_DIR)


@pulumi.runtime.test
def test_efa_on_every_network_card_of_p4d(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge"))

    def check():
        template, ifaces = interfaces()
        assert layout(ifaces) == [(0, 0, "efa"), (1, 1, "efa"), (2, 1, "efa"), (3, 1, "efa")], (
            "p4d.24xlarge has 4 network cards: one EFA per card, card 0 at device index 0, the others at device index 1")
        assert not of_type("aws:ec2/networkInterface:NetworkInterface"), "EFAs are created at launch (they can't be hot-attached)"
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["launchTemplate"]["id"] == f"{template.name}-id", "nodes launch with the template's EFA interfaces"
            assert not n.inputs.get("subnetId") and not n.inputs.get("vpcSecurityGroupIds") and not n.inputs.get("networkInterfaces"), (
                "subnet and security groups come only from the template's interfaces (setting both conflicts)")

    return settled(cluster, check)


@pulumi.runtime.test
def test_efa_on_all_32_network_cards_of_p5(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p5.48xlarge", instance_count=1))

    def check():
        _, ifaces = interfaces()
        assert layout(ifaces) == [(0, 0, "efa")] + [(card, 1, "efa") for card in range(1, 32)], (
            "p5.48xlarge has 32 network cards: one EFA per card, device index 0 on card 0 and 1 on the others")

    return settled(cluster, check)


@pulumi.runtime.test
def test_every_interface_in_the_cluster_subnet_and_security_group(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge"))

    def check():
        (sg,) = of_type("aws:ec2/securityGroup:SecurityGroup")
        _, ifaces = interfaces()
        assert len(ifaces) == 4
        for i in ifaces:
            assert i["subnetId"] == "subnet-a", "every interface must be in the cluster's one subnet (placement group, one AZ)"
            assert i["securityGroups"] == [f"{sg.name}-id"], "every EFA must be in the self-referencing cluster security group"
            assert i["deleteOnTermination"] == "true", "interfaces must be deleted with their node (autodown terminates it)"

    return settled(cluster, check)


@pulumi.runtime.test
def test_catalog_without_network_cards_means_one_efa(cat):
    # The fake catalog's p4d row has no network_cards: the loader defaults it to 1.
    cluster = fc.FinetuneCluster("ft", make_args(cat, instance_type="p4d.24xlarge"))

    def check():
        _, ifaces = interfaces()
        assert layout(ifaces) == [(0, 0, "efa")], "an instance row without network_cards has one card: one EFA, the primary"

    return settled(cluster, check)


@pulumi.runtime.test
def test_explicit_network_cards_override_the_catalog(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, instance_type="p4d.24xlarge", network_cards=2))

    def check():
        _, ifaces = interfaces()
        assert layout(ifaces) == [(0, 0, "efa"), (1, 1, "efa")], "network_cards given in the args wins over the catalog"

    return settled(cluster, check)


@pulumi.runtime.test
def test_no_efa_where_the_type_has_none(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="g4dn.xlarge", instance_count=1))

    def check():
        _, ifaces = interfaces()
        assert layout(ifaces) == [(0, 0, None)], "no EFA on types without EFA support (g4dn.xlarge): one plain primary interface"

    return settled(cluster, check)


# -- public IPv4: AWS auto-assigns none to a node launched with more than one interface -------------


def eips():
    return of_type("aws:ec2/eip:Eip")


@pulumi.runtime.test
def test_multi_interface_nodes_get_an_elastic_ip_in_a_public_subnet(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge", instance_count=2))

    def check(public_ips):
        rule = "multi-interface fine-tune nodes need a public IP in a public subnet"
        nodes = sorted(of_type("aws:ec2/instance:Instance"), key=lambda r: r.name)
        addresses = sorted(eips(), key=lambda r: r.name)  # registered as each node's interface id resolves
        assert len(addresses) == len(nodes) == 2, f"{rule}: one Elastic IP per p4d node (4 interfaces), not per interface"
        for i, (node, eip) in enumerate(zip(nodes, addresses, strict=False)):
            assert eip.name == f"ft-node{i}-eip", f"{rule}: each node's Elastic IP is named after it"
            assert eip.inputs["domain"] == "vpc", f"{rule}: a VPC Elastic IP"
            assert eip.inputs["networkInterface"] == f"eni-{node.name}-primary", (
                f"{rule}: associated with the node's primary interface (network card 0, device index 0)")
            assert "instance" not in eip.inputs, f"{rule}: associated by interface, not by instance (never both)"
            tags = eip.inputs["tags"]
            assert tags.get("expires-at") == "2026-11-22T18:00:00Z", "Elastic IPs cost money while allocated: tagged with expires-at"
            assert tags.get("managed-by") == "llmdeploy" and tags.get("llmdeploy:stack") == "ft-test", (
                "Elastic IPs carry managed-by and the stack so finetune down and the reaper release them")
            assert tags.get("llmdeploy:purpose") == "fine-tune" and tags.get("owner") == "ana" and tags.get("cost-center") == "ml-42"
        assert {e.inputs["tags"]["Name"] for e in addresses} == {"ft-node0-eip", "ft-node1-eip"}
        assert set(cluster.elastic_ips) <= cluster._childResources, "Elastic IPs are children of the cluster"
        _, ifaces = interfaces()
        assert all("associatePublicIpAddress" not in i for i in ifaces), (
            "AWS refuses associate_public_ip_address on a launch with more than one interface")
        assert public_ips == [f"198.51.100.{MOCKS.resources.index(e) + 1}" for e in addresses], (  # node order
            "public_ips are the Elastic IPs' addresses")
        assert any(c.token == "aws:ec2/getSubnet:getSubnet" and c.args["id"] == "subnet-a" for c in MOCKS.calls), (
            "the chosen subnet's auto-assign setting decides")

    return cluster.public_ips.apply(check)


@pulumi.runtime.test
def test_every_p5_node_gets_one_elastic_ip(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p5.48xlarge", instance_count=3))

    def check():
        assert len(eips()) == 3, "multi-interface fine-tune nodes need a public IP in a public subnet: one per node, 32 interfaces or not"

    return settled(cluster, check)


@pulumi.runtime.test
def test_no_public_ip_means_no_elastic_ip(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge", public_ip=False))

    def check():
        assert eips() == [], "public_ip=False (private subnet behind a NAT gateway): no Elastic IP"
        assert all("associatePublicIpAddress" not in i for i in interfaces()[1]), "multi-interface launches never set it"
        assert not [c for c in MOCKS.calls if c.token == "aws:ec2/getSubnet:getSubnet"], "an explicit public_ip needs no subnet lookup"

    return settled(cluster, check)


@pulumi.runtime.test
def test_subnet_without_auto_public_ip_gets_no_elastic_ip(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge", subnet_id="subnet-private", vpc_id="vpc-x"))

    def check():
        assert eips() == [], "a subnet that auto-assigns no public IPv4 (NAT-routed) gets no Elastic IP by default"

    return settled(cluster, check)


@pulumi.runtime.test
def test_given_public_subnet_gets_elastic_ips(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge", subnet_id="subnet-public", vpc_id="vpc-x"))

    def check():
        assert len(eips()) == 2, "multi-interface fine-tune nodes need a public IP in a public subnet (given subnet too)"

    return settled(cluster, check)


@pulumi.runtime.test
def test_public_ip_true_forces_elastic_ips(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p4d.24xlarge", subnet_id="subnet-private", public_ip=True))

    def check():
        assert len(eips()) == 2, "public_ip=True gives every multi-interface node an Elastic IP whatever the subnet says"

    return settled(cluster, check)


@pulumi.runtime.test
def test_single_interface_keeps_the_subnets_public_ip(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="g4dn.xlarge", instance_count=2))

    def check():
        assert eips() == [], "a single-interface node (g4dn) gets AWS's auto-assigned public IP: no Elastic IP"
        (iface,) = interfaces()[1]
        assert "associatePublicIpAddress" not in iface, "by default a single-interface node follows the subnet's setting, as before"
        assert not [c for c in MOCKS.calls if c.token == "aws:ec2/getSubnet:getSubnet"], "no extra lookup for single-interface nodes"

    return settled(cluster, check)


@pytest.mark.parametrize("public_ip, wire", [(False, "false"), (True, "true")])
def test_single_interface_explicit_public_ip(bundled, public_ip, wire):
    @pulumi.runtime.test
    def run():
        cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="g4dn.xlarge", instance_count=1, public_ip=public_ip))

        def check():
            (iface,) = interfaces()[1]
            assert iface["associatePublicIpAddress"] == wire, "an explicit public_ip sets AWS's own public IP on a single interface"
            assert eips() == [], "never an Elastic IP for a single-interface node"

        return settled(cluster, check)

    run()


def test_interface_layout():
    assert fc.interface_layout(1, True) == [(0, 0, "efa")]
    assert fc.interface_layout(4, True) == [(0, 0, "efa"), (1, 1, "efa"), (2, 1, "efa"), (3, 1, "efa")]
    assert fc.interface_layout(4, False) == [(0, 0, None)], "extra cards only carry EFA: without it, the primary alone"


@pytest.mark.parametrize("cards", [0, -1, True, "4"])
def test_bad_network_cards_refused_before_any_resource(cat, cards):
    from llmdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="network_cards"):
        fc.FinetuneCluster("ft", make_args(cat, network_cards=cards))
    assert MOCKS.resources == [], "a bad network_cards must be refused before any resource is registered"


@pulumi.runtime.test
def test_security_group_self_traffic_and_ssh_only_from_cidr(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        sg = of_type("aws:ec2/securityGroup:SecurityGroup")
        assert len(sg) == 1
        assert "ingress" not in sg[0].inputs or not sg[0].inputs["ingress"], "no inline ingress: rules are separate resources"
        ingress = of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        self_rules = [r for r in ingress if r.inputs.get("referencedSecurityGroupId")]
        assert len(self_rules) == 1, "all traffic allowed only from the group itself"
        assert self_rules[0].inputs["referencedSecurityGroupId"] == self_rules[0].inputs["securityGroupId"], "the all-traffic rule must reference its own group"
        assert self_rules[0].inputs["ipProtocol"] == "-1"
        cidr_rules = [r for r in ingress if not r.inputs.get("referencedSecurityGroupId")]
        assert len(cidr_rules) == 1, "the only CIDR ingress is SSH"
        ssh = cidr_rules[0].inputs
        assert (ssh["ipProtocol"], ssh["fromPort"], ssh["toPort"]) == ("tcp", 22, 22), "the CIDR rule must be SSH only"
        assert ssh["cidrIpv4"] == "203.0.113.7/32", "SSH only from the configured CIDR"
        for r in ingress:
            assert r.inputs.get("cidrIpv4") not in ("0.0.0.0/0",) and r.inputs.get("cidrIpv6") != "::/0", "SSH must never be open to 0.0.0.0/0"

    return settled(cluster, check)


@pulumi.runtime.test
def test_no_ssh_rule_without_cidr(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, ssh_cidr=None))

    def check():
        ingress = of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        assert all(r.inputs.get("referencedSecurityGroupId") for r in ingress), "no SSH rule unless a CIDR is configured"

    return settled(cluster, check)


@pulumi.runtime.test
def test_ipv6_ssh_cidr(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, ssh_cidr="2001:db8::/64"))

    def check():
        ssh = [r for r in of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.inputs.get("fromPort") == 22]
        assert ssh[0].inputs["cidrIpv6"] == "2001:db8::/64" and "cidrIpv4" not in ssh[0].inputs

    return settled(cluster, check)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_ssh_open_to_the_world_is_refused_before_any_resource(cat, cidr):
    with pytest.raises(UsageError, match="whole internet"):
        fc.FinetuneCluster("ft", make_args(cat, ssh_cidr=cidr))
    assert MOCKS.resources == [], "SSH must never be open to 0.0.0.0/0 (and nothing is registered on refusal)"


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"instance_count": 0}, "at least 1"),
        ({"expires_at": "tomorrow"}, "not a UTC time"),
        ({"idle_minutes": -5}, "idle_minutes"),
        ({"instance_type": "p4d.24xlarg"}, "Did you mean 'p4d.24xlarge'"),
        ({"owner": " "}, "owner"),
        ({"public_ip": "yes"}, "public_ip"),
        ({"public_ip": 1}, "public_ip"),
    ],
)
def test_validation_before_any_resource(cat, overrides, match):
    with pytest.raises((UsageError, UnknownChoiceError), match=match):
        fc.FinetuneCluster("ft", make_args(cat, **overrides))
    assert MOCKS.resources == [], "validation errors must be raised before any resource is registered"


@pulumi.runtime.test
def test_ami_lookup_and_default_vpc(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        ami_calls = [c for c in MOCKS.calls if c.token == "aws:ec2/getAmi:getAmi"]
        assert ami_calls, "without ami_id the Deep Learning AMI is looked up"
        assert ami_calls[0].args["owners"] == ["amazon"], "AMI lookup must be restricted to owner amazon"
        names = [f for f in ami_calls[0].args["filters"] if f["name"] == "name"][0]["values"]
        assert "Deep Learning" in names[0] and "PyTorch" in names[0]
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["ami"] == "ami-0dlami"
        assert any(c.token == "aws:ec2/getVpc:getVpc" and c.args.get("default") for c in MOCKS.calls), "default VPC lookup"
        assert of_type("aws:ec2/securityGroup:SecurityGroup")[0].inputs["vpcId"] == "vpc-default"
        _, ifaces = interfaces()
        for e in ifaces:
            assert e["subnetId"] == "subnet-a", "all nodes in one subnet (one AZ) for the placement group"

    return settled(cluster, check)


@pulumi.runtime.test
def test_given_ami_and_subnet_skip_lookups(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, ami_id="ami-123", subnet_id="subnet-x", vpc_id="vpc-x"))

    def check():
        assert not [c for c in MOCKS.calls if c.token in ("aws:ec2/getAmi:getAmi", "aws:ec2/getVpc:getVpc")]
        assert all(n.inputs["ami"] == "ami-123" for n in of_type("aws:ec2/instance:Instance"))
        assert all(e["subnetId"] == "subnet-x" for e in interfaces()[1]), "every interface in the given subnet"

    return settled(cluster, check)


@pulumi.runtime.test
def test_user_data_carries_autodown_and_expiry(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        for n in of_type("aws:ec2/instance:Instance"):
            ud = n.inputs["userData"]
            assert ud.startswith("#cloud-config"), "user data must be cloud-init"
            assert "LLMDEPLOY_EXPIRES_AT=2026-11-22T18:00:00Z" in ud, "user data must carry the expiry"
            assert "def decide(" in ud, "user data must install the autodown script"
            assert "LLMDEPLOY_IDLE_MINUTES=30" in ud

    return settled(cluster, check)


@pulumi.runtime.test
def test_children_names_and_outputs(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check(values):
        ids, ips, pg = values
        assert ids == ["ft-node0-id", "ft-node1-id"], "instance ids are outputs"
        assert len(ips) == 2 and all(ip.startswith("10.0.0.") for ip in ips), "private IPs are outputs"
        assert pg == "ft-pg", "placement group name is an output"
        for r in [r for r in MOCKS.resources if r.custom]:
            assert r.name.startswith("ft-"), f"child names are prefixed with the component name ({r.name})"
        children = cluster._childResources
        assert set(cluster.instances) <= children and cluster.placement_group in children and cluster.security_group in children, "children must have parent=self"

    return pulumi.Output.all(cluster.instance_ids, cluster.private_ips, cluster.placement_group_name).apply(check)


def test_inline_program_exports(cat, monkeypatch):
    """The program `finetune up` hands to the Automation API builds one cluster and exports its outputs."""
    built: list[fc.FinetuneCluster] = []

    class Recording(fc.FinetuneCluster):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built.append(self)

    monkeypatch.setattr(fc, "FinetuneCluster", Recording)

    @pulumi.runtime.test
    def run():
        fc.program(make_args(cat, instance_count=1), name="finetune")()
        assert len(built) == 1, "the inline program builds exactly one cluster"

        def check():
            assert [n.name for n in of_type("aws:ec2/instance:Instance")] == ["finetune-node0"], "names derive from the stack name"

        return settled(built[0], check)

    run()


# -- identity, placement in an offering zone, the AMI filter ------------------------------------------------


@pulumi.runtime.test
def test_nodes_carry_an_instance_profile_with_ssm_and_only_the_checkpoint_prefix(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat, ssh_cidr=None, checkpoint_uri="s3://art-bucket/checkpoints/ft-test"))

    def check():
        import json

        (role,) = of_type("aws:iam/role:Role")
        trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
        assert trust["Principal"] == {"Service": "ec2.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
        (profile,) = of_type("aws:iam/instanceProfile:InstanceProfile")
        assert profile.inputs["role"] == role.name, "the profile wraps the node role"
        for n in of_type("aws:ec2/instance:Instance"):
            assert n.inputs["iamInstanceProfile"] == profile.name, "fine-tune nodes must carry the instance profile"
        (ssm,) = of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        assert ssm.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", \
            "without SSH, Session Manager is the way in: the node role needs the SSM core policy"
        (inline,) = of_type("aws:iam/rolePolicy:RolePolicy")
        by_sid = {s["Sid"]: s for s in json.loads(inline.inputs["policy"])["Statement"]}
        assert set(by_sid) == {"Checkpoints", "ListCheckpoints"}
        assert by_sid["Checkpoints"]["Resource"] == ["arn:aws:s3:::art-bucket/checkpoints/ft-test/*"], \
            "read/write only under the checkpoint prefix (least privilege)"
        assert set(by_sid["Checkpoints"]["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                                         "s3:AbortMultipartUpload"}
        assert by_sid["ListCheckpoints"]["Resource"] == ["arn:aws:s3:::art-bucket"]
        assert by_sid["ListCheckpoints"]["Condition"] == {"StringLike": {"s3:prefix": ["checkpoints/ft-test/*"]}}

    return settled(cluster, check)


@pulumi.runtime.test
def test_no_checkpoint_uri_no_s3_access(cat):
    cluster = fc.FinetuneCluster("ft", make_args(cat))

    def check():
        assert not of_type("aws:iam/rolePolicy:RolePolicy"), "no checkpoint prefix: the nodes get no S3 access"
        assert len(of_type("aws:iam/instanceProfile:InstanceProfile")) == 1, "but still Session Manager"

    return settled(cluster, check)


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "https://bucket/x/", "s3://B_ad/x/"])
def test_checkpoint_uri_needs_a_prefix(cat, uri):
    with pytest.raises(UsageError, match="checkpoint-uri"):
        fc.FinetuneCluster("ft", make_args(cat, checkpoint_uri=uri))
    assert MOCKS.resources == []


@pulumi.runtime.test
def test_subnet_is_picked_in_a_zone_offering_the_type(bundled):
    cluster = fc.FinetuneCluster("ft", make_args(bundled, instance_type="p5.48xlarge", instance_count=1))

    def check():
        calls = [c for c in MOCKS.calls if c.token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"]
        assert calls and calls[0].args["locationType"] == "availability-zone"
        assert calls[0].args["filters"] == [{"name": "instance-type", "values": ["p5.48xlarge"]}]
        _, ifaces = interfaces()
        assert {i["subnetId"] for i in ifaces} == {"subnet-b"}, \
            "p5.48xlarge is offered only in us-east-1b here: the cluster subnet must be there, not the first subnet"

    return settled(cluster, check)


@pytest.mark.parametrize("itype, needle", [
    ("p5e.48xlarge", "no availability zone of this region offers p5e.48xlarge"),
    ("p6-b200.48xlarge", "has no subnet in the zones that offer p6-b200.48xlarge (us-east-1c)"),
])
def test_no_zone_with_the_type_is_one_line(cat, itype, needle):
    with pytest.raises(UsageError) as err:
        fc.FinetuneCluster("ft", make_args(cat, instance_type=itype, efa=True, network_cards=1))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_given_subnet_outside_the_offering_zones_is_refused(cat):
    with pytest.raises(UsageError, match="subnet subnet-x is in us-east-1a, which does not offer p5.48xlarge"):
        fc.FinetuneCluster("ft", make_args(cat, instance_type="p5.48xlarge", efa=True, network_cards=1,
                                           subnet_id="subnet-x", vpc_id="vpc-x"))


def test_dlami_filter_comes_from_data_with_its_source():
    ami = fc.DLAMI
    assert "(Ubuntu 24.04)" in ami.name and "PyTorch" in ami.name, "current PyTorch DLAMIs are Ubuntu 24.04 builds"
    assert ami.owner == "amazon" and ami.architecture == "x86_64"
    assert ami.source_url.startswith("https://docs.aws.amazon.com/dlami/") and ami.retrieved.year >= 2026
    import fnmatch

    published = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) 20260317"  # from the release notes
    assert fnmatch.fnmatchcase(published, ami.name), "EC2 name filters use * like fnmatch: the published name matches"
    assert not fnmatch.fnmatchcase("Deep Learning ARM64 AMI OSS Nvidia Driver GPU PyTorch 2.9 (Ubuntu 24.04) 20260317",
                                   ami.name), "ARM64 builds must not match"


def test_tags_and_interfaces_need_no_validate_first(cat):
    """expires_at as a string and the network from the catalog: tags() and interfaces() resolve them the way
    validate() does, so they agree before and after it."""
    args = make_args(cat, expires_at="2026-11-22T18:00:00Z", efa=None, network_cards=None)
    before = (args.tags(), args.interfaces())
    args.validate()
    assert args.expires_at == EXPIRES
    assert (args.tags(), args.interfaces()) == before
    assert len(before[1]) == cat.instances["p4d.24xlarge"].network_cards
