"""Reproducible model.tar.gz, the flat handler inside it, and the package/serve CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli
from llmdeploy.containers.package import (
    HANDLER_FILES,
    PackageSettings,
    build_model_tarball,
    render_serving_properties,
    sha256_file,
)
from llmdeploy.errors import UsageError
from llmdeploy.handlers import serving_config as sc


def test_same_inputs_same_bytes(tiny_model_dir, tmp_path):
    a = build_model_tarball(tmp_path / "a.tar.gz", weights_dir=tiny_model_dir)
    os.utime(tiny_model_dir / "config.json", (time.time() + 100, time.time() + 100))  # mtimes must not matter
    b = build_model_tarball(tmp_path / "b.tar.gz", weights_dir=tiny_model_dir)
    assert a.sha256 == b.sha256 == sha256_file(a.path) == hashlib.sha256(b.path.read_bytes()).hexdigest()
    assert a.path.read_bytes() == b.path.read_bytes()
    c = build_model_tarball(tmp_path / "c.tar.gz", PackageSettings(max_batch_size=16), weights_dir=tiny_model_dir)
    d = build_model_tarball(tmp_path / "d.tar.gz", PackageSettings(dtype="bf16"), weights_dir=tiny_model_dir)
    assert len({a.sha256, c.sha256, d.sha256}) == 3


def _properties(text: str) -> dict:
    """serving.properties as java.util.Properties reads these lines (key=value; '#' comments)."""
    props = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "!")):
            key, _, value = line.partition("=")
            assert key.strip() not in props, f"duplicate key {key!r}"
            props[key.strip()] = value.strip()
    return props


def test_members_fixed_metadata_and_layout(tiny_model_dir, tmp_path):
    result = build_model_tarball(tmp_path / "m.tar.gz", PackageSettings(dtype="fp16", max_batch_size=4),
                                 weights_dir=tiny_model_dir)
    raw = result.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert not raw[3] & 0x08  # FNAME flag unset: no file name in the header
    with tarfile.open(result.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "root", "root", 0o644)}
        assert set(HANDLER_FILES) <= set(names) and "serving.properties" in names and "requirements.txt" in names
        assert "weights/config.json" in names and "weights/model.safetensors" in names
        props = _properties(tar.extractfile("serving.properties").read().decode())
    assert props == {
        "engine": "Python", "option.entryPoint": "model.py",
        # absolute: a relative model_id makes LMI ask the Hugging Face Hub for it at start-up
        "option.model_id": "/opt/ml/model/weights",
        # package's --batching auto is a GPU target's: static batches (DJL's dynamic batching of up to batch_size
        # requests, waiting max_batch_delay ms), what bench_serve measured fastest on an H200
        "option.rolling_batch": "disable", "batch_size": "4", "max_batch_delay": str(sc.DEFAULT_MAX_BATCH_DELAY_MS),
        "option.dtype": "fp16", "option.tensor_parallel_degree": "1", "option.backend": "transformers",
        # the handler's defaults (serving_config), which package writes unless told otherwise
        "option.max_new_tokens": str(sc.DEFAULT_MAX_NEW_TOKENS), "option.max_num_beams": str(sc.DEFAULT_MAX_NUM_BEAMS),
        "option.max_request_tokens": str(sc.DEFAULT_MAX_REQUEST_TOKENS),
        "maxWorkers": "1",
    }


def test_transformers_rolls_when_continuous_and_everything_else_batches_statically():
    from llmdeploy.handlers.serving_config import parse_properties

    for slots in (1, 2, 64):
        props = _properties(render_serving_properties(PackageSettings(batching="continuous", max_batch_size=slots),
                                                      with_weights=True))
        assert props["option.rolling_batch"] == "llmdeploy" and props["option.max_rolling_batch_size"] == str(slots)
        assert props["batch_size"] == "1" and "max_batch_delay" not in props
        assert parse_properties(props).max_batch_size == slots
    # static: ctranslate2 whatever batching says; transformers with batching static, or auto (package: a GPU target)
    statics = [dict(backend="ctranslate2", batching=b) for b in ("auto", "continuous", "static")]
    statics += [dict(backend="transformers", batching=b) for b in ("auto", "static")]
    for batch_size in (1, 2, 32):
        for kwargs in statics:
            settings = PackageSettings(**kwargs, max_batch_size=batch_size, max_batch_delay_ms=7)
            assert not settings.rolling, kwargs
            props = _properties(render_serving_properties(settings, with_weights=True))
            assert props["option.rolling_batch"] == "disable" and props["batch_size"] == str(batch_size), kwargs
            assert props["max_batch_delay"] == "7" and "option.max_rolling_batch_size" not in props
            assert parse_properties(props).max_batch_size == batch_size


def test_package_batching_flag_reaches_serving_properties(tmp_path):
    """`llmdeploy package --batching`: auto (the default) writes static batches, continuous the rolling batch."""
    written = {}
    for flag in ([], ["--batching", "auto"], ["--batching", "static"], ["--batching", "continuous"]):
        out = tmp_path / f"p{len(written)}.tar.gz"
        res = CliRunner().invoke(cli, ["package", "--model-id", "google/flan-t5-small", "--out", str(out),
                                       "--max-batch-size", "8", *flag])
        assert res.exit_code == 0, res.output
        with tarfile.open(out) as tar:
            props = _properties(tar.extractfile("serving.properties").read().decode())
        written[" ".join(flag) or "default"] = (props["option.rolling_batch"], props["batch_size"],
                                                props.get("option.max_rolling_batch_size"))
    assert written == {"default": ("disable", "8", None), "--batching auto": ("disable", "8", None),
                       "--batching static": ("disable", "8", None), "--batching continuous": ("llmdeploy", "1", "8")}


@pytest.mark.parametrize("batching", ["auto", "continuous", "static"])
@pytest.mark.parametrize("backend", ["transformers", "ctranslate2"])
def test_the_handler_reads_back_every_setting_package_writes(backend, batching):
    """What package writes is what the handler runs with (one set of keys: serving_config.batch_properties)."""
    from llmdeploy.handlers.serving_config import parse_properties

    settings = PackageSettings(dtype="bf16", backend=backend, batching=batching, max_batch_size=12,
                               max_batch_delay_ms=30, max_new_tokens=300, max_num_beams=2, max_request_tokens=900,
                               model_id="google/flan-t5-xl")
    config = parse_properties(_properties(render_serving_properties(settings, with_weights=False)))
    rolling = backend == "transformers" and batching == "continuous"
    assert (config.dtype, config.backend, config.max_batch_size, config.max_new_tokens_cap, config.max_num_beams,
            config.max_request_tokens, config.model_id, config.rolling_batch) == \
        ("bf16", backend, 12, 300, 2, 900, "google/flan-t5-xl", rolling)
    if not rolling:
        assert config.max_batch_delay_ms == 30


def test_defaults_come_from_the_handler_s_serving_config():
    """package, serve and the stack settings share the handler's defaults (no copies)."""
    from llmdeploy.handlers.serving_config import ServingConfig
    from llmdeploy.stackconfig import StackConfig

    handler, packaged, stack = ServingConfig(), PackageSettings(), StackConfig(mode="realtime")
    for name in ("dtype", "backend", "max_batch_size", "max_batch_delay_ms", "max_num_beams", "max_request_tokens",
                 "tensor_parallel_degree"):
        assert getattr(handler, name) == getattr(packaged, name), name
    assert handler.max_new_tokens_cap == packaged.max_new_tokens == stack.max_new_tokens
    for name in ("backend", "max_batch_size", "max_batch_delay_ms", "max_num_beams", "max_request_tokens"):
        assert getattr(stack, name) == getattr(handler, name), name
    assert stack.batching == packaged.batching == sc.DEFAULT_BATCHING == "auto"
    import click

    for command in ("serve", "package"):
        params = {p.name: p.default for p in cli.get_command(click.Context(cli), command).params}
        assert (params["dtype"], params["backend"], params["max_batch_size"], params["max_batch_delay_ms"],
                params["max_new_tokens"], params["max_num_beams"], params["max_request_tokens"]) == \
            (handler.dtype, handler.backend, handler.max_batch_size, handler.max_batch_delay_ms,
             handler.max_new_tokens_cap, handler.max_num_beams, handler.max_request_tokens), command
        assert params["batching"] == sc.DEFAULT_BATCHING, command


