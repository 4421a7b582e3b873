"""infra/__main__.py run the way Pulumi's language host runs it (runpy, run_name="__main__")."""

import runpy
import warnings
from pathlib import Path

import pulumi
import pytest

from llmdeploy.infra.offline_preview import config_values, make_mocks, run_with_mocks

from .mocks import stack_config

PROGRAM = Path(__file__).resolve().parents[2] / "infra" / "__main__.py"


def _run_as_pulumi_does(values, monkeypatch, tmp_path):
    """The file run as pulumi-language-python-exec runs it: runpy with run_name="__main__", config from PULUMI_CONFIG."""
    monkeypatch.setenv("LLMDEPLOY_BUILD_DIR", str(tmp_path))
    mocks = make_mocks()

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_with_mocks(program, mocks, stack="entry", config=values)
    return mocks


def test_program_file_registers_the_stack(monkeypatch, tmp_path):
    mocks = _run_as_pulumi_does(config_values(stack_config("realtime")), monkeypatch, tmp_path)
    assert any(r.type == "aws:sagemaker/endpoint:Endpoint" for r in mocks.resources)
    assert (tmp_path / "entry" / "model.tar.gz").is_file(), "the artifact is built where it outlives the program"


def test_bad_config_is_a_clean_run_error(monkeypatch, tmp_path):
    values = config_values(stack_config("serverless"))
    values["llmdeploy:serverlessMemoryMb"] = "5000"
    with pytest.raises(pulumi.RunError) as err:
        _run_as_pulumi_does(values, monkeypatch, tmp_path)
    assert "5000" in str(err.value) and "\n" not in str(err.value)
