"""llmdeploy.finetune: durations, expiry, cost, instance checks, sizing (pure; no AWS)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from llmdeploy import finetune as ft
from llmdeploy.errors import UnknownChoiceError, UsageError

_spec = importlib.util.spec_from_file_location("fakecat_unit", Path(__file__).parents[1] / "aws" / "fakecat.py")
fakecat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakecat)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def cat(tmp_path):
    from llmdeploy.catalog import load_catalog_from

    return load_catalog_from(fakecat.write(tmp_path / "catalog"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("6h", dt.timedelta(hours=6)),
        ("90m", dt.timedelta(minutes=90)),
        ("1d2h", dt.timedelta(days=1, hours=2)),
        ("2h30m", dt.timedelta(hours=2, minutes=30)),
        ("1d", dt.timedelta(days=1)),
        (" 6H ", dt.timedelta(hours=6)),
    ],
)
def test_parse_duration_accepts_compact_forms(text, expected):
    assert ft.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["6 hours", "0h", "-1h", "6", "", "h", "1.5h", "6h6h", "2m1h", "0d0h0m"])
def test_parse_duration_rejects_with_one_line_naming_value_and_forms(text):
    with pytest.raises(UsageError) as info:
        ft.parse_duration(text, option="--ttl")
    message = str(info.value)
    assert "\n" not in message
    assert repr(text) in message, "the error must name the bad value"
    assert "6h, 90m, 1d2h" in message, "the error must list the accepted forms"
    assert info.value.exit_code == 2


def test_parse_duration_caps_ttl():
    with pytest.raises(UsageError, match="limit"):
        ft.parse_duration("31d")


def test_format_duration_round_trips():
    for text in ("6h", "90m", "1d2h", "2h30m"):
        assert ft.parse_duration(ft.format_duration(ft.parse_duration(text))) == ft.parse_duration(text)
    assert ft.format_duration(dt.timedelta(seconds=20)) == "0m"
    assert ft.format_duration(-dt.timedelta(minutes=5)) == "-5m"


def test_expiry_is_utc_whole_seconds():
    now = dt.datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    exp = ft.expiry(now, dt.timedelta(hours=6))
    assert exp == dt.datetime(2026, 11, 22, 16, 0, tzinfo=dt.UTC)
    assert exp.microsecond == 0 and exp.utcoffset() == dt.timedelta(0)


def test_accrued_cost_is_prorated_and_never_negative():
    assert ft.accrued_cost(NOW, NOW + dt.timedelta(minutes=90), 32.0) == pytest.approx(48.0)
    assert ft.accrued_cost(NOW, NOW - dt.timedelta(hours=1), 32.0) == 0.0


def test_parse_now():
    assert ft.parse_now("2026-11-22T12:00:00Z") == NOW
    with pytest.raises(UsageError, match="--now"):
        ft.parse_now("tomorrow")
    with pytest.raises(UsageError):
        ft.parse_now("2026-11-22T12:00:00")  # no zone: never guess


@pytest.mark.parametrize("count", [0, -1])
def test_instance_count_below_one_is_a_usage_error(count):
    with pytest.raises(UsageError, match="at least 1"):
        ft.check_instance_count(count)


def test_gpu_instance_check(cat):
    assert ft.check_gpu_instance(cat, "us-east-1", "p4d.24xlarge").gpu_count == 8
    with pytest.raises(UnknownChoiceError) as info:
        ft.check_gpu_instance(cat, "us-east-1", "m5.large")
    assert "no GPU" in str(info.value) and info.value.exit_code == 2
    with pytest.raises(UnknownChoiceError) as info:
        ft.check_gpu_instance(cat, "us-east-1", "p4d.24xlarg")
    assert "Did you mean 'p4d.24xlarge'" in str(info.value)
    with pytest.raises(UnknownChoiceError, match="us-west-2"):
        ft.check_gpu_instance(cat, "us-west-2", "p4d.24xlarge")  # not offered there
    with pytest.raises(UnknownChoiceError, match="region"):
        ft.check_gpu_instance(cat, "mars-north-1", "p4d.24xlarge")


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", " 0.0.0.0/0 ", "10.1.2.3/0"])
def test_ssh_cidr_refuses_the_whole_internet(cidr):
    with pytest.raises(UsageError, match="whole internet"):
        ft.check_ssh_cidr(cidr)


def test_ssh_cidr_normalises_and_rejects_garbage():
    assert ft.check_ssh_cidr("203.0.113.7/32") == "203.0.113.7/32"
    assert ft.check_ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    with pytest.raises(UsageError, match="not a CIDR"):
        ft.check_ssh_cidr("my-laptop")


def test_plan_cluster_prices_and_expires(cat):
    plan = ft.plan_cluster(
        cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=2, ttl="6h", idle="30m", model=None, now=NOW
    )
    assert plan.instances == 2 and plan.efa and plan.gpus_per_instance == 8
    assert plan.hourly_total == pytest.approx(2 * 32.7726)
    assert plan.expires_at == NOW + dt.timedelta(hours=6)
    assert plan.idle_minutes == 30
    assert plan.max_cost(NOW) == pytest.approx(6 * 2 * 32.7726)


def test_plan_cluster_needs_a_size(cat):
    with pytest.raises(UsageError, match="--instances"):
        ft.plan_cluster(cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=None, ttl="6h", idle=None, model=None, now=NOW)


def test_plan_cluster_validates_before_sizing(cat):
    with pytest.raises(UsageError, match="'6 hours'"):
        ft.plan_cluster(cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=1, ttl="6 hours", idle=None, model=None, now=NOW)
    with pytest.raises(UsageError, match="--idle"):
        ft.plan_cluster(cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=1, ttl="6h", idle="0m", model=None, now=NOW)
    with pytest.raises(UsageError, match="at least 1"):
        ft.plan_cluster(cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=0, ttl="6h", idle=None, model=None, now=NOW)


def test_instances_from_model_sizing(cat, monkeypatch):
    """N = ceil(GPUs needed / GPUs per instance), from llmdeploy.sizing (stubbed here)."""
    seen = {}
    models = types.ModuleType("llmdeploy.models")
    models.load_model_config = lambda name: seen.setdefault("model", name) or name
    sizing = types.ModuleType("llmdeploy.sizing")
    sizing.finetune_memory = lambda model, precision="bf16-mixed": types.SimpleNamespace(total_bytes=700e9, precision=precision)
    sizing.gpus_for_finetune = lambda mem, gpu: 12 if gpu.name == "A100" else 99
    monkeypatch.setitem(sys.modules, "llmdeploy.models", models)
    monkeypatch.setitem(sys.modules, "llmdeploy.sizing", sizing)
    plan = ft.plan_cluster(
        cat, stack="ft", region="us-east-1", instance_type="p4d.24xlarge", instances=None, ttl="6h", idle=None, model="flan-t5-xxl", now=NOW
    )
    assert seen["model"] == "flan-t5-xxl"
    assert plan.instances == 2, "12 A100s on 8-GPU nodes is 2 nodes"


def test_instance_status_from_describe_shape(cat):
    raw = {
        "InstanceId": "i-1",
        "InstanceType": "p4d.24xlarge",
        "State": {"Name": "running"},
        "LaunchTime": NOW - dt.timedelta(hours=2),
        "Tags": [{"Key": "expires-at", "Value": "2026-11-22T16:00:00Z"}],
    }
    row = ft.instance_status(raw, now=NOW, cat=cat, region="us-east-1")
    assert row.age == dt.timedelta(hours=2)
    assert row.time_left == dt.timedelta(hours=4)
    assert row.accrued_usd == pytest.approx(2 * 32.7726)
    stopped = ft.instance_status({**raw, "State": {"Name": "stopped"}}, now=NOW, cat=cat, region="us-east-1")
    assert stopped.accrued_usd is None
    unknown = ft.instance_status({**raw, "InstanceType": "x9.huge"}, now=NOW, cat=cat, region="us-east-1")
    assert unknown.hourly is None and unknown.accrued_usd is None


def test_cluster_tags_carry_the_rules():
    tags = ft.cluster_tags(stack="ft", owner="ana", cost_center="ml-42", expires_at=NOW)
    assert tags["managed-by"] == "llmdeploy"
    assert tags["expires-at"] == "2026-11-22T12:00:00Z"
    assert tags["llmdeploy:purpose"] == "fine-tune"
    assert tags["owner"] == "ana" and tags["cost-center"] == "ml-42" and tags["llmdeploy:stack"] == "ft"


def test_planning_modules_stay_light():
    """llmdeploy.finetune must not pull boto3/pulumi in (the plan path imports it)."""
    import subprocess

    code = "import sys, llmdeploy.finetune; bad=[m for m in ('boto3','pulumi','pulumi_aws') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("cidr, ok", [
    ("0.0.0.0/1", False), ("10.0.0.0/8", False), ("172.16.0.0/15", False), ("10.1.0.0/16", True),
    ("203.0.113.7/32", True), ("2001:db8::/32", False), ("2001:db8:1::/48", True),
])
def test_ssh_cidr_wider_than_a_16_is_refused_with_the_reason(cidr, ok):
    from llmdeploy.finetune import check_ssh_cidr

    if ok:
        assert check_ssh_cidr(cidr) == cidr
        return
    with pytest.raises(UsageError) as err:
        check_ssh_cidr(cidr)
    assert "slice of the internet" in str(err.value) and "the widest accepted is /" in str(err.value), \
        "a refusal must say why (how many addresses) and what is accepted"


@pytest.mark.parametrize("uri, expected", [
    ("s3://my-bucket/checkpoints/ft", "s3://my-bucket/checkpoints/ft/"),
    ("s3://my-bucket/checkpoints/ft/", "s3://my-bucket/checkpoints/ft/"),
    ("s3://my-bucket", None), ("s3://my-bucket/", None), ("my-bucket/x/", None),
])
def test_checkpoint_uri(uri, expected):
    from llmdeploy.finetune import check_checkpoint_uri

    if expected:
        assert check_checkpoint_uri(uri) == expected
    else:
        with pytest.raises(UsageError, match="with a prefix"):
            check_checkpoint_uri(uri)
