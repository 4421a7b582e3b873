"""Files llmdeploy reads that it cannot: not UTF-8, not the format, a folder, truncated, absurd numbers.

One family per file a user may hand over or edit: a model's config.json, Pulumi.NAME.yaml, the user
config (TOML), a price cache or --catalog folder, a speed calibration (--calibration, or the one
`llmdeploy calibrate` left in the user cache). Each is one line naming the file, exit 2.
"""

from __future__ import annotations

import shutil

import pytest

from llmdeploy import catalog as cat_mod
from llmdeploy.prices import CACHE_MARKER, CACHE_MARKER_TEXT

from . import assert_refused, invoke

NOT_UTF8 = [b"\xff\xfe{}", b'{"model_type": "t5"}\x80', "é".encode("latin-1"), b"\xc3\x28"]


@pytest.mark.parametrize("raw", NOT_UTF8)
@pytest.mark.parametrize("command", [["estimate"], ["plan", "--model"]])
def test_model_config_not_utf8(raw, command, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    assert_refused(invoke([*command, path]), 2, "not UTF-8", str(path))


@pytest.mark.parametrize("text, needle", [
    ("", "not valid JSON"), ("{", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("null", "must be a JSON object"),
    ('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}", "too long"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    # An architecture transformers knows is sized once its config has the fields (whisper: d_model, ...).
    ('{"model_type": "whisper"}', "lacks the field"), ('{"model_type": "llama"}', "lacks the field"),
    ('{"model_type": {"a": 1}}', "not a name"), ('{"model_type": ""}', "has no model_type"),
    # One no closed form and no transformers class covers: nothing can count its parameters.
    ('{"model_type": "no-such-arch", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 100, "intermediate_size": 128}', "cannot count the parameters"),
])
def test_model_config_unreadable(text, needle, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert_refused(invoke(["estimate", path]), 2, needle)


def test_model_folder_whose_config_json_is_a_folder(tmp_path):
    (tmp_path / "model" / "config.json").mkdir(parents=True)
    assert_refused(invoke(["estimate", tmp_path / "model"]), 2, "config.json")


STACK_TEXTS = [
    (b"\xff\xfeconfig: {}", "not UTF-8"), (b"config: [unclosed", "not valid YAML"), (b"- a list", "no 'config:' mapping"),
    (b"config:\n  llmdeploy:mode: " + b"9" * 5000, "not valid YAML"), (b"", "no 'config:' mapping"),
    (b"config:\n  llmdeploy:mode: realtime\n  llmdeploy:instanceCount: " + b"9" * 5000 + b"\n", "not valid YAML"),
    (b"config:\n  llmdeploy:mdoe: realtime\n", "Did you mean 'mode'"),
]


@pytest.mark.parametrize("raw, needle", STACK_TEXTS)
@pytest.mark.parametrize("command", [["preview", "--offline"], ["deploy"], ["destroy"]])
def test_stack_file_unreadable_before_anything_runs(raw, needle, command, tmp_path):
    (tmp_path / "Pulumi.dev.yaml").write_bytes(raw)
    assert_refused(invoke([*command, "--stack", "dev", "--project-dir", tmp_path]), 2, needle)


@pytest.mark.parametrize("raw, needle", STACK_TEXTS[:4])  # (an empty file has nothing to lose)
def test_plan_will_not_overwrite_a_stack_file_it_cannot_read(raw, needle, tmp_path):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_bytes(raw)
    assert_refused(invoke(["plan", "--stack", "dev", "--project-dir", tmp_path, "--force"]), 2)
    assert path.read_bytes() == raw, "a stack file plan cannot read is left exactly as it was"


@pytest.mark.parametrize("raw, needle", [
    (b"\xff region = 'x'", "not UTF-8"), (b"region = ", "not valid TOML"), (b"a = " + b"9" * 5000, "cannot read"),
    (b"[plan\n", "not valid TOML"), (b"plan = 3\n", "must be a table"),
])
@pytest.mark.parametrize("command", [["plan"], ["instances"], ["config", "show"], ["reap"], ["finetune", "status"]])
def test_user_config_unreadable(raw, needle, command, tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_bytes(raw)
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(path))
    assert_refused(invoke(command), 2, needle)


def test_user_config_that_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(tmp_path))
    assert_refused(invoke(["plan"]), 2, str(tmp_path))


def _cache_with(name: str, raw: bytes, cache=None):
    cache = cache or cat_mod.user_cache_dir()
    shutil.copytree(cat_mod.BUNDLED_DIR, cache, ignore=shutil.ignore_patterns("__*"))
    (cache / CACHE_MARKER).write_text(CACHE_MARKER_TEXT)
    (cache / name).write_bytes(raw)
    return cache


@pytest.mark.parametrize("name, raw, needle", [
    ("ec2_prices.toml", b"\xff\xfe", "not UTF-8"), ("sources.toml", b"schema_version = ", "not valid TOML"),
    ("gpus.toml", b"schema_version = 1\n", "lacks 'gpus'"), ("instances.toml", b"schema_version = 2\ninstances = {}\n", "schema_version"),
    ("sagemaker_prices.toml", b"schema_version = 1\nhosting = 3\n", "malformed"),
    ("ec2_prices.toml", b"schema_version = 1\n[ec2.us-east-1.\"g5.xlarge\"]\nsource = 'x'\n", "lacks 'on_demand'"),
    ("limits.toml", b"schema_version = " + b"1" * 5000, "cannot read"),
])
@pytest.mark.parametrize("command", [["plan"], ["instances"], ["estimate"], ["prices", "show"]])
def test_a_broken_price_cache_is_one_line(name, raw, needle, command):
    _cache_with(name, raw)
    line = assert_refused(invoke(command), 2, needle)
    assert "prices" in line or "catalog" in line


def test_a_broken_price_cache_can_still_be_cleared():
    cache = _cache_with("ec2_prices.toml", b"\xff")
    result = invoke(["prices", "clear"])
    assert result.exit_code == 0, result.output
    assert not cache.exists()
    assert invoke(["plan"]).exit_code == 0


def test_a_broken_catalog_folder_is_one_line(tmp_path):
    folder = _cache_with("gpus.toml", b"\xff", cache=tmp_path / "cat")
    assert_refused(invoke(["plan", "--catalog", folder]), 2, "not UTF-8", "gpus.toml")


@pytest.mark.parametrize("command", [["estimate"], ["plan", "--model"]])
def test_a_model_config_that_is_a_fifo_is_not_read(command, tmp_path):
    """Reading a FIFO would block for ever: refused by its kind, before any read."""
    import os

    os.mkfifo(tmp_path / "config.json")
    assert_refused(invoke([*command, tmp_path / "config.json"]), 2, "not a regular file")


def test_a_user_config_or_stack_file_that_is_a_fifo_is_not_read(tmp_path, monkeypatch):
    import os

    os.mkfifo(tmp_path / "Pulumi.dev.yaml")
    assert_refused(invoke(["preview", "--offline", "--stack", "dev", "--project-dir", tmp_path]), 2, "not a regular file")
    os.mkfifo(tmp_path / "config.toml")
    monkeypatch.setenv("LLMDEPLOY_CONFIG", str(tmp_path / "config.toml"))
    assert_refused(invoke(["plan"]), 2, "not a regular file")


# -- speed calibrations (llmdeploy calibrate's JSON): --calibration FILE, and the user cache plan reads -------


def _calibration(**fields) -> str:
    import json

    from llmdeploy import calibration as cal

    return json.dumps({**cal.bundled()["cpu"].to_dict(), **fields})


CALIBRATION_TEXTS = [
    (b"\xff\xfe{}", "not UTF-8"), (b"{oops", "not valid JSON"), (b"", "not valid JSON"), (b"[1, 2]", "must be a table"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (_calibration(bandwidth_gbs="fast").encode(), "bandwidth_gbs must be a number"),
    (_calibration(decode_flops=True).encode(), "decode_flops must be a number"),
    (_calibration(bandwidth_gbs=-1).encode(), "bandwidth_gbs must be greater than 0"),
    (_calibration(step_overhead_s_per_layer=-0.001).encode(), "step_overhead_s_per_layer must be at least 0"),
    (_calibration(prefill_flops=1e30).encode(), "prefill_flops must be at most"),
    (_calibration(origin="guessed").encode(), "origin 'guessed'"), (_calibration(device="TPU").encode(), "'TPU'"),
    (_calibration(points=[{"batch": 0, "prefill_s": 1, "step_s": 0.1}]).encode(), "batch must be greater than 0"),
    (_calibration(points=["x"]).encode(), "malformed point #1"),
    (_calibration(input_tokens=1.5).encode(), "input_tokens must be a whole number"),
]


@pytest.mark.parametrize("raw, needle", CALIBRATION_TEXTS, ids=[n for _, n in CALIBRATION_TEXTS])
@pytest.mark.parametrize("command", [["plan"], ["estimate"]])
def test_calibration_file_unreadable(raw, needle, command, tmp_path):
    path = tmp_path / "cal.json"
    path.write_bytes(raw)
    line = assert_refused(invoke([*command, "--calibration", path]), 2, needle)
    assert str(path) in line and len(line) < 400, "names the file; a huge value is not echoed whole"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_calibration_file_with_a_non_finite_or_huge_number(value, tmp_path):
    """Python's json reads NaN, Infinity and a 1e400 float (as inf); a 5000-digit integer is past its digit limit."""
    path = tmp_path / "cal.json"
    path.write_text(_calibration(bandwidth_gbs=1.0).replace('"bandwidth_gbs": 1.0', f'"bandwidth_gbs": {value}'))
    line = assert_refused(invoke(["plan", "--calibration", path]), 2, "bandwidth_gbs" if value != "9" * 5000 else "too long")
    assert len(line) < 400


@pytest.mark.parametrize("make, needle", [
    (lambda t: t / "missing.json", "does not exist"),
    (lambda t: t, "is a folder"),
    (lambda t: _fifo_at(t / "cal.json"), "not a regular file"),
    (lambda t: (t / "l.json").symlink_to("/dev/null") or t / "l.json", "not a regular file"),
])
@pytest.mark.parametrize("command", [["plan"], ["estimate"]])
def test_calibration_path_that_is_not_a_calibration_file(make, needle, command, tmp_path):
    assert_refused(invoke([*command, "--calibration", make(tmp_path)]), 2, needle)


def _fifo_at(path):
    import os

    os.mkfifo(path)
    return path


def test_a_broken_calibration_in_the_user_cache_is_one_line():
    """What `llmdeploy calibrate` wrote there and someone edited: plan names the file and the fix."""
    from llmdeploy import calibration as cal

    cal.user_dir().mkdir(parents=True)
    (cal.user_dir() / "cpu.json").write_text("{")
    assert_refused(invoke(["plan"]), 2, "not valid JSON", "cpu.json", "llmdeploy calibrate")
