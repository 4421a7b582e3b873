"""`plan --stack` over a Pulumi.NAME.yaml the user edited: every key plan does not own survives, and its mode.

The edited file mirrors what Pulumi itself writes into a stack file: `encryptionsalt` at the top
(`pulumi stack init`), `secure: v1:...` values (`pulumi config set --secret`), provider keys
(`pulumi config set aws:profile`), and hand edits with comments.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import pytest
import yaml

from llmdeploy.catalog import load_catalog
from llmdeploy.enums import Mode
from llmdeploy.models import HubRecord, load_model_config
from llmdeploy.plan import make_plan, stack_config_for
from llmdeploy.stackconfig import DEFAULT_LMI_VERSION, PLANNED, SETTINGS, StackConfig, prepare_stack_file

from . import assert_refused, invoke

ARN = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
USER_KEYS = {
    "aws:profile": "prod-admin",
    "llmdeploy:ingressCidr": "203.0.113.0/24",
    "llmdeploy:certificateArn": ARN,
    "llmdeploy:lmiVersion": "0.33.0",
    "llmdeploy:weightsUri": "s3://models/flan-t5-xl/",
    "llmdeploy:batching": "continuous",
    "llmdeploy:hfToken": {"secure": "v1:AAABAHsomeciphertext=="},
}


def _edited(project, *plan_args):
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", project, *plan_args]).exit_code == 0
    path = project / "Pulumi.prod.yaml"
    text = path.read_text()
    # The user's edits of what plan wrote (the defaults: an internal load balancer, no certificate, weights in the
    # archive, the LMI version llmdeploy pins). Each must hit, or the test would check nothing.
    for written, edited in (
        ("llmdeploy:ingressCidr: ''", "llmdeploy:ingressCidr: 203.0.113.0/24  # office VPN only"),
        ("llmdeploy:certificateArn: ''", f"llmdeploy:certificateArn: {ARN}"),
        ("llmdeploy:weightsUri: ''", "llmdeploy:weightsUri: s3://models/flan-t5-xl/"),
        ("llmdeploy:batching: auto\n", "llmdeploy:batching: continuous  # iteration-level on the GPU too\n"),
        (f"llmdeploy:lmiVersion: {DEFAULT_LMI_VERSION}\n", "llmdeploy:lmiVersion: 0.33.0  # pinned: an older LMI\n"),
        ("config:\n", "encryptionsalt: v1:Zm9vYmFy:v1:c2FsdA==\nconfig:\n  aws:profile: prod-admin\n"
                      "  llmdeploy:hfToken:\n    secure: v1:AAABAHsomeciphertext==\n"),
    ):
        assert text.count(written) == 1, f"plan no longer writes {written!r}: update the edit"
        text = text.replace(written, edited)
    text += "# deploy notes: ask #ml-platform before changing the instance type\n"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def _config(path):
    return yaml.safe_load(path.read_text())


def test_no_terminal_and_no_force_refuses_in_one_line_and_writes_nothing(tmp_path):
    path = _edited(tmp_path)
    before = path.read_bytes()
    line = assert_refused(invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path]), 1, "--force",
                          "llmdeploy:mode (reserved -> async)")
    assert "prod.yaml" in line
    assert path.read_bytes() == before


def test_force_changes_only_what_plan_owns_and_keeps_everything_else(tmp_path):
    path = _edited(tmp_path)
    before = _config(path)
    result = invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path, "--force", "--json"])
    assert result.exit_code == 0, result.output
    after = _config(path)
    assert after["encryptionsalt"] == before["encryptionsalt"]
    for key, value in USER_KEYS.items():
        assert after["config"][key] == value, key
    assert after["config"]["llmdeploy:mode"] == "async"
    changed = {k for k in after["config"] if after["config"][k] != before["config"].get(k)}
    assert changed <= {"aws:region", *(f"llmdeploy:{k}" for k in PLANNED)}, changed
    text = path.read_text()
    assert "# office VPN only" in text and "# deploy notes" in text, "comments are kept"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "the file's mode is kept"
    data = json.loads(result.output[result.output.index("{"):])
    assert {c["key"] for c in data["stack_changes"]} == changed


def test_the_changes_are_shown_as_a_diff_of_keys(tmp_path):
    _edited(tmp_path)
    result = invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path, "--force"])
    assert result.exit_code == 0, result.output
    assert "~ llmdeploy:mode: reserved -> async" in result.output
    assert "llmdeploy:ingressCidr" in result.output.split("keeps", 1)[1].splitlines()[0], "what is kept is named"


def test_a_terminal_asks_and_no_keeps_the_file(tmp_path, monkeypatch):
    path = _edited(tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr("llmdeploy.cli.plan._interactive", lambda: True)  # CliRunner's stdin is never a terminal
    result = invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path], input="n\n")
    assert result.exit_code == 1 and "Update Pulumi.prod.yaml?" in result.output
    assert path.read_bytes() == before
    result = invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path], input="y\n")
    assert result.exit_code == 0 and _config(path)["config"]["llmdeploy:mode"] == "async"
    assert _config(path)["config"]["llmdeploy:certificateArn"] == ARN


def test_the_same_plan_again_leaves_the_file_alone(tmp_path):
    path = _edited(tmp_path)
    before, inode = path.read_bytes(), os.stat(path).st_ino
    result = invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path])
    assert result.exit_code == 0 and "already matches" in result.output
    assert path.read_bytes() == before and os.stat(path).st_ino == inode


def test_owner_in_the_file_is_kept_unless_given(tmp_path):
    path = _edited(tmp_path, "--owner", "ml-platform")
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path]).exit_code == 0
    assert _config(path)["config"]["llmdeploy:owner"] == "ml-platform", "the default --owner does not overwrite it"
    result = invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path, "--owner", "search", "--force"])
    assert result.exit_code == 0 and _config(path)["config"]["llmdeploy:owner"] == "search"


def test_a_file_with_a_flow_style_config_is_merged_without_losing_keys(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text("encryptionsalt: v1:abc\nconfig: {aws:profile: p, llmdeploy:ingressCidr: 10.0.0.0/8}\n")
    result = invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path, "--force"])
    assert result.exit_code == 0, result.output
    data = _config(path)
    assert data["encryptionsalt"] == "v1:abc" and data["config"]["aws:profile"] == "p"
    assert data["config"]["llmdeploy:ingressCidr"] == "10.0.0.0/8" and data["config"]["llmdeploy:mode"] == "reserved"
    assert StackConfig.from_mapping(data["config"]).mode == "reserved"


def test_a_file_with_only_pulumi_keys_gets_a_config_block(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text("# made by pulumi stack init\nencryptionsalt: v1:abc\n")
    assert invoke(["plan", "--stack", "prod", "--project-dir", tmp_path, "--force"]).exit_code == 0
    text = path.read_text()
    assert text.startswith("# made by pulumi stack init") and _config(path)["encryptionsalt"] == "v1:abc"
    assert _config(path)["config"]["llmdeploy:mode"]


def test_a_mistyped_key_in_the_file_is_named_and_the_file_kept(tmp_path):
    path = _edited(tmp_path)
    path.write_text(path.read_text().replace("llmdeploy:ingressCidr:", "llmdeploy:ingresCidr:"))
    before = path.read_bytes()
    assert_refused(invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", tmp_path, "--force"]), 2,
                   "ingresCidr", "Did you mean 'ingressCidr'")
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [m.value for m in Mode])
def test_plan_sets_no_setting_outside_planned(mode):
    """PLANNED (what plan owns in an existing file) covers every setting stack_config_for decides, for a model
    sized from the Hub too (plan records the commit it read: modelRevision)."""
    model = load_model_config("flan-t5-small" if mode == "serverless" else "flan-t5-xl")
    model = replace(model, hub=HubRecord(repo_id=model.hf_id or model.name, commit="0123456789abcdef" * 2 + "01234567"))
    config = stack_config_for(make_plan(model, cat=load_catalog(), mode=mode), owner="o", cost_center="c")
    default = StackConfig(mode=mode)
    decided = {s.key for s in SETTINGS if getattr(config, s.field) != getattr(default, s.field)}
    assert "modelRevision" in decided
    assert decided <= set(PLANNED), decided - set(PLANNED)


def test_prepare_writes_nothing(tmp_path):
    path = _edited(tmp_path)
    before = path.read_bytes()
    config = stack_config_for(make_plan(load_model_config("flan-t5-xl"), cat=load_catalog(), mode="async"))
    update = prepare_stack_file(path, config)
    assert update.changes and path.read_bytes() == before
    update.write()
    assert _config(path)["config"]["llmdeploy:mode"] == "async"


def test_a_mistyped_batching_is_one_line_with_a_did_you_mean(tmp_path):
    """batching is a choice (auto, continuous, static): a typo in the stack file stops preview in one line, exit 2."""
    assert invoke(["plan", "--mode", "realtime", "--stack", "prod", "--project-dir", tmp_path]).exit_code == 0
    path = tmp_path / "Pulumi.prod.yaml"
    text = path.read_text()
    assert text.count("llmdeploy:batching: auto\n") == 1
    path.write_text(text.replace("llmdeploy:batching: auto\n", "llmdeploy:batching: contineous\n"))
    result = invoke(["preview", "--offline", "--stack", "prod", "--project-dir", tmp_path])
    assert_refused(result, 2, "llmdeploy:batching", "'contineous'", "Did you mean 'continuous'", "auto, continuous, static")
