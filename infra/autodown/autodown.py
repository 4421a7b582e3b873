#!/usr/bin/env python3
"""llmdeploy autodown: power off this fine-tune instance when it is past its
expiry or its GPUs have been idle too long. Run every minute by
llmdeploy-autodown.timer. Python standard library only.

The instance is launched with instance-initiated shutdown behaviour
"terminate", so `shutdown -h now` terminates it (and stops the bill).

Configuration (environment, normally from /etc/llmdeploy/autodown.env):
  LLMDEPLOY_EXPIRES_AT         UTC expiry, e.g. 2026-11-22T18:00:00Z (empty: none)
  LLMDEPLOY_IDLE_MINUTES       shut down after this many idle minutes (0/empty: never)
  LLMDEPLOY_IDLE_THRESHOLD     GPU utilisation percent below which a GPU is idle (default 5)
  LLMDEPLOY_AUTODOWN_STATE     file holding the "idle since" time
  LLMDEPLOY_AUTODOWN_SHUTDOWN  command that powers off (default: shutdown -h now)
  LLMDEPLOY_AUTODOWN_DRY_RUN   1: print the decision, never run the command
  LLMDEPLOY_AUTODOWN_NOW       fake clock for tests (ISO 8601 with zone)
  LLMDEPLOY_AUTODOWN_IMDS      1 (default): the instance's own "expires-at" tag, read
                               through IMDSv2 instance-metadata tags, overrides
                               LLMDEPLOY_EXPIRES_AT, so re-tagging extends or ends
                               the cluster; 0: use the config only
  LLMDEPLOY_AUTODOWN_IMDS_URL  metadata service address (tests point it elsewhere)
Exit status: 0 after a decision (shutdown or wait), 1 when the shutdown
command failed, 2 on bad configuration.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/etc/llmdeploy/autodown.env"
DEFAULT_STATE = "/var/lib/llmdeploy/idle-since"
DEFAULT_SHUTDOWN = "shutdown -h now"
DEFAULT_THRESHOLD = 5.0
DEFAULT_IMDS = "http://169.254.169.254"
EXPIRES_TAG = "expires-at"
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

SHUTDOWN = "shutdown"
WAIT = "wait"


def parse_time(value):
    """A tz-aware UTC datetime from ISO 8601 (``Z`` allowed), or None for empty/invalid."""
    if not value or not str(value).strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.timezone.utc)


def fmt(when):
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(now, expires_at, idle_since, gpu_utils, idle_minutes, threshold):
    """What to do this minute. Pure: no clock, no files, no processes.

    now          -- current UTC time
    expires_at   -- UTC expiry or None (no deadline)
    idle_since   -- when the GPUs were first seen idle in the current idle stretch, or None
    gpu_utils    -- utilisation of each GPU in percent; None when nvidia-smi failed
    idle_minutes -- idle time that triggers shutdown; 0/None disables the idle rule
    threshold    -- a GPU below this utilisation (percent) is idle

    Returns (action, new_idle_since, reason); action is "shutdown" or "wait".
    An unknown utilisation (None or no GPUs listed) never counts as idle: the
    idle clock restarts and only the expiry can shut the instance down.
    """
    if expires_at is not None and now >= expires_at:
        return SHUTDOWN, idle_since, f"expired: expires-at {fmt(expires_at)} has passed (now {fmt(now)})"
    if gpu_utils is None or len(gpu_utils) == 0:
        why = "nvidia-smi failed" if gpu_utils is None else "nvidia-smi listed no GPUs"
        return WAIT, None, f"GPU utilisation unknown ({why}); not counted as idle"
    busiest = max(gpu_utils)
    if busiest >= threshold:
        return WAIT, None, f"GPUs busy (max {busiest:.0f}% >= {threshold:.0f}%)"
    since = idle_since if idle_since is not None and idle_since <= now else now
    if not idle_minutes:
        return WAIT, since, f"GPUs idle (max {busiest:.0f}% < {threshold:.0f}%) but the idle rule is off"
    idle_for = now - since
    limit = dt.timedelta(minutes=idle_minutes)
    if idle_for >= limit:
        return SHUTDOWN, since, (f"idle: GPUs below {threshold:.0f}% since {fmt(since)} "
                                 f"({int(idle_for.total_seconds() // 60)} min >= {int(idle_minutes)} min)")
    return WAIT, since, (f"GPUs idle (max {busiest:.0f}% < {threshold:.0f}%) for "
                         f"{int(idle_for.total_seconds() // 60)} of {int(idle_minutes)} min")


def read_gpu_utils(timeout=20):
    """(list of utilisation percents, None) or (None, why it failed)."""
    try:
        proc = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None, "nvidia-smi not found on PATH"
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi timed out after {int(timeout)}s"
    except OSError as exc:
        return None, f"nvidia-smi could not run: {exc}"
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"nvidia-smi exited {proc.returncode}: {detail[-1] if detail else 'no output'}"
    utils = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            utils.append(float(line))
        except ValueError:
            return None, f"nvidia-smi printed {line!r}, not a number"
    return utils, None


def imds_tag(key, base=DEFAULT_IMDS, timeout=2.0):
    """(value, None) of this instance's tag ``key`` via IMDSv2, or (None, why not)."""
    try:
        token_req = urllib.request.Request(
            base + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        with urllib.request.urlopen(token_req, timeout=timeout) as resp:
            token = resp.read().decode().strip()
        tag_req = urllib.request.Request(
            base + "/latest/meta-data/tags/instance/" + key, headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(tag_req, timeout=timeout) as resp:
            return resp.read().decode().strip(), None
    except urllib.error.HTTPError as exc:
        return None, f"instance tag {key} not readable from IMDS (HTTP {exc.code})"
    except (OSError, ValueError) as exc:
        return None, f"IMDS not reachable: {exc}"


def read_env_file(path):
    """KEY=VALUE lines (# comments, optional quotes) as a dict; {} when the file is missing."""
    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                out[key.strip()] = value.strip().strip("'\"")
    except FileNotFoundError:
        pass
    return out


def read_state(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_time(fh.read())
    except (FileNotFoundError, OSError):
        return None


def write_state(path, idle_since):
    """Write (or clear) the idle-since file atomically."""
    if idle_since is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".idle-since.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(fmt(idle_since) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def setting(name, config, default=None):
    value = os.environ.get(name)
    if value is None:
        value = config.get(name, default)
    return value


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config_path = argv[0] if argv else os.environ.get("LLMDEPLOY_AUTODOWN_CONFIG", DEFAULT_CONFIG)
    config = read_env_file(config_path)

    raw_expiry = setting("LLMDEPLOY_EXPIRES_AT", config, "")
    expires_at = parse_time(raw_expiry)
    if raw_expiry and expires_at is None:
        print(f"autodown: bad LLMDEPLOY_EXPIRES_AT {raw_expiry!r} (want e.g. 2026-11-22T18:00:00Z)", file=sys.stderr)
        return 2
    try:
        idle_minutes = int(setting("LLMDEPLOY_IDLE_MINUTES", config, "0") or 0)
        threshold = float(setting("LLMDEPLOY_IDLE_THRESHOLD", config, str(DEFAULT_THRESHOLD)) or DEFAULT_THRESHOLD)
    except ValueError as exc:
        print(f"autodown: bad idle setting: {exc}", file=sys.stderr)
        return 2
    if setting("LLMDEPLOY_AUTODOWN_IMDS", config, "1") not in ("0", "false", "no"):
        tag, why = imds_tag(EXPIRES_TAG, setting("LLMDEPLOY_AUTODOWN_IMDS_URL", config, DEFAULT_IMDS))
        tagged = parse_time(tag)
        if tagged is not None:
            if expires_at is None or tagged != expires_at:
                print(f"autodown: using the instance's expires-at tag {fmt(tagged)} (config says {raw_expiry or 'none'})")
            expires_at = tagged
        elif tag is not None:
            print(f"autodown: ignoring unparseable expires-at tag {tag!r}; using the config")
        else:
            print(f"autodown: {why}; using the config")
    fake_now = os.environ.get("LLMDEPLOY_AUTODOWN_NOW")
    now = parse_time(fake_now) if fake_now else dt.datetime.now(dt.timezone.utc)
    if now is None:
        print(f"autodown: bad LLMDEPLOY_AUTODOWN_NOW {fake_now!r}", file=sys.stderr)
        return 2
    state_path = setting("LLMDEPLOY_AUTODOWN_STATE", config, DEFAULT_STATE)

    utils, failure = read_gpu_utils()
    if failure:
        print(f"autodown: {failure}")
    idle_since = read_state(state_path)
    action, new_idle_since, reason = decide(now, expires_at, idle_since, utils, idle_minutes, threshold)
    write_state(state_path, new_idle_since)
    print(f"autodown: {action}: {reason}")
    sys.stdout.flush()
    if action != SHUTDOWN:
        return 0
    if setting("LLMDEPLOY_AUTODOWN_DRY_RUN", config, "0") in ("1", "true", "yes"):
        print("autodown: dry run, not shutting down")
        return 0
    command = shlex.split(setting("LLMDEPLOY_AUTODOWN_SHUTDOWN", config, DEFAULT_SHUTDOWN))
    try:
        proc = subprocess.run(command, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"autodown: shutdown command {' '.join(command)!r} failed: {exc}", file=sys.stderr)
        return 1
    if proc.returncode != 0:
        print(f"autodown: shutdown command {' '.join(command)!r} exited {proc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
