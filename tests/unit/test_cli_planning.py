"""`llmdeploy estimate`, `plan` and `instances` through click's CliRunner: output, JSON keys, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from llmdeploy import catalog as c
from llmdeploy.cli.main import cli


def run(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_bare_plan_and_estimate_work_on_defaults():
    out = run("plan", "--mode", "reserved").output
    # The handler loads safetensors and moves them to the GPU: one copy of XL's 10.6 GiB fits g4dn.xlarge's 16 GiB.
    assert "flan-t5-xl" in out and "reserved (1-year RI)" in out and "g4dn.xlarge" in out
    assert "Cheapest option by traffic" in out and "Speed on T4: roofline" in out
    assert "flan-t5-xl" in run("estimate").output


def test_estimate_json_keys_and_values():
    data = json.loads(run("estimate", "flan-t5-xl", "--json").output)
    assert data["parameters"] == 2_849_757_184
    assert data["weights_bytes"] == 4 * 2_849_757_184
    assert data["inference_bytes"] > data["weights_bytes"]
    by_type = {f["instance_type"]: f for f in data["fits"]}
    assert data["loading"] == "safetensors" and by_type["g4dn.xlarge"]["fits"] and by_type["g4dn.2xlarge"]["fits"]
    assert by_type["g4dn.xlarge"]["gpu_memory_reported_mib"] == 15360
    assert by_type["g4dn.xlarge"]["gpu_usable_bytes"] == int(15360 * 1024**2 * 0.95)
    # A .bin checkpoint read whole holds two copies: then g4dn.xlarge's RAM is too small.
    in_memory = {f["instance_type"]: f for f in json.loads(run("estimate", "flan-t5-xl", "--loading", "in-memory", "--json").output)["fits"]}
    assert not in_memory["g4dn.xlarge"]["fits"] and "host RAM" in in_memory["g4dn.xlarge"]["reason"]
    assert {f["precision"] for f in data["finetune"]} == {"fp32", "bf16-mixed"}
    assert all(f["p4d_instances"] >= 1 for f in data["finetune"])
    assert data["latency"] and all(row["total_s"] > 0 for row in data["latency"])


def test_plan_json_has_the_documented_keys():
    data = json.loads(run("plan", "--mode", "reserved", "--json").output)
    for key in ("options", "choice", "recommended"):
        assert key in data
    for option in data["options"]:
        for key in ("mode", "instance_type", "instance_count", "monthly_usd", "feasible", "reason"):
            assert key in option, key
    assert data["choice"]["mode"] == "reserved" and data["choice"]["term"] == "1y"
    assert {o["mode"] for o in data["options"]} == {"reserved", "realtime", "async", "serverless"}
    assert data["catalog"]["date"] == c.load_catalog().oldest_price_date("us-east-1").isoformat(), "the oldest price in use"
    assert {"device", "origin", "name", "source", "date"} <= set(data["calibrations"][0])
    assert data["choice"]["speed_model"] in {f"{k['device']} {k['origin']}" for k in data["calibrations"]}
    assert data["cheapest_by_traffic"]["intervals"] and {b["managed"] for b in data["break_even"]} == {"realtime", "async", "serverless"}


def test_plan_writes_a_stack_config_only_with_stack(tmp_path):
    run("plan", "--mode", "reserved", "--project-dir", str(tmp_path))
    assert not list(tmp_path.iterdir()), "plan without --stack writes nothing"
    data = json.loads(run("plan", "--mode", "async", "--stack", "dev", "--project-dir", str(tmp_path), "--json").output)
    path = tmp_path / "Pulumi.dev.yaml"
    assert data["stack_file"] == str(path)
    config = yaml.safe_load(path.read_text())["config"]
    assert config["llmdeploy:mode"] == "async"
    assert config["llmdeploy:instanceType"] == data["choice"]["instance_type"]
    assert config["llmdeploy:instanceCount"] == data["choice"]["instance_count"]
    assert config["aws:region"] == "us-east-1"
    assert path.read_text().startswith("# Written by `llmdeploy plan`")


def test_plan_markdown_is_a_table():
    out = run("plan", "--markdown").output
    assert "| option | instance |" in out and "**Recommended:**" in out


def test_instances_lists_prices_from_the_catalog():
    cat = c.load_catalog()
    out = run("instances", "--region", "us-east-1").output
    price = c.ec2_price(cat, "us-east-1", "g4dn.2xlarge")
    assert "g4dn.2xlarge" in out and f"{price.on_demand:.3f}" in out
    data = json.loads(run("instances", "--json", "--family", "p4d").output)
    assert [row["instance_type"] for row in data] == ["p4d.24xlarge"]
    assert data[0]["gpu_count"] == 8 and data[0]["source_date"]
    # Each price names its own source: the EC2 row's and the SageMaker row's, with dates and whether estimated.
    row = data[0]
    assert (row["sagemaker_hourly"], row["sagemaker_source_key"], row["sagemaker_source_date"], row["sagemaker_estimated"]) == (
        25.25, "sagemaker-hosting-p4d-p5-2026-06", "2026-06-18", False)
    assert row["source_key"] == "vantage-ec2-ri3y" and row["estimated"] is False
    every = json.loads(run("instances", "--json", "--region", "us-west-2").output)
    assert all({"source", "source_key", "source_date", "estimated", "sagemaker_estimated"} <= set(r) for r in every)
    assert all(r["sagemaker_estimated"] for r in every if r["sagemaker_hourly"] is not None), "us-west-2 hosting rows are derived"
    assert "* estimated, not published" in run("instances", "--region", "us-west-2").output


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["estimate", "flan-t5-xll"], 2, "Did you mean 'flan-t5-xl'"),
        (["plan", "--model", "flan-t5-xll"], 2, "Did you mean 'flan-t5-xl'"),
        (["plan", "--region", "us-esat-1"], 2, "Did you mean 'us-east-1'"),
        (["plan", "--mode", "no-such-mode"], 2, "'no-such-mode' is not one of"),
        (["plan", "--dtype", "fp8"], 2, "'fp8' is not one of"),
        (["plan", "--requests-per-day", "0"], 2, "--requests-per-day must be greater than 0, got 0"),
        (["plan", "--requests-per-day", "-3"], 2, "got -3"),
        (["plan", "--peak-rps", "0"], 2, "--peak-rps must be greater than 0"),
        (["plan", "--output-tokens", "0"], 2, "must be at least 1"),
        (["plan", "--mode", "serverless"], 1, "mode 'serverless' cannot host flan-t5-xl"),
        (["plan", "--stack", "bad name!"], 2, "stack name 'bad name!' is not valid"),
        (["instances", "--region", "mars-1"], 2, "unknown region 'mars-1'"),
        (["estimate", "--dtype", "fp8"], 2, "'fp8' is not one of"),
        (["plna"], 2, "Did you mean 'plan'"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_status(args, code, needle):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output


def test_bad_config_files(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(cli, ["estimate", str(bad)])
    assert result.exit_code == 2 and "must be a JSON object" in result.output
    bad.write_text('{"model_type": "whisper"}')
    result = CliRunner().invoke(cli, ["plan", "--model", str(bad)])
    assert result.exit_code == 2 and "(whisper) lacks the field 'hidden_size' (or d_model" in result.output, result.output
    bad.write_text('{"model_type": "whisperish", "d_model": 8, "num_heads": 2, "num_layers": 1, "vocab_size": 10}')
    result = CliRunner().invoke(cli, ["plan", "--model", str(bad)])
    assert result.exit_code == 2 and "model_type 'whisperish'" in result.output and "closed forms exist for" in result.output


def test_planning_imports_no_heavy_module():
    """plan and estimate must stay instant: no torch, transformers, huggingface_hub, pulumi, boto3 or sagemaker import."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from llmdeploy.cli.main import cli\n"
        "for args in (['plan', '--mode', 'reserved', '--json'], ['estimate', '--json'], ['instances'], ['--help']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'transformers', 'pulumi', 'pulumi_aws', 'boto3', 'botocore', 'sagemaker', 'matplotlib', 'aiohttp',"
        " 'huggingface_hub', 'httpx2'})\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    """Commands whose extra is not installed say which extra to install, in one line, exit 1."""
    import builtins

    real_import = builtins.__import__

    def no_boto(name, *args, **kwargs):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto)
    for args in (["reap"], ["prices", "refresh"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "pip install 'llmdeploy[infra]'" in result.output and "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_estimate_in_bf16_rules_out_gpus_without_bf16():
    data = json.loads(run("estimate", "flan-t5-xl", "--dtype", "bf16", "--json").output)
    by_type = {f["instance_type"]: f for f in data["fits"]}
    assert not by_type["g4dn.2xlarge"]["fits"] and "T4 has no bf16" in by_type["g4dn.2xlarge"]["reason"]
    assert by_type["g5.2xlarge"]["fits"], "an A10G has bf16"
    assert "T4" not in {row["gpu"] for row in data["latency"]}


def test_plan_can_be_restricted_to_instance_types():
    data = json.loads(run("plan", "--mode", "reserved", "--instance-type", "g5.2xlarge", "--instance-type", "ml.g6.2xlarge",
                          "--json").output)
    assert data["instance_types"] == ["g5.2xlarge", "g6.2xlarge"]
    used = {o["instance_type"].removeprefix("ml.") for o in data["options"] if o["instance_type"]}
    assert used <= {"g5.2xlarge", "g6.2xlarge"} and used
    result = CliRunner().invoke(cli, ["plan", "--instance-type", "g4dn.2xlarg"])
    assert result.exit_code == 2 and "Did you mean 'g4dn.2xlarge'" in result.output
    result = CliRunner().invoke(cli, ["plan", "--instance-type", "c5.xlarge"])
    assert result.exit_code == 2 and "has no GPU" in result.output
    # Only a type that cannot load XL in fp32 from a .bin state dict (two copies): the mode says why, exit 1.
    result = CliRunner().invoke(cli, ["plan", "--mode", "reserved", "--instance-type", "g4dn.xlarge", "--loading", "in-memory"])
    assert result.exit_code == 1 and "host RAM" in result.output
