"""The Hub stand-in on 127.0.0.1 (one per test) and a runner for the real CLI in a child process.

huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE once, at import, so each
command runs as its own process with exactly the environment a user would have set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .standin import HubStandIn

# Runs the CLI with some top-level packages made unimportable, as on an install without that extra.
_BOOT = """
import sys
blocked = {name for name in sys.argv[1].split(",") if name}

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from llmdeploy.cli.main import main
main(sys.argv[2:])
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def hub():
    server = HubStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def cli(hub, tmp_path):
    """``cli(*args, token=None, offline=False, endpoint=None, blocked=())``: the real CLI against the stand-in."""

    def run(*args, token: str | None = None, offline: bool = False, endpoint: str | None = None,
            blocked: tuple[str, ...] = (), cwd: Path | None = None) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "LLMDEPLOY_", "TRANSFORMERS_"))}
        env.update(
            HF_ENDPOINT=endpoint or hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
            LLMDEPLOY_CACHE_DIR=str(tmp_path / "llmdeploy-cache"), XDG_CONFIG_HOME=str(tmp_path / "config"),
            NO_PROXY="127.0.0.1,localhost",
        )
        if token:
            env["HF_TOKEN"] = token
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        proc = subprocess.run([sys.executable, "-c", _BOOT, ",".join(blocked), *args], env=env, capture_output=True,
                              text=True, timeout=180, cwd=cwd or tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
