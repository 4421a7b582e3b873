"""Benchmark: reaping 200 expired instances and 50 endpoints, concurrent vs one at a time.

Starts its own moto server on 127.0.0.1 (a child process, stopped by PID at
the end), fills it with expired llmdeploy-managed resources, and times
``llmdeploy.aws.reaper`` (scan + delete) at ``--concurrency`` and at 1.

moto answers in well under a millisecond of network time and handles requests
under one GIL, so against a bare moto server concurrency mostly overlaps the
client-side work; real AWS calls take tens of milliseconds each. ``--latency-ms``
adds a fixed delay to every request on the SERVER side (a WSGI wrapper around
moto's app) to model that; it is 0 (honest, no delay) by default and the
output always says which was used.

    python benchmarks/bench_reap.py                     # bare moto
    python benchmarks/bench_reap.py --latency-ms 30     # with 30 ms per API call, like AWS
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

SERVER = r"""
import sys, time
from werkzeug.serving import run_simple
from moto.moto_server.threaded_moto_server import DomainDispatcherApplication, create_backend_app
host, port, latency = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000.0
app = DomainDispatcherApplication(create_backend_app)
def delayed(environ, start_response):
    if latency and not environ.get("PATH_INFO", "").startswith("/moto-api"):
        time.sleep(latency)
    return app(environ, start_response)
run_simple(host, port, delayed, threaded=True, use_reloader=False)
"""

PAST = "2026-11-22T10:00:00Z"
NOW = "2026-11-22T12:00:00Z"
ROLE = "arn:aws:iam::123456789012:role/llmdeploy-bench"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, "127.0.0.1", str(port), str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto server did not start within 60 s") from None
            time.sleep(0.1)


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b""), timeout=30).read()


def populate(url: str, instances: int, endpoints: int) -> None:
    import boto3

    tags = [{"Key": "managed-by", "Value": "llmdeploy"}, {"Key": "expires-at", "Value": PAST}, {"Key": "llmdeploy:stack", "Value": "bench"}]
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
    left = instances
    while left:
        n = min(left, 50)
        ec2.run_instances(ImageId="ami-12c6146b", InstanceType="m5.large", MinCount=n, MaxCount=n,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        left -= n
    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=url)
    for i in range(endpoints):
        name = f"bench-{i:03d}"
        sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE}, Tags=tags)
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-config",
            ProductionVariants=[{"VariantName": "main", "ModelName": f"{name}-model", "InstanceType": "ml.m5.large",
                                 "InitialInstanceCount": 1}],
            Tags=tags,
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=tags)


def timed_reap(concurrency: int) -> tuple[float, float, int, int]:
    """(scan seconds, delete seconds, items found, failures)."""
    from llmdeploy.aws import clients, reaper
    from llmdeploy.finetune import parse_now

    clients.reset()
    now = parse_now(NOW)
    t0 = time.perf_counter()
    found = reaper.scan(["us-east-1"], now=now, cat=None, concurrency=concurrency)
    t1 = time.perf_counter()
    outcomes = reaper.reap(found.expired, now=now, concurrency=concurrency)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(found.expired), sum(not o.ok for o in outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="server-side delay per request (default 0: bare moto)")
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    proc, url = start_server(args.latency_ms)
    os.environ["LLMDEPLOY_AWS_ENDPOINT_URL"] = url
    try:
        results = {}
        for concurrency in (1, args.concurrency):
            reset(url)
            populate(url, args.instances, args.endpoints)
            scan_s, delete_s, found, failed = timed_reap(concurrency)
            expected = args.instances + args.endpoints
            if found != expected or failed:
                print(f"concurrency {concurrency}: found {found} of {expected}, {failed} failed", file=sys.stderr)
                return 1
            results[concurrency] = (scan_s, delete_s)
            print(f"concurrency {concurrency:>3}: scan {scan_s:6.2f} s, delete {delete_s:6.2f} s, total {scan_s + delete_s:6.2f} s "
                  f"({found} resources)")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    serial, par = results[1], results[args.concurrency]
    latency = f"{args.latency_ms:g} ms injected server-side per request" if args.latency_ms else "bare moto, no injected latency"
    print(f"speed-up at concurrency {args.concurrency} vs 1 ({latency}): "
          f"delete {serial[1] / par[1]:.1f}x, scan+delete {sum(serial) / sum(par):.1f}x (target >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
