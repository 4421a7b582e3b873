"""The on-instance autodown: the pure decision, the script end to end, the user data."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

AUTODOWN_DIR = Path(__file__).parents[2] / "infra" / "autodown"
SCRIPT = AUTODOWN_DIR / "autodown.py"

_spec = importlib.util.spec_from_file_location("autodown_script", SCRIPT)
autodown = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(autodown)

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)
EXPIRES = T0 + dt.timedelta(hours=6)


def test_expired_shuts_down_even_when_busy():
    action, _, reason = autodown.decide(EXPIRES, EXPIRES, None, [99.0] * 8, 30, 5.0)
    assert action == "shutdown" and "expired" in reason


def test_busy_gpus_wait_and_reset_idle_clock():
    action, since, reason = autodown.decide(T0, EXPIRES, T0 - 20 * MIN, [0.0, 87.0], 30, 5.0)
    assert (action, since) == ("wait", None) and "busy" in reason


def test_idle_clock_starts_then_fires_after_idle_minutes():
    now, since = T0, None
    for minute in range(30):
        now = T0 + minute * MIN
        action, since, reason = autodown.decide(now, EXPIRES, since, [0.0, 1.0], 30, 5.0)
        assert action == "wait", f"minute {minute}: {reason}"
        assert since == T0
    action, since, reason = autodown.decide(T0 + 30 * MIN, EXPIRES, since, [0.0, 1.0], 30, 5.0)
    assert action == "shutdown" and "idle" in reason and "30 min" in reason


def test_one_busy_minute_restarts_the_idle_stretch():
    _, since, _ = autodown.decide(T0 + 29 * MIN, EXPIRES, T0, [50.0], 30, 5.0)
    assert since is None
    action, since, _ = autodown.decide(T0 + 31 * MIN, EXPIRES, since, [0.0], 30, 5.0)
    assert action == "wait" and since == T0 + 31 * MIN


def test_nvidia_smi_failure_never_counts_as_idle():
    action, since, reason = autodown.decide(T0 + 60 * MIN, EXPIRES, T0, None, 30, 5.0)
    assert action == "wait" and since is None
    assert "nvidia-smi failed" in reason and "not counted as idle" in reason
    action, _, reason = autodown.decide(T0 + 60 * MIN, EXPIRES, T0, [], 30, 5.0)
    assert action == "wait" and "no GPUs" in reason


def test_nvidia_smi_failure_still_honours_expiry():
    action, _, _ = autodown.decide(EXPIRES + MIN, EXPIRES, None, None, 30, 5.0)
    assert action == "shutdown"


def test_idle_rule_off_and_no_expiry_waits_forever():
    action, _, reason = autodown.decide(T0 + 1000 * MIN, None, T0, [0.0], 0, 5.0)
    assert action == "wait" and "off" in reason


def test_threshold_is_strict_below():
    action, since, _ = autodown.decide(T0, EXPIRES, None, [5.0], 30, 5.0)
    assert since is None, "a GPU exactly at the threshold is busy"


def test_future_idle_since_is_not_trusted():
    _, since, _ = autodown.decide(T0, EXPIRES, T0 + 60 * MIN, [0.0], 30, 5.0)
    assert since == T0


# -- the script as a subprocess, with a fake nvidia-smi and a fake shutdown -------------------------


@pytest.fixture
def node(tmp_path):
    """A fake node: bin/ with nvidia-smi printing $FAKE_GPU_UTILS, a shutdown that writes a marker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ -n "$FAKE_SMI_FAIL" ]; then echo "NVIDIA-SMI has failed because it could not communicate with the driver" >&2; exit 9; fi\n'
        'for u in $FAKE_GPU_UTILS; do echo "$u"; done\n'
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    marker = tmp_path / "powered-off"
    config = tmp_path / "autodown.env"
    config.write_text(
        f"LLMDEPLOY_EXPIRES_AT={EXPIRES.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
        "LLMDEPLOY_IDLE_MINUTES=30\n"
        "LLMDEPLOY_IDLE_THRESHOLD=5\n"
        f"LLMDEPLOY_AUTODOWN_STATE={tmp_path / 'state' / 'idle-since'}\n"
        f"LLMDEPLOY_AUTODOWN_SHUTDOWN=touch {marker}\n"
    )

    def run(now: dt.datetime, utils: str = "0\n0", *, fail: bool = False, extra: dict | None = None):
        env = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "FAKE_GPU_UTILS": utils,
            "LLMDEPLOY_AUTODOWN_NOW": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "LLMDEPLOY_AUTODOWN_IMDS": "0",
            **({"FAKE_SMI_FAIL": "1"} if fail else {}),
            **(extra or {}),
        }
        return subprocess.run([sys.executable, str(SCRIPT), str(config)], env=env, capture_output=True, text=True, timeout=30)

    run.marker = marker
    run.state = tmp_path / "state" / "idle-since"
    run.config = config
    return run