def test_lmi_recommender_leaves_the_handler_in_sync_mode():
    """Without option.rolling_batch, LMI 0.35+ puts a T5 with batch_size 1 in async mode (no handle() call)."""
    from djl_double import lmi_recommended

    t5 = ["T5ForConditionalGeneration"]
    for settings in (PackageSettings(), PackageSettings(batching="continuous"),
                     PackageSettings(backend="ctranslate2", max_batch_size=1),
                     PackageSettings(backend="ctranslate2", max_batch_size=8)):
        ours = _properties(render_serving_properties(settings, with_weights=True))
        recommended = lmi_recommended(ours, t5)
        assert "option.async_mode" not in recommended
        assert recommended["option.rolling_batch"] == ours["option.rolling_batch"]  # ours is kept as written
    bare = {"engine": "Python", "option.entryPoint": "model.py", "batch_size": "1"}
    assert lmi_recommended(bare, t5)["option.async_mode"] == "true", "the case option.rolling_batch=disable prevents"


@pytest.mark.parametrize("model_id", ["google/flan-t5-xl", "gpt2", "s3://my-bucket/models/flan-t5-xl/",
                                      "/mnt/models/flan t5"])
def test_model_ids_that_serving_properties_can_hold(model_id):
    props = _properties(render_serving_properties(PackageSettings(model_id=model_id), with_weights=False))
    assert props["option.model_id"] == model_id and props["option.entryPoint"] == "model.py"


