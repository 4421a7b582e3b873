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


def test_values_from_pulumi_arrive_as_strings_and_are_coerced(cat):
    cfg = StackConfig.from_mapping(
        {"llmdeploy:mode": "realtime", "llmdeploy:instanceType": "ml.g4dn.xlarge", "llmdeploy:instanceCount": "3", "aws:region": "x"},
        catalog=cat,
    )
    assert cfg.instance_count == 3 and cfg.region == "us-east-1"


@pytest.mark.parametrize(
    "raw, error, needle",
    [
        ({"mode": "spot"}, UnknownChoiceError, "unknown llmdeploy:mode 'spot'"),
        ({"mode": "serverless", "serverlessMemoryMb": "5000"}, ConfigError, "5000 is not a SageMaker serverless memory size"),
        ({"mode": "serverless", "serverlessMaxConcurrency": "500"}, ConfigError, "outside 1..200"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "instanceCount": "0"}, ConfigError, "instanceCount must be at least 1"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "instanceCount": "two"}, ConfigError, "must be an integer, got 'two'"),
        ({"mode": "realtime", "instanceType": "g4dn.xlarge"}, ConfigError, "must be an ml.* type"),
        ({"mode": "realtime", "instanceType": "ml.g4dn.xlarge", "minInstances": "0"}, ConfigError, "only possible in async"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "region": "eu-west-1", "instanceTyp": "x"}, UnknownChoiceError, "instanceType"),
        ({"mode": "reserved", "instanceType": "p5.48xlarge", "region": "eu-west-1"}, UnknownChoiceError, "instance type in eu-west-1"),
        ({"mode": "reserved", "instanceType": "g4dn.2xlarge", "weightsUri": "https://x"}, ConfigError, "must be an s3:// URI"),
        ({"instanceType": "g4dn.2xlarge"}, ConfigError, "has no llmdeploy:mode"),
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
