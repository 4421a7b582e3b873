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


def test_profile_decode_dry_run_on_cpu(tiny_model_dir, tmp_path, capsys):
    """tools/profile_decode.py measures the loop against generate and profiles both (on the CPU here)."""
    spec = importlib.util.spec_from_file_location("profile_decode", ROOT / "tools" / "profile_decode.py")
    profile_decode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_decode)
    out = tmp_path / "profile.json"
    assert profile_decode.main([str(tiny_model_dir), "--device", "cpu", "--batches", "1", "3", "--steps", "3",
                                "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 3] and all(r["loop_step_ms"] > 0 for r in result["rows"])
    assert result["loop"]["python_ops"] > 10 and result["loop"]["top_cpu"] and result["generate"]["top_cpu"]
    assert [r["batch"] for r in result["math_attention"]] == [1, 3]
    assert "loop/generate" in capsys.readouterr().out
    import torch

    from llmdeploy.handlers.decode import _attention

    q, k, v, bias = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 1, 5)
    assert torch.allclose(profile_decode._math_attention(q, k, v, bias), _attention(q, k, v, bias), atol=1e-5)
