"""Pulumi.yaml declares every stack setting once, generated from llmdeploy.stackconfig."""

from pathlib import Path

import yaml

from llmdeploy.infra import project_file
from llmdeploy.stackconfig import NAMESPACE, SETTINGS, pulumi_project_config

ROOT = Path(__file__).resolve().parents[2]


def test_pulumi_yaml_is_generated_from_the_schema():
    text = (ROOT / "Pulumi.yaml").read_text()
    assert text == project_file.render(), (
        "Pulumi.yaml drifted from llmdeploy/stackconfig.py: regenerate it with "
        "'python -m llmdeploy.infra.project_file > Pulumi.yaml'"
    )


def test_pulumi_yaml_declares_every_setting_with_type_default_and_description():
    data = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert data["name"] == "llmdeploy"
    assert data["main"] == "infra/"
    assert data["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert data["config"] == pulumi_project_config()
    assert list(data["config"]) == [f"{NAMESPACE}:{s.key}" for s in SETTINGS], "each setting must be declared exactly once"
    for key, entry in data["config"].items():
        assert entry["type"] in ("string", "integer", "boolean"), key
        assert entry["description"], f"{key} needs a description"
        if key != f"{NAMESPACE}:mode":
            assert "default" in entry, f"{key} needs a default (only mode is required)"
    assert "default" not in data["config"][f"{NAMESPACE}:mode"], "mode has no default: a stack must choose one"


def test_program_entry_point_exists():
    assert (ROOT / "infra" / "__main__.py").is_file(), "Pulumi.yaml's main: infra/ needs infra/__main__.py"