@pytest.mark.parametrize("model_id, needle", [
    ("x\noption.entryPoint=/etc/evil.py", "line break"),
    ("x\roption.entryPoint=/etc/evil.py", "line break"),
    ("google/flan\\u000aoption.x=1", "backslash"),
    ("./flan-t5", "--model DIR"),
    ("s3://Bad_Bucket/x", "bucket name"),
    (" google/flan-t5-xl", "spaces"),
])
def test_model_ids_that_would_break_serving_properties_are_refused(model_id, needle, tmp_path):
    with pytest.raises(UsageError, match=needle):
        build_model_tarball(tmp_path / "x.tar.gz", PackageSettings(model_id=model_id))
    assert not (tmp_path / "x.tar.gz").exists()


def test_cli_refuses_an_injected_line_in_one_line(tmp_path):
    out = tmp_path / "evil.tar.gz"
    res = CliRunner().invoke(cli, ["package", "--model-id", "x\noption.entryPoint=/etc/evil.py", "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and "line break" in res.output
    assert not out.exists()


def test_requirements_apply_only_to_the_cpu_image_python(tmp_path):
    """DJL pip-installs requirements.txt at start-up: transformers for the CPU image, nothing in the GPU images."""
    from packaging.requirements import Requirement

    from llmdeploy.lmi import load_lmi_table

    table = load_lmi_table()
    result = build_model_tarball(tmp_path / "r.tar.gz", PackageSettings(model_id="google/flan-t5-small"))
    with tarfile.open(result.path) as tar:
        lines = [ln for ln in tar.extractfile("requirements.txt").read().decode().splitlines()
                 if ln.strip() and not ln.startswith("#")]
    reqs = [Requirement(line) for line in lines]
    assert {r.name for r in reqs} == {"transformers", "tokenizers"}
    applies = lambda py: [str(r.specifier) for r in reqs if r.marker.evaluate({"python_version": py})]  # noqa: E731
    assert applies(table.cpu_image.python) == [f"=={table.tested_transformers}", f"=={table.tested_tokenizers}"]
    for rel in table.versions.values():  # every GPU image: pip skips every line, no network, no downgrade
        assert rel.python != table.cpu_image.python and applies(rel.python) == []


def test_progress_callback_reaches_total(tiny_model_dir, tmp_path):
    seen = []
    build_model_tarball(tmp_path / "p.tar.gz", weights_dir=tiny_model_dir, progress=lambda d, t, n: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_bad_inputs_raise_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        build_model_tarball(tmp_path / "x.tar.gz", weights_dir=tmp_path / "missing")
    with pytest.raises(UsageError):
        build_model_tarball(tmp_path / "x.tar.gz", PackageSettings(dtype="fp8"))
    assert not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize("batching", ["continuous", "static"])
@pytest.mark.parametrize("loader", ["import model", "load by path"])
def test_flat_handler_runs_from_the_extracted_tarball(tiny_model_dir, tmp_path, loader, batching):
    """What DJL does with model.tar.gz, through the engine double (djl_double.py) in a clean process.

    djl_python 0.33 imports the entry point as ``model`` with the model folder on sys.path;
    0.36 loads it by path under a hashed module name with the folder on PYTHONPATH. The model
    folder is not /opt/ml/model here, so the absolute model_id is found under the folder.
    """
    result = build_model_tarball(tmp_path / "m.tar.gz", PackageSettings(max_new_tokens=8, batching=batching),
                                 weights_dir=tiny_model_dir)
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(result.path) as tar:
        # The "data" filter (safe extraction) exists from Python 3.11.4; older 3.11s extract as before.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(model_dir, **safe)
    fake_djl = tmp_path / "fake" / "djl_python"
    fake_djl.mkdir(parents=True)
    (fake_djl / "__init__.py").write_text("from .double import Input, Output\n")
    (fake_djl / "double.py").write_text((Path(__file__).parent / "djl_double.py").read_text())
    script = f"""
import hashlib, importlib, importlib.util, json, sys
sys.path.insert(0, {str(tmp_path / 'fake')!r}); sys.path.append({str(model_dir)!r})
if {loader!r} == "import model":
    module = importlib.import_module("model")
else:
    path = {str(model_dir / 'model.py')!r}
    name = "model_" + hashlib.md5(path.encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec); sys.modules[name] = module; spec.loader.exec_module(module)
from djl_python.double import Djl, HttpRequest, PythonEngine
djl = Djl(PythonEngine(module, {str(model_dir)!r}))
init = djl.initialize(open({str(model_dir / 'serving.properties')!r}).read())
batch = djl.predict([HttpRequest.json({{"inputs": "w1 w2", "parameters": {{"max_new_tokens": 3}}}}),
                     HttpRequest.json({{"inputs": 1}})])
(lone,) = djl.predict([HttpRequest.json({{"inputs": 1}})])
print(json.dumps({{"init": init.code, "batch": [[a.status, a.headers, a.json()] for a in batch],
                  "lone": [lone.status, lone.json()]}}))
assert not any(m.startswith("llmdeploy") for m in sys.modules), [m for m in sys.modules if m.startswith("llmdeploy")]
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["init"] == 204
    (good_status, good_headers, good), (bad_status, _, bad) = out["batch"]
    # Rolling batch: every request gets its own status, even inside a batch. Static batches: DJL gives every request
    # of a batch the batch's code (PyPredictor.batchPredict, 0.33 and 0.36), so the bad one's 400 is in its body only.
    want_bad_status = 400 if batching == "continuous" else 200
    assert (good_status, bad_status) == (200, want_bad_status) and good_headers == {"Content-Type": "application/json"}
    assert set(good) == {"generated_text"} and bad["code"] == 400
    assert out["lone"][0] == 400 and out["lone"][1]["code"] == 400


def test_cli_package_prints_sha256(tiny_model_dir, tmp_path):
    out = tmp_path / "cli.tar.gz"
    res = CliRunner().invoke(cli, ["package", "--model", str(tiny_model_dir), "--out", str(out), "--max-batch-size", "4"])
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


def test_out_that_is_a_fifo_or_device_is_refused_and_left_alone(tmp_path):
    fifo = tmp_path / "model.tar.gz"
    os.mkfifo(fifo)
    for out in (fifo, Path("/dev/null")):
        res = CliRunner().invoke(cli, ["package", "--model-id", "google/flan-t5-small", "--out", str(out)])
        assert res.exit_code == 2 and "only replaces regular files" in res.output and "Traceback" not in res.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz"]  # no temp file either


def test_sigterm_during_package_removes_its_temp_file(tmp_path):
    """The real entry point in a subprocess: SIGTERM mid-write exits like Ctrl-C, leaving no temp file."""
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "config.json").write_text('{"model_type": "t5"}')
    with open(weights / "model.safetensors", "wb") as fh:  # 3 GiB, sparse: gzip takes seconds to get through it
        fh.truncate(3 << 30)
    out = tmp_path / "out" / "model.tar.gz"
    proc = subprocess.Popen([sys.executable, "-m", "llmdeploy.cli.main", "package", "--model", str(weights),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.parent.glob(".model.tar.gz.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert list(out.parent.iterdir()) == [] and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="the ctranslate2 extra is not installed")
def test_ctranslate2_archive_carries_the_converted_model_and_what_the_container_installs(tiny_model_dir, tmp_path):
    from llmdeploy.lmi import load_lmi_table

    result = build_model_tarball(tmp_path / "ct2.tar.gz", PackageSettings(backend="ctranslate2", max_batch_size=16),
                                 weights_dir=tiny_model_dir)
    assert {"ct2/model.bin", "ct2/config.json"} <= set(result.members) and "weights/config.json" in result.members
    with tarfile.open(result.path) as tar:
        props = _properties(tar.extractfile("serving.properties").read().decode())
        reqs = tar.extractfile("requirements.txt").read().decode()
    assert props["option.backend"] == "ctranslate2" and props["option.ct2_dir"] == "/opt/ml/model/ct2"
    assert props["option.rolling_batch"] == "disable" and props["batch_size"] == "16"
    table = load_lmi_table()
    from packaging.requirements import Requirement

    lines = [Requirement(line) for line in reqs.splitlines() if line and not line.startswith("#")]
    for python in {table.cpu_image.python} | {r.python for r in table.versions.values()}:  # every image gets it
        names = {r.name: str(r.specifier) for r in lines if r.marker is None or r.marker.evaluate({"python_version": python})}
        assert names["ctranslate2"] == f"=={table.ctranslate2.version}"
        assert ("nvidia-cublas-cu12" in names) == (python != table.cpu_image.python)  # cuBLAS 12 for the GPU images
