"""Reproducible model.tar.gz, the flat handler inside it, and the package/serve CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli
from llmdeploy.containers.package import HANDLER_FILES, PackageSettings, build_model_tarball, sha256_file
from llmdeploy.errors import UsageError


def test_same_inputs_same_bytes(tiny_model_dir, tmp_path):
    a = build_model_tarball(tmp_path / "a.tar.gz", weights_dir=tiny_model_dir)
    os.utime(tiny_model_dir / "config.json", (time.time() + 100, time.time() + 100))  # mtimes must not matter
    b = build_model_tarball(tmp_path / "b.tar.gz", weights_dir=tiny_model_dir)
    assert a.sha256 == b.sha256 == sha256_file(a.path) == hashlib.sha256(b.path.read_bytes()).hexdigest()
    assert a.path.read_bytes() == b.path.read_bytes()
    c = build_model_tarball(tmp_path / "c.tar.gz", PackageSettings(batch_size=16), weights_dir=tiny_model_dir)
    d = build_model_tarball(tmp_path / "d.tar.gz", PackageSettings(dtype="bf16"), weights_dir=tiny_model_dir)
    assert len({a.sha256, c.sha256, d.sha256}) == 3


def test_members_fixed_metadata_and_layout(tiny_model_dir, tmp_path):
    result = build_model_tarball(tmp_path / "m.tar.gz", PackageSettings(dtype="fp16", batch_size=4),
                                 weights_dir=tiny_model_dir)
    raw = result.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert not raw[3] & 0x08  # FNAME flag unset: no file name in the header
    with tarfile.open(result.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "root", "root", 0o644)}
        assert set(HANDLER_FILES) <= set(names) and "serving.properties" in names
        assert "weights/config.json" in names and "weights/model.safetensors" in names
        props = tar.extractfile("serving.properties").read().decode()
    assert "engine=Python" in props and "option.entryPoint=model.py" in props
    assert "option.model_id=weights" in props and "option.dtype=fp16" in props and "batch_size=4" in props


def test_progress_callback_reaches_total(tiny_model_dir, tmp_path):
    seen = []
    build_model_tarball(tmp_path / "p.tar.gz", weights_dir=tiny_model_dir, progress=lambda d, t, n: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_bad_inputs_raise_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        build_model_tarball(tmp_path / "x.tar.gz", weights_dir=tmp_path / "missing")
    with pytest.raises(UsageError):
        build_model_tarball(tmp_path / "x.tar.gz", PackageSettings(dtype="fp8"))
    assert not (tmp_path / "x.tar.gz").exists()


def test_flat_handler_runs_from_the_extracted_tarball(tiny_model_dir, tmp_path):
    """What DJL does: model folder on sys.path, `import model`, handle(init) then handle(batch)."""
    result = build_model_tarball(tmp_path / "m.tar.gz", PackageSettings(max_new_tokens=8), weights_dir=tiny_model_dir)
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(result.path) as tar:
        # The "data" filter (safe extraction) exists from Python 3.11.4; older 3.11s extract as before.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(model_dir, **safe)
    fake_djl = tmp_path / "fake" / "djl_python"
    fake_djl.mkdir(parents=True)
    (fake_djl / "__init__.py").write_text("from .double import Input, Output\n")
    (fake_djl / "double.py").write_text((Path(__file__).parent / "djl_double.py").read_text())
    props = {}
    for line in (model_dir / "serving.properties").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            props[k] = v
    props["model_dir"] = str(model_dir)
    script = f"""
import json, sys
sys.path.insert(0, {str(tmp_path / 'fake')!r}); sys.path.append({str(model_dir)!r})
import model
from djl_python import Input
props = json.loads({json.dumps(json.dumps(props))})
assert model.handle(Input(props)) is None
out = model.handle(Input.batch([{{"inputs": "w1 w2", "parameters": {{"max_new_tokens": 3}}}}, {{"inputs": 1}}]))
print(json.dumps(out.json_items()))
assert not any(m.startswith("llmdeploy") for m in sys.modules), [m for m in sys.modules if m.startswith("llmdeploy")]
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "generated_text" in items["batch_0.data"] and items["batch_1.data"]["code"] == 400


def test_cli_package_prints_sha256(tiny_model_dir, tmp_path):
    out = tmp_path / "cli.tar.gz"
    res = CliRunner().invoke(cli, ["package", "--model", str(tiny_model_dir), "--out", str(out), "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    assert f"sha256 {sha256_file(out)}" in res.output
    res = CliRunner().invoke(cli, ["package", "--model", str(tiny_model_dir), "--out", str(out), "--json"])
    payload = json.loads(res.output)
    assert payload["sha256"] == sha256_file(out) and "serving.properties" in payload["members"]


@pytest.mark.parametrize("args", [["package", "--model", "/no/such/dir", "--out", "x.tar.gz"],
                                  ["package", "--out", "x.tar.gz"],
                                  ["serve", "--model", "/no/such/dir"]])
def test_cli_bad_model_path_is_one_line_exit_2(args, tmp_path):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith("Error:")


def test_cli_serve_folder_without_config_is_a_config_error(tmp_path):
    res = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "config.json" in res.output and "Traceback" not in res.output


def test_cli_serve_help():
    res = CliRunner().invoke(cli, ["serve", "--help"])
    assert res.exit_code == 0
    for flag in ("--model", "--port", "--host", "--max-batch-size", "--max-batch-delay-ms", "--backend"):
        assert flag in res.output


def test_dockerfile_pins_lmi_and_copies_every_handler_file():
    import re

    text = (Path(__file__).resolve().parents[2] / "containers" / "Dockerfile").read_text()
    image = re.search(r"^ARG LMI_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"\d+\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/djl-inference:\d+\.\d+\.\d+-lmi[\w.-]+", image)
    assert "FROM ${LMI_IMAGE}" in text
    for name in HANDLER_FILES:
        assert f"handlers/{name}" in text, name
    props = (Path(__file__).resolve().parents[2] / "containers" / "serving.properties").read_text()
    for key in ("engine=Python", "option.entryPoint=model.py", "batch_size=", "max_batch_delay=", "option.dtype=",
                "option.tensor_parallel_degree="):
        assert key in props
