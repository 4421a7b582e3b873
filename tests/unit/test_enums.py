"""The enums of llmdeploy.enums carry the same strings as the wire formats they stand for, and their labels."""

from __future__ import annotations

import json

import pytest
import yaml

from llmdeploy import catalog as c
from llmdeploy.enums import LIVE_STATES, NOT_TERMINATED_STATES, InstanceState, Mode, Term, is_billed, is_going
from llmdeploy.stackconfig import BY_KEY, StackConfig


def test_modes_and_terms_are_the_stack_files_strings():
    """Pulumi.<stack>.yaml, --json and --mode carry these values: the members are those strings."""
    assert [m.value for m in Mode] == ["reserved", "realtime", "async", "serverless"]
    assert [t.value for t in Term] == ["on-demand", "1y", "3y"]
    assert BY_KEY["mode"].choices == tuple(Mode) and BY_KEY["term"].choices == tuple(Term)
    assert json.dumps({"mode": Mode.ASYNC, Term.ONE_YEAR: 1}) == '{"mode": "async", "1y": 1}'
    assert f"{Mode.SERVERLESS}" == "serverless" and Mode("async") is Mode.ASYNC


def test_a_stack_config_holds_members_and_writes_plain_strings():
    config = StackConfig(mode="reserved", instance_type="g4dn.xlarge", term="3y")
    assert config.mode is Mode.RESERVED and config.term is Term.THREE_YEARS
    mapping = config.to_mapping()
    assert type(mapping["llmdeploy:mode"]) is str and type(mapping["llmdeploy:term"]) is str
    assert yaml.safe_load(yaml.safe_dump(mapping))["llmdeploy:mode"] == "reserved"  # PyYAML's safe dumper: exact types
    assert StackConfig(mode="batch").mode == "batch", "an unknown mode is kept for validate() to refuse by name"


def test_labels():
    assert [t.label for t in Term] == ["on-demand", "1-year RI", "3-year RI"]
    assert [m.label for m in Mode] == ["EC2", "SageMaker real-time", "SageMaker async", "SageMaker serverless"]
    assert [Term.of_price_field(f) for f in ("on_demand", "ri_1y", "ri_3y")] == list(Term)


def test_a_terms_price_field_is_the_catalog_rows_field():
    row = next(iter(c.load_catalog().ec2.values()))
    for term in Term:
        assert row.hourly(term) == getattr(row, term.price_field)


@pytest.mark.parametrize("mode, sagemaker, instances, ml", [
    ("reserved", False, True, False), ("realtime", True, True, True), ("async", True, True, True),
    ("serverless", True, False, False),
])
def test_mode_groupings(mode, sagemaker, instances, ml):
    m = Mode(mode)
    assert (m.on_sagemaker, m.has_instances, m.ml_instances) == (sagemaker, instances, ml)


def test_instance_states_as_ec2_names_them():
    assert {s.value for s in InstanceState} == {"pending", "running", "stopping", "stopped", "shutting-down", "terminated"}
    assert NOT_TERMINATED_STATES == ("pending", "running", "stopping", "stopped", "shutting-down")
    assert LIVE_STATES == ("pending", "running", "stopping", "stopped")
    assert [s for s in InstanceState if is_billed(s)] == ["pending", "running", "stopping", "shutting-down"]
    assert [s for s in InstanceState if is_going(s)] == ["shutting-down", "terminated"]
    assert not is_billed("?") and not is_going("")


def test_instance_states_match_botocores_ec2_model():
    from botocore.session import get_session

    shape = get_session().get_service_model("ec2").shape_for("InstanceStateName")
    assert set(shape.enum) == {s.value for s in InstanceState}