def test_script_idle_then_shutdown(node):
    first = node(T0)
    assert first.returncode == 0, first.stderr
    assert "wait" in first.stdout and not node.marker.exists()
    assert node.state.read_text().strip() == "2026-11-22T12:00:00Z", "idle-since must persist between runs"
    middle = node(T0 + 29 * MIN)
    assert "wait" in middle.stdout and not node.marker.exists()
    last = node(T0 + 30 * MIN)
    assert last.returncode == 0, last.stderr
    assert "shutdown" in last.stdout and "idle" in last.stdout
    assert node.marker.exists(), "the shutdown command must run once idle for idle_minutes"


def test_script_busy_clears_state(node):
    node(T0)
    assert node.state.exists()
    out = node(T0 + 10 * MIN, "0\n93")
    assert "busy" in out.stdout and not node.state.exists()


def test_script_expiry(node):
    out = node(EXPIRES, "100\n100")
    assert "expired" in out.stdout and node.marker.exists()


def test_script_nvidia_smi_failure_is_logged_and_not_idle(node):
    node(T0)
    out = node(T0 + 45 * MIN, fail=True)
    assert out.returncode == 0
    assert "nvidia-smi exited 9" in out.stdout and "could not communicate" in out.stdout
    assert "not counted as idle" in out.stdout
    assert not node.marker.exists() and not node.state.exists()


