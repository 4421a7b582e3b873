"""A real moto server for the AWS tests: one process per session, reset before each test.

The server runs as a child process on 127.0.0.1 (``moto_plus.py``: ``python -m moto.server`` plus the
percentile statistics and Cost Explorer tag calls moto lacks, see that file);
llmdeploy's clients reach it through ``LLMDEPLOY_AWS_ENDPOINT_URL``. It is
stopped by its PID at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fakecat  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto_server() -> tuple[subprocess.Popen, str]:
    """Start the moto server (``moto_plus.py``) on a free port and wait until it answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_plus.py")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not answer within 60 s") from None
            time.sleep(0.1)
    return proc, url


def stop_moto_server(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def reset_moto(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b""), timeout=10).read()


@pytest.fixture(scope="session")
def moto_server():
    proc, url = start_moto_server()
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV, LLMDEPLOY_AWS_ENDPOINT_URL=url)
    saved["LLMDEPLOY_AWS_ENDPOINT_URL"] = os.environ.get("LLMDEPLOY_AWS_ENDPOINT_URL")
    try:
        yield url
    finally:
        stop_moto_server(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep retries short in tests: 3 attempts, standard mode.
    "LLMDEPLOY_AWS_MAX_ATTEMPTS": "3",
    "LLMDEPLOY_AWS_RETRY_MODE": "standard",
}


@pytest.fixture
def aws(moto_server, monkeypatch, tmp_path):
    """A clean moto state, the test catalog, an empty Pulumi file backend, fresh llmdeploy clients."""
    from llmdeploy.aws import clients
    from llmdeploy.catalog import load_catalog

    reset_moto(moto_server)
    monkeypatch.setenv("LLMDEPLOY_AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'pulumi-state'}")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("LLMDEPLOY_REGION", raising=False)
    cat = fakecat.install(monkeypatch, tmp_path)
    clients.reset()
    yield cat
    clients.reset()
    load_catalog.cache_clear()


@pytest.fixture
def boto(moto_server):
    """Plain boto3 clients (test setup/inspection), bypassing llmdeploy."""
    import boto3

    def make(service: str, region: str = "us-east-1"):
        return boto3.client(service, region_name=region, endpoint_url=moto_server)

    return make
