"""The GPU-host scripts stay runnable where CI is: tools/cuda_check.py's dry run on the CPU (its GPU-only checks need
a GPU host; tools/device_check.sh runs them there), and device_check.sh's shell is valid."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_check_dry_run_on_cpu(tiny_model_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "tools" / "cuda_check.py")
    cuda_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_check)
    out = tmp_path / "check.json"
    assert cuda_check.main([str(tiny_model_dir), "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert checks["auto dtype"]["ok"] and "fp32" in checks["auto dtype"]["detail"]
    assert checks["iteration-level lengths"]["ok"] and checks["iteration-level equals generate"]["ok"]
    assert "PASS iteration-level lengths" in capsys.readouterr().out


def test_device_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "tools" / "device_check.sh")]).returncode == 0
