"""The one stack-config schema: round trip, coercion from Pulumi's strings, every rule."""

from __future__ import annotations

import pytest

from llmdeploy import catalog as c
from llmdeploy.errors import ConfigError, UnknownChoiceError
from llmdeploy.stackconfig import SETTINGS, StackConfig, pulumi_project_config, read_stack_file, write_stack_file


@pytest.fixture(scope="module")
def cat():
    return c.load_catalog_from(c.BUNDLED_DIR)


def test_round_trip_through_the_file(tmp_path, cat):
    cfg = StackConfig(mode="reserved", instance_type="g4dn.2xlarge", instance_count=2, min_instances=2, owner="ops")
    path = write_stack_file(tmp_path / "Pulumi.dev.yaml", cfg, header="hello")
    assert read_stack_file(path, catalog=cat) == cfg


def test_the_hub_commit_plan_sized_round_trips(tmp_path, cat):
    commit = "8faed761d45a263340a0528343f099c05c9a4323"
    cfg = StackConfig(mode="reserved", model="Qwen/Qwen2.5-1.5B", model_revision=commit, instance_type="g5.xlarge")
    path = write_stack_file(tmp_path / "Pulumi.dev.yaml", cfg)
    assert f"llmdeploy:modelRevision: {commit}" in path.read_text()
    assert read_stack_file(path, catalog=cat).model_revision == commit
    assert StackConfig(mode="reserved", instance_type="g5.xlarge").model_revision == "", "bundled configs record none"


def test_values_from_pulumi_arrive_as_strings_and_are_coerced(cat):
    cfg = StackConfig.from_mapping(
        {"llmdeploy:mode": "realtime", "llmdeploy:instanceType": "ml.g4dn.xlarge", "llmdeploy:instanceCount": "3", "aws:region": "us-east-1"},
        catalog=cat,
    )
    assert cfg.instance_count == 3 and cfg.region == "us-east-1"


@pytest.mark.parametrize(
    "raw, error, needle",
    [
        ({"mode": "spot"}, UnknownChoiceError, "unknown llmdeploy:mode 'spot'"),
        ({"mode": "serverless", "serverlessMemoryMb": "5000"}, ConfigError, "5000 is not a SageMaker serverless memory size"),
        ({"mode": "serverless", "serverlessMaxConcurrency": "500"}, ConfigError, "AWS accepts 1..200"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "instanceCount": "0"}, ConfigError, "instanceCount must be at least 1"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "instanceCount": "two"}, ConfigError, "must be an integer, got 'two'"),
        ({"mode": "realtime", "instanceType": "g4dn.xlarge"}, ConfigError, "must be an ml.* type"),
        ({"mode": "realtime", "instanceType": "ml.g4dn.xlarge", "minInstances": "0"}, ConfigError, "only possible in async"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "region": "eu-west-1", "instanceTyp": "x"}, UnknownChoiceError, "instanceType"),
        ({"mode": "reserved", "instanceType": "p5.48xlarge", "region": "eu-west-1"}, UnknownChoiceError, "instance type in eu-west-1"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "weightsUri": "https://x"}, ConfigError, "must be an s3:// URI"),
        ({"instanceType": "g4dn.2xlarge"}, ConfigError, "has no llmdeploy:mode"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "model": "Qwen/Qwen2.5-1.5B", "modelRevision": "main branch"},
         ConfigError, "modelRevision 'main branch' is not a Hub branch, tag or commit"),
        # serving settings: the ranges serving.properties may hold (handlers/serving_config.RANGES)
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "maxBatchSize": "0"}, ConfigError,
         "llmdeploy:maxBatchSize must be 1..1024, got 0"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "maxNewTokens": "100000"}, ConfigError,
         "llmdeploy:maxNewTokens must be 1..65536, got 100000"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "maxBatchDelayMs": "-1"}, ConfigError, "maxBatchDelayMs"),
        # the handler runs one copy per GPU: a split copy would not load (plan never writes one)
        ({"mode": "realtime", "instanceType": "ml.g4dn.12xlarge", "tensorParallelDegree": "4"}, ConfigError,
         "llmdeploy:tensorParallelDegree 4: the LMI handler runs one copy of the model per GPU, so only 1 is supported"),
        # int4 is sized by plan but not a dtype the handler loads
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "dtype": "int4"}, UnknownChoiceError, "llmdeploy:dtype 'int4'"),
    ],
)
def test_rules(raw, error, needle, cat):
    with pytest.raises(error, match=needle.replace("*", r"\*").replace("(", r"\(").replace(".", r"\.")):
        StackConfig.from_mapping(raw, catalog=cat)


