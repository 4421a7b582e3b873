"""On-instance autodown: the script and systemd units that fine-tune user data installs.

``render_user_data`` builds the cloud-init document; the files next to this
module are its payload (read as data, so the script stays stdlib-only and
runnable on its own).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

HERE = Path(__file__).parent
SCRIPT = HERE / "autodown.py"
SERVICE = HERE / "llmdeploy-autodown.service"
TIMER = HERE / "llmdeploy-autodown.timer"
MAX_USER_DATA = 16 * 1024  # EC2's limit on user data, bytes


def _block(text: str, indent: int = 6) -> str:
    pad = " " * indent
    return "\n".join((pad + line) if line else "" for line in text.splitlines())


def render_user_data(*, expires_at: dt.datetime | str, idle_minutes: int | None, threshold: float = 5.0) -> str:
    """The ``#cloud-config`` that installs the autodown script, its config and timer, and starts it."""
    from llmdeploy.tags import format_expiry

    expiry = expires_at if isinstance(expires_at, str) else format_expiry(expires_at)
    env = (
        f"LLMDEPLOY_EXPIRES_AT={expiry}\n"
        f"LLMDEPLOY_IDLE_MINUTES={int(idle_minutes or 0)}\n"
        f"LLMDEPLOY_IDLE_THRESHOLD={threshold:g}\n"
        "LLMDEPLOY_AUTODOWN_STATE=/var/lib/llmdeploy/idle-since\n"
    )
    files = [
        ("/opt/llmdeploy/autodown.py", "0755", SCRIPT.read_text()),
        ("/etc/llmdeploy/autodown.env", "0644", env),
        ("/etc/systemd/system/llmdeploy-autodown.service", "0644", SERVICE.read_text()),
        ("/etc/systemd/system/llmdeploy-autodown.timer", "0644", TIMER.read_text()),
    ]
    parts = ["#cloud-config", "# llmdeploy fine-tune node: autodown at expires-at or when GPUs idle", "write_files:"]
    for path, perms, content in files:
        parts += [f"  - path: {path}", "    owner: root:root", f"    permissions: '{perms}'", "    content: |", _block(content)]
    parts += [
        "runcmd:",
        "  - [systemctl, daemon-reload]",
        "  - [systemctl, enable, --now, llmdeploy-autodown.timer]",
        "",
    ]
    out = "\n".join(parts)
    if len(out.encode()) > MAX_USER_DATA:  # pragma: no cover - guarded by a test
        raise ValueError(f"autodown user data is {len(out.encode())} bytes; EC2 allows {MAX_USER_DATA}")
    return out