def test_script_without_nvidia_smi_on_path(node, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LLMDEPLOY_AUTODOWN_NOW": "2026-11-22T12:00:00Z", "LLMDEPLOY_AUTODOWN_IMDS": "0"}
    out = subprocess.run([sys.executable, str(SCRIPT), str(node.config)], env=env, capture_output=True, text=True, timeout=30)
    if Path("/usr/bin/nvidia-smi").exists() or Path("/bin/nvidia-smi").exists():
        pytest.skip("this machine has a real nvidia-smi")
    assert out.returncode == 0 and "nvidia-smi not found" in out.stdout


def test_script_dry_run_never_powers_off(node):
    out = node(EXPIRES, extra={"LLMDEPLOY_AUTODOWN_DRY_RUN": "1"})
    assert "dry run" in out.stdout and not node.marker.exists()


def test_script_reports_failed_shutdown(node):
    out = node(EXPIRES, extra={"LLMDEPLOY_AUTODOWN_SHUTDOWN": "false"})
    assert out.returncode == 1 and "exited 1" in out.stderr


def test_script_bad_config_exits_2(node):
    out = node(T0, extra={"LLMDEPLOY_EXPIRES_AT": "next tuesday"})
    assert out.returncode == 2 and "next tuesday" in out.stderr


@pytest.fixture
def imds():
    """A fake IMDSv2 on 127.0.0.1 serving this instance's tags (``imds.tags``); None tags = tags off (404)."""
    import http.server
    import threading

    state = {"tags": {}, "tokens": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_PUT(self):
            if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                state["tokens"] += 1
                self._reply(200, "tok-123")
            else:
                self._reply(400, "bad")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
                return self._reply(401, "IMDSv2 token required")
            prefix = "/latest/meta-data/tags/instance/"
            key = self.path[len(prefix):] if self.path.startswith(prefix) else None
            if key is None or state["tags"] is None or key not in state["tags"]:
                return self._reply(404, "not found")
            self._reply(200, state["tags"][key])

        def _reply(self, code, body):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_script_live_tag_extends_the_deadline(node, imds):
    imds["tags"] = {"expires-at": "2026-11-23T00:00:00Z"}
    out = node(EXPIRES + MIN, "90", extra={"LLMDEPLOY_AUTODOWN_IMDS": "1", "LLMDEPLOY_AUTODOWN_IMDS_URL": imds["url"]})
    assert out.returncode == 0, out.stderr
    assert "using the instance's expires-at tag 2026-11-23T00:00:00Z" in out.stdout
    assert "wait" in out.stdout and not node.marker.exists(), "a later expires-at tag extends the cluster"
    assert imds["tokens"] == 1, "IMDSv2: a session token first"


def test_script_live_tag_can_end_it_early(node, imds):
    imds["tags"] = {"expires-at": "2026-11-22T12:30:00Z"}
    out = node(T0 + 31 * MIN, "90", extra={"LLMDEPLOY_AUTODOWN_IMDS": "1", "LLMDEPLOY_AUTODOWN_IMDS_URL": imds["url"]})
    assert "expired" in out.stdout and node.marker.exists()


def test_script_falls_back_to_config_without_tags(node, imds):
    imds["tags"] = None  # instance-metadata tags disabled: 404
    out = node(EXPIRES, "90", extra={"LLMDEPLOY_AUTODOWN_IMDS": "1", "LLMDEPLOY_AUTODOWN_IMDS_URL": imds["url"]})
    assert "HTTP 404" in out.stdout and "using the config" in out.stdout
    assert node.marker.exists(), "the expiry from user data still applies"


def test_script_ignores_garbage_tag(node, imds):
    imds["tags"] = {"expires-at": "never"}
    out = node(EXPIRES, "90", extra={"LLMDEPLOY_AUTODOWN_IMDS": "1", "LLMDEPLOY_AUTODOWN_IMDS_URL": imds["url"]})
    assert "ignoring unparseable expires-at tag 'never'" in out.stdout and node.marker.exists()


def test_script_is_stdlib_only():
    import ast

    tree = ast.parse(SCRIPT.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= set(sys.stdlib_module_names), f"non-stdlib imports: {modules - set(sys.stdlib_module_names)}"


# -- the cloud-init user data ---------------------------------------------------------------------


def test_user_data_installs_script_units_and_expiry():
    from llmdeploy.infra.autodown import render_user_data

    text = render_user_data(expires_at=EXPIRES, idle_minutes=30, threshold=5)
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) < 16 * 1024, "EC2 user data is limited to 16 KiB"
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/opt/llmdeploy/autodown.py"]["content"].rstrip("\n") == SCRIPT.read_text().rstrip("\n"), "the script must be embedded verbatim"
    assert files["/opt/llmdeploy/autodown.py"]["permissions"] == "0755"
    env = files["/etc/llmdeploy/autodown.env"]["content"]
    assert "LLMDEPLOY_EXPIRES_AT=2026-11-22T18:00:00Z" in env
    assert "LLMDEPLOY_IDLE_MINUTES=30" in env
    timer = files["/etc/systemd/system/llmdeploy-autodown.timer"]["content"]
    assert "OnUnitActiveSec=1min" in timer, "the timer must run every minute"
    service = files["/etc/systemd/system/llmdeploy-autodown.service"]["content"]
    assert "ExecStart=/usr/bin/python3 /opt/llmdeploy/autodown.py" in service
    assert ["systemctl", "enable", "--now", "llmdeploy-autodown.timer"] in doc["runcmd"]


def test_user_data_without_idle_limit():
    from llmdeploy.infra.autodown import render_user_data

    doc = yaml.safe_load(render_user_data(expires_at="2026-11-22T18:00:00Z", idle_minutes=None))
    env = {f["path"]: f for f in doc["write_files"]}["/etc/llmdeploy/autodown.env"]["content"]
    assert "LLMDEPLOY_IDLE_MINUTES=0" in env