def test_missing_file_says_how_to_write_it(tmp_path):
    with pytest.raises(ConfigError, match="llmdeploy plan --stack prod"):
        read_stack_file(tmp_path / "Pulumi.prod.yaml")


def test_project_config_block_declares_every_setting_once():
    block = pulumi_project_config()
    assert len(block) == len(SETTINGS) == len({s.key for s in SETTINGS})
    for key, entry in block.items():
        assert key.startswith("llmdeploy:") and entry["type"] in ("string", "integer", "boolean") and entry["description"]
    assert "default" not in block["llmdeploy:mode"], "mode has no default: the plan must choose it"
    assert block["llmdeploy:servicePort"]["default"] == 8080


RESERVED = {"mode": "reserved", "instanceType": "g4dn.2xlarge"}
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def test_load_balancer_settings_default_to_no_internet_ingress(cat):
    cfg = StackConfig.from_mapping(RESERVED, catalog=cat)
    assert cfg.ingress_cidr == "" and cfg.certificate_arn == "", \
        "defaults: no ingressCidr and no certificate (the program then keeps the load balancer internal)"
    block = pulumi_project_config()
    assert block["llmdeploy:ingressCidr"]["default"] == "" and block["llmdeploy:certificateArn"]["default"] == ""


def test_load_balancer_settings_round_trip(tmp_path, cat):
    cfg = StackConfig(mode="reserved", instance_type="g4dn.2xlarge", ingress_cidr="198.51.100.0/24", certificate_arn=CERT)
    path = write_stack_file(tmp_path / "Pulumi.tls.yaml", cfg)
    assert read_stack_file(path, catalog=cat) == cfg, "ingressCidr and certificateArn must survive the stack file"


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/8", "203.0.113.7/32"])
def test_ingress_cidr_accepts_the_whole_internet_and_ranges(cidr, cat):
    assert StackConfig.from_mapping({**RESERVED, "ingressCidr": cidr}, catalog=cat).ingress_cidr == cidr, \
        "ingressCidr accepts 0.0.0.0/0 (a public endpoint) unlike the SSH CIDR check"


@pytest.mark.parametrize("cidr, needle", [
    ("0.0.0.0/33", "not a CIDR block"),
    ("banana", "not a CIDR block"),
    ("192.168.1.1/16", "did you mean '192.168.0.0/16'"),
    ("192.168.1.1", "no prefix length"),
    ("2001:db8::/32", "IPv4-only"),
])
def test_ingress_cidr_rejects_garbage(cidr, needle, cat):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        StackConfig.from_mapping({**RESERVED, "ingressCidr": cidr}, catalog=cat)


def test_ssh_cidr_check_still_refuses_the_whole_internet():
    from llmdeploy.stackconfig import check_cidr, check_ingress_cidr

    assert check_ingress_cidr("0.0.0.0/0") == "0.0.0.0/0"
    with pytest.raises(ConfigError, match="whole internet"):
        check_cidr("0.0.0.0/0")


@pytest.mark.parametrize("region, arn", [
    ("us-east-1", CERT),
    ("eu-west-1", "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"),
])
def test_certificate_arn_in_the_stack_region(region, arn, cat):
    cfg = StackConfig.from_mapping({**RESERVED, "region": region, "certificateArn": arn}, catalog=cat)
    assert cfg.certificate_arn == arn


@pytest.mark.parametrize("region, arn, needle", [
    ("us-east-1", "arn:aws:acm:us-west-2:123456789012:certificate/abc", "is in us-west-2, but the stack deploys to us-east-1"),
    ("us-east-1", "arn:aws:acm:us-east-1:123456789012:certificate", "not an ACM certificate ARN"),
    ("us-east-1", "arn:aws:elasticloadbalancing:us-east-1:123456789012:certificate/abc", "not an ACM certificate ARN"),
    ("us-east-1", "arn:aws:acm:us-east-1:12345678901:certificate/abc", "not an ACM certificate ARN"),
    ("us-east-1", " ", "not an ACM certificate ARN"),
])
def test_certificate_arn_rules(region, arn, needle, cat):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as err:
        StackConfig.from_mapping({**RESERVED, "region": region, "certificateArn": arn}, catalog=cat)
    assert "llmdeploy:certificateArn" in str(err.value) and "\n" not in str(err.value)
