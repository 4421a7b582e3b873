"""Every command, generated from the command tree: misspelled options and choices, and end-to-end runs.

The end-to-end cases run the real entry point in a subprocess (what a user's shell runs), so stderr,
stdout and the exit status are the process's own, not CliRunner's.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from llmdeploy import catalog as cat_mod

from . import REQUIRED, assert_refused, invoke, leaf_commands

ALL = [path for path, _ in leaf_commands()]


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_an_unknown_option_is_one_line_exit_2(path):
    assert_refused(invoke([*path, "--no-such-flag"]), 2, "No such option")


def _longest_options():
    for path, command in leaf_commands():
        flags = [o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--") and o != "--help"]
        if flags:
            yield path, max(flags, key=len)


LONGEST = list(_longest_options())


@pytest.mark.parametrize("path, flag", LONGEST, ids=[" ".join(p) for p, _ in LONGEST])
def test_a_misspelled_option_gets_a_did_you_mean(path, flag):
    typo = flag[:4] + flag[5:]  # one letter dropped
    assert_refused(invoke([*path, typo, "x"]), 2, "Did you mean", flag)


def _choices():
    for path, command in leaf_commands():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                flag = max(param.opts, key=len) if isinstance(param, click.Option) else None
                yield path, flag


CHOICES = list(_choices())


@pytest.mark.parametrize("path, flag", CHOICES, ids=[f"{' '.join(p)} {f}" for p, f in CHOICES])
def test_a_value_outside_a_choice_is_one_line(path, flag):
    args = [*path, *REQUIRED.get(path, []), *([flag] if flag else []), "bogus-value"]
    assert_refused(invoke(args), 2, "bogus-value")


def _misspelled_choices():
    for path, command in leaf_commands():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                longest = max((str(c) for c in param.type.choices), key=len)
                if len(longest) >= 4:
                    flag = max(param.opts, key=len) if isinstance(param, click.Option) else None
                    yield path, flag, longest


MISSPELLED = list(_misspelled_choices())


@pytest.mark.parametrize("path, flag, choice", MISSPELLED, ids=[f"{' '.join(p)} {f} {c}" for p, f, c in MISSPELLED])
def test_a_misspelled_choice_gets_a_did_you_mean(path, flag, choice):
    typo = choice[:2] + choice[3:]  # one letter dropped
    args = [*path, *REQUIRED.get(path, []), *([flag] if flag else []), typo]
    assert_refused(invoke(args), 2, f"Did you mean {choice!r}?")


@pytest.mark.parametrize("args, needle", [
    (["plna"], "Did you mean 'plan'"), (["finetune", "upp"], "Did you mean 'up'"), (["prices", "shw"], "Did you mean 'show'"),
    (["config", "show", "--command", "bogus"], "unknown command 'bogus'"),
    (["config", "show", "--command", "plna"], "Did you mean 'plan'"), (["config", "completion", "tcsh"], "tcsh"),
    (["instances", "--region", "us-esat-1"], "Did you mean 'us-east-1'"), (["instances", "--family", "g55"], "g55"),
    (["estimate", "flan-t5-xll"], "Did you mean 'flan-t5-xl'"), (["plan", "--instance-type", "g4dn.2xlarg"], "Did you mean"),
    (["finetune", "up", "--ttl", "6 hours", "--instances", "1"], "not a duration"),
    (["finetune", "up", "--ttl", "6h", "--instances", "1", "--ssh-cidr", "0.0.0.0/0"], "whole internet"),
    (["finetune", "up", "--ttl", "6h", "--instances", "1", "--instance-type", "g5.xlarg"], "g5.xlarg"),
    (["finetune", "status", "--region", "mars-1"], "mars-1"), (["reap", "--region", "mars-1"], "mars-1"),
    (["reap", "--now", "yesterday"], "--now"), (["prices", "refresh", "--region", "mars-1"], "mars-1"),
    (["preview", "--offline"], "--stack NAME is required"), (["deploy", "--stack", "nope"], "does not exist"),
])
def test_names_and_values_with_a_fix(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(invoke(args), 2, needle)


def test_config_show_with_a_bogus_command_exits_2():
    """The issue's case: it used to print the defaults and exit 0."""
    assert_refused(invoke(["config", "show", "--command", "bogus"]), 2, "bogus")


# -- end to end: the real process -----------------------------------------------------------------------


def _run(args, **env):
    return subprocess.run([sys.executable, "-m", "llmdeploy.cli.main", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.parametrize("args, code, needle", [
    (["plan", "--buffer", "nan"], 2, "--buffer must be a finite number"),
    (["plan", "--latency-target", "inf", "--json"], 2, "--latency-target must be a finite number"),
    (["plan", "--requests-per-day", "1e7", "--peak-rps", "0.0001"], 2, "below the average"),
    (["plan", "--stack", "dev\n"], 2, "stack name"),
    (["plan", "--chart", "/proc/x.png"], 2, "--chart"),
    (["estimate", "--batch", "9" * 5000], 2, "at most 18 digits"),
    (["config", "show", "--command", "bogus"], 2, "unknown command"),
])
def test_end_to_end(args, code, needle):
    proc = _run(args)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "", "an error prints nothing on stdout (no half JSON)"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_end_to_end_bad_files(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe")
    proc = _run(["estimate", tmp_path / "config.json"])
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "user.toml").write_text("yes = true\n")
    proc = _run(["reap"], LLMDEPLOY_CONFIG=str(tmp_path / "user.toml"))
    assert proc.returncode == 2 and "'yes' is not allowed in a config file" in proc.stderr
    cache = tmp_path / "cache"
    (cache / "catalog").mkdir(parents=True)
    (cache / "catalog" / "mine.txt").write_text("x")
    proc = _run(["prices", "clear"], LLMDEPLOY_CACHE_DIR=str(cache))
    assert proc.returncode == 1 and "was not created by" in proc.stderr
    assert (cache / "catalog" / "mine.txt").exists()
    assert cat_mod.user_cache_dir() != cache / "catalog", "the subprocess had its own cache dir"
