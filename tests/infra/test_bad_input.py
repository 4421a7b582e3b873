"""Bad input: a clear error before any resource is registered (the mocks see zero resources)."""

import pytest

from llmdeploy.catalog import load_catalog
from llmdeploy.errors import ConfigError, LlmdeployError, UnknownChoiceError
from llmdeploy.infra.offline_preview import config_values, make_mocks, run_program

from .mocks import stack_config


def _run_bad(values: dict[str, str]):
    mocks = make_mocks()
    with pytest.raises(LlmdeployError) as err:
        run_program(values, stack="bad", mocks=mocks)
    assert mocks.resources == [], f"bad input must register nothing, got {[r.type for r in mocks.resources]}"
    message = str(err.value)
    assert "\n" not in message, "the error must be one line"
    return err.value


def _values(base_mode: str, **changes) -> dict[str, str]:
    values = config_values(stack_config(base_mode))
    values.update({f"llmdeploy:{k}": str(v) for k, v in changes.items()})
    return values


def test_unknown_mode():
    err = _run_bad(_values("realtime", mode="batch"))
    assert isinstance(err, UnknownChoiceError) and "'batch'" in str(err) and "realtime" in str(err)


def test_serverless_memory_outside_the_allowed_sizes():
    err = _run_bad(_values("serverless", serverlessMemoryMb=5000))
    assert isinstance(err, ConfigError) and "5000" in str(err) and "6144" in str(err)


def test_serverless_concurrency_over_the_limit():
    err = _run_bad(_values("serverless", serverlessMaxConcurrency=500))
    assert "500" in str(err)


def _missing_in_a_region(prices, prefix: str) -> tuple[str, str]:
    """(region, type): a type the catalog knows that this region does not offer."""
    cat = load_catalog()
    for region in cat.regions:
        offered = {t for r, t in prices(cat) if r == region}
        for itype in sorted(cat.instances):
            if prefix + itype not in offered and cat.instances[itype].gpu:
                return region, prefix + itype
    return "us-east-1", prefix + "x99.xlarge"


def test_instance_type_the_region_does_not_have():
    region, itype = _missing_in_a_region(lambda c: c.hosting, "ml.")
    err = _run_bad(_values("realtime", instanceType=itype, region=region))
    assert itype in str(err)
    region, itype = _missing_in_a_region(lambda c: c.ec2, "")
    err = _run_bad(_values("reserved", instanceType=itype, region=region))
    assert itype in str(err)


def test_missing_stack_config():
    err = _run_bad({})
    assert "llmdeploy:mode" in str(err) and "llmdeploy plan --stack" in str(err)


def test_mistyped_setting():
    values = _values("realtime")
    values["llmdeploy:instanceTyp"] = "ml.g4dn.xlarge"
    err = _run_bad(values)
    assert "instanceTyp" in str(err) and "instanceType" in str(err)


def test_unknown_lmi_version():
    err = _run_bad(_values("realtime", lmiVersion="0.99.0"))
    assert "0.99.0" in str(err) and "0.33.0" in str(err)


def test_min_zero_outside_async():
    err = _run_bad(_values("realtime", minInstances=0))
    assert "async" in str(err)


@pytest.mark.parametrize("cidr, needle", [
    ("everyone", "not a CIDR block"),
    ("10.0.0.1/8", "did you mean '10.0.0.0/8'"),
    ("203.0.113.7", "no prefix length"),
    ("::/0", "IPv4-only"),
    ("0.0.0.0", "no prefix length"),
])
def test_bad_ingress_cidr(cidr, needle):
    err = _run_bad(_values("reserved", ingressCidr=cidr))
    assert isinstance(err, ConfigError) and "llmdeploy:ingressCidr" in str(err) and needle in str(err), \
        "a bad ingressCidr must be refused with one line naming the value and the fix, before any resource"


@pytest.mark.parametrize("arn, needle", [
    ("my-cert", "not an ACM certificate ARN"),
    ("arn:aws:iam::123456789012:server-certificate/x", "not an ACM certificate ARN"),
    ("arn:aws:acm:us-east-1:1234:certificate/abc", "not an ACM certificate ARN"),
    ("arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789", "is in eu-west-1"),
    ("arn:aws-cn:acm:us-east-1:123456789012:certificate/0a1b2c3d", "partition 'aws-cn'"),
])
def test_bad_certificate_arn(arn, needle):
    err = _run_bad(_values("reserved", certificateArn=arn))
    assert isinstance(err, ConfigError) and "llmdeploy:certificateArn" in str(err) and needle in str(err), \
        "a bad certificateArn (shape, or a region other than the stack's) must be refused before any resource"


@pytest.mark.parametrize("mode, changes, needles", [
    ("async", {"asyncMaxConcurrentInvocations": 1001}, ["llmdeploy:asyncMaxConcurrentInvocations 1001", "1..1000"]),
    ("reserved", {"servicePort": 70000}, ["llmdeploy:servicePort 70000", "1..65535"]),
    ("realtime", {"owner": "o(brien)"}, ["llmdeploy:owner 'o(brien)'", "'('"]),
    # Pulumi hands a YAML list over as its JSON text.
    ("realtime", {"owner": '["ana","bob"]'}, ["llmdeploy:owner", "must be one string, got a YAML list"]),
    ("serverless", {"serverlessMaxConcurrency": 201}, ["llmdeploy:serverlessMaxConcurrency 201", "1..200"]),
])
def test_values_aws_rejects_are_refused_before_any_resource(mode, changes, needles):
    err = _run_bad(_values(mode, **changes))
    assert isinstance(err, ConfigError)
    for needle in needles:
        assert needle in str(err), "preview must refuse what AWS would reject, naming the value and the limit"


def test_regions_that_disagree_are_refused_before_any_resource():
    values = _values("realtime")
    values["aws:region"] = "eu-west-1"
    err = _run_bad(values)
    assert "aws:region 'eu-west-1'" in str(err) and "llmdeploy:region 'us-east-1'" in str(err)
