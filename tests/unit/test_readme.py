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
    for line in block.replace("\\\n", " ").splitlines():  # join continued lines
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _runnable(line: str):
    """(env, args) for an offline `llmdeploy ...` line, else None. Pipes and redirections are dropped."""
    line = re.split(r"\s[|>]", line, maxsplit=1)[0]
    words = shlex.split(line)
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[:1] != ["llmdeploy"] or len(words) < 2:
        return None
    offline = words[1] in OFFLINE and "refresh" not in words and not _uses_the_hub(words)
    if words[1] == "preview" and "--offline" in words:
        offline = True
    return (env, words[1:]) if offline else None


def _uses_the_hub(words: list[str]) -> bool:
    """A Hub id that is not bundled, or --revision, reaches the Hugging Face Hub (tests/hub covers those)."""
    from llmdeploy.hub import looks_like_hub_id
    from llmdeploy.models import bundled_index

    bundled = {row["hf_id"].lower() for row in bundled_index().values()}
    return "--revision" in words or any(looks_like_hub_id(w) and w.lower() not in bundled for w in words[2:])


def _example_blocks():
    blocks = []
    for block in BLOCKS[2:]:
        steps = [(line, r) for line in _commands(block) if (r := _runnable(line))]
        if steps:
            blocks.append(steps)
    return blocks


def test_readme_opens_with_the_main_job_then_the_tests():
    first, second = (_commands(b) for b in BLOCKS[:2])
    assert README.index("```bash") < README.index("## "), "the two commands come before any section"
    assert len(first) == 1 and first[0].endswith("llmdeploy plan --mode reserved") and "pip install" in first[0]
    assert len(second) == 1 and "pytest" in second[0] and "pip install" in second[0]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _commands(BLOCKS[1])[0]
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("steps", _example_blocks(), ids=[b[0][0][:60] for b in _example_blocks()])
def test_readme_examples_run_in_order(steps, tmp_path, monkeypatch):
    """Each README code block's offline commands, run in order in one empty folder, all succeed."""
    monkeypatch.chdir(tmp_path)
    for line, (env, args) in steps:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"README example failed: {line}\n{result.output}"


def test_there_are_examples_to_run():
    assert sum(len(b) for b in _example_blocks()) >= 12
