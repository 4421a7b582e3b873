"""The CI examples users copy must at least be valid workflows that call llmdeploy the way the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from llmdeploy.cli.main import cli

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_workflow_is_valid_and_its_llmdeploy_flags_exist(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow.get("jobs"), f"{path.name} has no jobs"
    runs = [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]
    calls = [m.group(1) for run in runs for m in re.finditer(r"llmdeploy ((?:[a-z]+)(?: [^|>\n]*)?)", run)]
    assert calls, f"{path.name} never runs llmdeploy"
    for call in calls:
        words = [w for w in shlex.split(call.replace('"$STACK"', "prod")) if not w.startswith("$")]
        # --help parses the command path and every flag before it; an unknown flag or command fails here.
        result = CliRunner().invoke(cli, [*words, "--help"])
        assert result.exit_code == 0, f"{path.name}: 'llmdeploy {call}' is not a valid command line:\n{result.output}"
