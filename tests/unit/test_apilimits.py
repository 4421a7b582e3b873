"""AWS's limits come from botocore's service models, through one generated file, and every stack setting meets them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmdeploy import apilimits
from llmdeploy.errors import ConfigError
from llmdeploy.stackconfig import StackConfig, read_stack_file

RESERVED = {"mode": "reserved", "instanceType": "g4dn.2xlarge", "instanceCount": "2", "minInstances": "2"}
ASYNC = {"mode": "async", "instanceType": "ml.g4dn.xlarge", "instanceCount": "2", "minInstances": "0"}


@pytest.fixture(scope="module")
def cat():
    from llmdeploy.catalog import BUNDLED_DIR, load_catalog_from

    return load_catalog_from(BUNDLED_DIR)


def test_the_limits_file_is_what_botocore_says_now():
    pytest.importorskip("botocore", reason="the infra extra brings botocore; CI installs it")
    fresh = apilimits.render(apilimits.from_botocore())
    assert json.loads(apilimits.DATA_FILE.read_text())["limits"] == json.loads(fresh)["limits"], (
        "llmdeploy/data/aws_limits.json no longer matches botocore's service models: "
        "run `python -m llmdeploy.apilimits --write` and review the diff")


def test_every_entry_names_where_it_came_from():
    for key, entries in apilimits.load().items():
        assert key in apilimits.SPECS
        for e in entries:
            assert e.service and e.api_version and e.operation and e.member and e.shape, f"{key}: source of the limit"
    # Some members state nothing (EC2's tag values, Auto Scaling's sizes): the others carry what we check.
    assert apilimits.int_range("asyncMaxConcurrentInvocations") == (1, 1000)
    assert any(e.pattern for e in apilimits.limits("tagValue"))


@pytest.mark.parametrize("key", ["tagValue", "lmiImage"])
def test_java_pattern_matcher_agrees_with_the_regex_package(key):
    regex = pytest.importorskip("regex", reason="the regex package (a transformers dependency) has \\p{..} classes")
    samples = ["ml-platform", "o(brien)", "ana@example.com", "José Müller", "a b", "", "tab\there", "😀", "a,b",
               "2026-11-22T18:00:00Z", "٣", "\u2028", "x" * 10, "semi;colon", "q'uote", "new\nline", "\u00a0nbsp"]
    for e in apilimits.limits(key):
        if e.pattern is None:
            continue
        # Java's \S is ASCII-only unless UNICODE_CHARACTER_CLASS; a surrogate-pair range is the supplementary planes.
        java = e.pattern.replace("\\uD800\\uDC00-\\uDBFF\\uDFFF", "\\U00010000-\\U0010FFFF").replace(
            "\\S", "\\x00-\\x08\\x0e-\\x1f\\x21-\\U0010FFFF")
        rx = regex.compile(java)
        for s in samples:
            ours = apilimits.first_mismatch(e.pattern, s) is None
            assert ours == (rx.fullmatch(s) is not None), f"{e.where} pattern {e.pattern!r} on {s!r}"


def test_an_unsupported_pattern_is_refused_not_skipped():
    with pytest.raises(ValueError, match="unsupported pattern"):
        apilimits.first_mismatch("(https|s3)://([^/]+)/?(.*)", "s3://b/k")


def test_plan_validation_needs_no_botocore():
    code = ("import sys; from llmdeploy.stackconfig import StackConfig; "
            "StackConfig(mode='async', instance_type='ml.g4dn.xlarge', min_instances=0).validate(); "
            "print('botocore' in sys.modules, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], "plan checks AWS's limits from the generated file, without importing botocore"


@pytest.mark.parametrize("raw, needles", [
    ({**ASYNC, "asyncMaxConcurrentInvocations": "1001"},
     ["llmdeploy:asyncMaxConcurrentInvocations 1001", "1..1000", "MaxConcurrentInvocationsPerInstance"]),
    ({**RESERVED, "servicePort": "70000"}, ["llmdeploy:servicePort 70000", "1..65535", "elbv2 CreateTargetGroup Port"]),
    ({**RESERVED, "owner": "o(brien)"}, ["llmdeploy:owner 'o(brien)'", "'('", "iam CreateRole Tags[].Value", "letters, digits"]),
    ({**RESERVED, "costCenter": "cc,42"}, ["llmdeploy:costCenter 'cc,42'", "','"]),
    ({**RESERVED, "owner": "x" * 257}, ["longer than the 256 characters"]),
    ({**RESERVED, "owner": ["ana", "bob"]}, ["llmdeploy:owner", "must be one string, got a YAML list", "'ana-bob'"]),
    ({**RESERVED, "aws:region": "eu-west-1"}, ["aws:region 'eu-west-1'", "llmdeploy:region 'us-east-1'", "disagree"]),
    ({**RESERVED, "lmiImage": "my image:1"}, ["llmdeploy:lmiImage", "' '"]),
    ({"mode": "serverless", "serverlessMemoryMb": "8192"}, ["llmdeploy:serverlessMemoryMb 8192", "1024..6144"]),
])
def test_values_aws_would_reject_are_refused_with_one_line(raw, needles, cat):
    with pytest.raises(ConfigError) as err:
        StackConfig.from_mapping(raw, catalog=cat)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_owner_as_a_yaml_list_in_the_stack_file(tmp_path, cat):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  llmdeploy:mode: reserved\n  llmdeploy:instanceType: g4dn.2xlarge\n"
                    "  llmdeploy:owner:\n    - ana\n    - bob\n")
    with pytest.raises(ConfigError, match="must be one string, got a YAML list"):
        read_stack_file(path, catalog=cat)


def test_unicode_owner_is_a_valid_tag_value(cat):
    assert StackConfig.from_mapping({**RESERVED, "owner": "José Müller"}, catalog=cat).owner == "José Müller"


def test_catalog_ranges_are_the_api_models():
    from llmdeploy.catalog import BUNDLED_DIR, load_catalog_from

    cat = load_catalog_from(BUNDLED_DIR)
    assert cat.async_limits.max_concurrent_invocations_per_instance == apilimits.int_range("asyncMaxConcurrentInvocations")[1]
    assert cat.serverless_limits.max_concurrency == apilimits.int_range("serverlessMaxConcurrency")[1]
    low, high = apilimits.int_range("serverlessMemoryMb")
    assert cat.serverless_limits.memory_sizes_mb[0] == low and cat.serverless_limits.memory_sizes_mb[-1] == high
