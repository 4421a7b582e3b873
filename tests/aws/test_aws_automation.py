"""infra/automation.py without the Pulumi CLI: the missing-CLI error and the backend choice."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from llmdeploy.errors import MissingDependencyError
from llmdeploy.infra import automation


@pytest.fixture
def no_pulumi(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_missing_cli_says_how_to_install(no_pulumi):
    with pytest.raises(MissingDependencyError) as info:
        automation.pulumi_cli()
    message = str(info.value)
    assert "the Pulumi CLI is not installed (no 'pulumi' on PATH)" in message
    assert "curl -fsSL https://get.pulumi.com | sh" in message and "brew install pulumi" in message
    assert "\n" not in message and info.value.exit_code == 1


def test_select_stack_checks_the_cli_first(no_pulumi):
    with pytest.raises(MissingDependencyError, match="get.pulumi.com"):
        automation.select_stack("dev", project_name="p", program=lambda: None)


def test_cli_found_on_path(no_pulumi):
    fake = no_pulumi / "pulumi"
    fake.write_text("#!/bin/sh\necho v3.200.0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert automation.pulumi_cli() == str(fake)


def test_backend_url_prefers_env(monkeypatch):
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://team-state/llmdeploy")
    assert automation.backend_url() == "s3://team-state/llmdeploy"
    assert automation.local_state_dir() is None, "an S3 backend has no local folder"


def test_backend_url_defaults_to_local_folder_created(monkeypatch, tmp_path):
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    url = automation.backend_url()
    assert url == f"file://{tmp_path}/.llmdeploy/pulumi-state"
    assert (tmp_path / ".llmdeploy" / "pulumi-state").is_dir(), "the local backend folder is created"
    assert automation.local_state_dir() == tmp_path / ".llmdeploy" / "pulumi-state"


def test_blank_env_falls_back_to_local(monkeypatch, tmp_path):
    monkeypatch.setenv("PULUMI_BACKEND_URL", "  ")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert automation.backend_url().startswith("file://")


def test_passphrase_defaults_only_when_unset(monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    assert automation._env_vars("file:///x")["PULUMI_CONFIG_PASSPHRASE"] == ""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "/run/secret")
    assert "PULUMI_CONFIG_PASSPHRASE" not in automation._env_vars("file:///x")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "s3cret")
    assert "PULUMI_CONFIG_PASSPHRASE" not in automation._env_vars("file:///x"), "a real passphrase is inherited, not overridden"


def test_module_does_not_import_pulumi_at_import_time():
    import subprocess

    code = "import sys, llmdeploy.infra.automation; sys.exit('pulumi' in sys.modules or 'pulumi.automation' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0
