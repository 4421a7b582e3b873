"""`batching`: auto resolves to static batches on GPUs and iteration-level (continuous) on CPUs, in one rule
(handlers/serving_config.resolve_batching), which the stack (stack_batching: mode + the catalog's gpu_count),
`llmdeploy package` and the local endpoint all use. Why that rule: the H200 measurement in its docstring."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import instance, load_catalog
from llmdeploy.enums import Mode
from llmdeploy.errors import UnknownChoiceError
from llmdeploy.handlers.serving_config import BATCHING_CHOICES, ServingConfigError, resolve_batching
from llmdeploy.stackconfig import SETTINGS, StackConfig, stack_batching


@pytest.mark.parametrize("batching, on_gpu, want", [
    ("auto", True, "static"), ("auto", False, "continuous"),
    ("continuous", True, "continuous"), ("continuous", False, "continuous"),
    ("static", True, "static"), ("static", False, "static"),
])
def test_the_rule(batching, on_gpu, want):
    assert resolve_batching(batching, on_gpu=on_gpu) == want


@pytest.mark.parametrize("mode, gpu_count, batching, want", [
    ("realtime", 1, "auto", "static"), ("async", 1, "auto", "static"), ("reserved", 8, "auto", "static"),
    ("realtime", 0, "auto", "continuous"), ("reserved", 0, "auto", "continuous"),  # CPU instance types
    ("serverless", 0, "auto", "continuous"),
    ("serverless", 4, "auto", "continuous"),  # serverless runs on CPUs whatever a stray count says
    ("realtime", 1, "continuous", "continuous"), ("serverless", 0, "static", "static"),
])
def test_the_stack_table(mode, gpu_count, batching, want):
    assert stack_batching(batching, Mode(mode), gpu_count) == want


@pytest.mark.parametrize("mode, instance_type, want", [
    ("realtime", "ml.g5.xlarge", "static"), ("async", "ml.g4dn.xlarge", "static"),
    ("reserved", "g5.2xlarge", "static"), ("realtime", "ml.c5.xlarge", "continuous"),
    ("reserved", "m5.xlarge", "continuous"),
])
def test_served_batching_reads_the_catalog_s_gpu_count(mode, instance_type, want):
    catalog = load_catalog()
    assert (instance(catalog, instance_type).gpu_count > 0) == (want == "static")
    config = StackConfig(mode=mode, instance_type=instance_type, min_instances=1)
    assert config.served_batching(catalog) == want
    assert StackConfig(mode=mode, instance_type=instance_type, batching="continuous").served_batching(catalog) == \
        "continuous"
    serverless = StackConfig(mode="serverless", model="flan-t5-small")
    assert serverless.served_batching(catalog) == "continuous"


def test_the_setting_is_declared_once_with_its_choices():
    (setting,) = [s for s in SETTINGS if s.key == "batching"]
    assert setting.choices == BATCHING_CHOICES == ("auto", "continuous", "static")
    assert StackConfig(mode="serverless").batching == "auto"
    for words in ("H200", "2026-11-30", "continuous", "static"):
        assert words in setting.description, words


def test_a_bad_value_is_refused_with_the_choices():
    with pytest.raises(ServingConfigError, match="continuous"):
        resolve_batching("rolling", on_gpu=True)
    with pytest.raises(UnknownChoiceError, match="Did you mean 'continuous'"):
        StackConfig.from_mapping({"llmdeploy:mode": "serverless", "llmdeploy:batching": "contineous"})
