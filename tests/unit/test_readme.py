"""The README is executable documentation: its two opening commands, CI, and every offline example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
# Examples that run here without AWS, Pulumi or a model on disk; the rest are covered by their own tests.
OFFLINE = {"estimate", "plan", "instances", "config", "prices"}


def _commands(block: str) -> list[str]:
    out = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_readme_opens_with_the_main_job_then_the_tests():
    first, second = (_commands(b) for b in BLOCKS[:2])
    assert README.index("```bash") < README.index("## "), "the two commands come before any section"
    assert len(first) == 1 and first[0].endswith("llmdeploy plan --mode reserved") and "pip install" in first[0]
    assert len(second) == 1 and "pytest" in second[0] and "pip install" in second[0]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _commands(BLOCKS[1])[0]
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _examples():
    seen = []
    for block in BLOCKS[2:]:
        for line in _commands(block):
            line = re.split(r"\s[|>]", line, maxsplit=1)[0]
            words = shlex.split(line)
            env = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words[:1] == ["llmdeploy"] and len(words) > 1 and words[1] in OFFLINE and "refresh" not in words:
                seen.append((line, env, words[1:]))
    return seen


@pytest.mark.parametrize("line, env, args", _examples(), ids=[e[0] for e in _examples()])
def test_readme_example_runs(line, env, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"README example failed: {line}\n{result.output}"


def test_there_are_examples_to_run():
    assert len(_examples()) >= 8
