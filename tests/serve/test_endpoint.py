"""The local endpoint over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmdeploy.handlers.endpoint import EndpointServer, EndpointSettings
from llmdeploy.handlers.lmi_service import Seq2SeqService

pytestmark = pytest.mark.slow


def call(url: str, body=None, *, raw: bytes | None = None, method="POST", timeout=30, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    from llmdeploy.handlers.endpoint import build_service

    service = build_service(str(tiny_model_dir), max_new_tokens_cap=16, device="cpu", max_request_tokens=512,
                            max_batch_size=8, max_batch_delay_ms=300)
    settings = EndpointSettings(max_body_bytes=4096, request_timeout_s=30)
    with EndpointServer(service, settings) as server:
        yield server


def test_ping_and_single_invocation(tiny_server):
    assert call(tiny_server.url + "/ping", method="GET") == (200, {"status": "healthy"})
    status, body = call(tiny_server.url + "/invocations", {"inputs": "w1 w2", "parameters": {"max_new_tokens": 3}})
    assert status == 200 and set(body) == {"generated_text"}
    status, body = call(tiny_server.url + "/invocations", {"inputs": ["w1", "w2 w3"]})
    assert status == 200 and isinstance(body, list) and len(body) == 2
    status, body = call(tiny_server.url + "/invocations", raw=b"w1 w2 w3", content_type="text/plain")
    assert status == 200 and "generated_text" in body


def test_concurrent_requests_share_decode_steps_and_bad_ones_get_4xx(tiny_server):
    url = tiny_server.url + "/invocations"
    before = len(tiny_server.batcher.batch_sizes)
    good = [{"inputs": f"w{i} w{i + 1}", "parameters": {"max_new_tokens": 4, "min_new_tokens": 4}}
            for i in range(8)]
    bad = [({"inputs": 7}, 400), ({"inputs": "x", "parameters": {"max_new_tokens": 10_000}}, 400),
           ({"parameters": {}}, 400), ({"inputs": "x", "parameters": {"nope": 1}}, 400),
           ({"inputs": "x", "parameters": {"num_beams": 5}}, 400),  # over the num_beams cap
           ({"inputs": ["w1"] * 40, "parameters": {"max_new_tokens": 16}}, 400)]  # 640 tokens, over the budget
    with ThreadPoolExecutor(14) as pool:
        good_f = [pool.submit(call, url, b) for b in good]
        bad_f = [(pool.submit(call, url, b), code) for b, code in bad]
        bad_json = pool.submit(call, url, raw=b'{"inputs": ')
        results = [f.result() for f in good_f]
    assert all(status == 200 and "generated_text" in body for status, body in results)
    for fut, code in bad_f:
        status, body = fut.result()
        assert status == code and body["error"]
    assert "cap of 4" in bad_f[4][0].result()[1]["error"] and "budget of 512" in bad_f[5][0].result()[1]["error"]
    status, body = bad_json.result()
    assert status == 400 and "not valid JSON" in body["error"]
    steps = tiny_server.batcher.batch_sizes[before:]
    assert sum(steps) == 8 * 4 and max(steps) >= 2, steps  # 8 requests x 4 tokens; bad ones never decode
    assert call(url, {"inputs": "w5"})[0] == 200


def test_static_batching_groups_requests(tiny_model_dir):
    from llmdeploy.handlers.endpoint import build_service

    service = build_service(str(tiny_model_dir), max_new_tokens_cap=16, device="cpu", max_batch_size=8,
                            max_batch_delay_ms=300)
    settings = EndpointSettings(batching="static")
    engine = service.engine
    # Mixed lengths: a static batch is one generate call whatever its rows' max_new_tokens; each row gets what it
    # would alone.
    bodies = [{"inputs": f"w{i} w{i + 3}", "parameters": {"max_new_tokens": 2 + i}} for i in range(8)]
    alone = [engine.generate([b["inputs"]], b["parameters"])[0] for b in bodies]
    calls = engine.generate_calls
    with EndpointServer(service, settings) as server:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda b: call(server.url + "/invocations", b), bodies))
        assert [status for status, _ in results] == [200] * 8
        assert [body["generated_text"] for _, body in results] == alone
        sizes = server.batcher.batch_sizes
        assert sum(sizes) == 8 and max(sizes) >= 2
        assert engine.generate_calls - calls == len(sizes), "one generate call per static batch"


def test_oversize_body_is_413_and_server_keeps_serving(tiny_server):
    status, body = call(tiny_server.url + "/invocations", {"inputs": "w1 " * 3000})
    assert status == 413 and "limit" in body["error"]
    assert call(tiny_server.url + "/invocations", {"inputs": "w1"})[0] == 200


def test_wrong_method_and_path(tiny_server):
    req = urllib.request.Request(tiny_server.url + "/nope", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 404


def test_slow_generation_answers_504_then_recovers():
    from conftest import FakeEngine

    from llmdeploy.handlers.serving_config import parse_properties

    engine = FakeEngine(delay_s=0.6)
    service = Seq2SeqService(engine=engine, config=parse_properties({"batch_size": "4", "max_batch_delay": "1"}))
    settings = EndpointSettings(request_timeout_s=0.2)
    with EndpointServer(service, settings) as server:
        status, body = call(server.url + "/invocations", {"inputs": "slow"})
        assert status == 504 and "no answer within" in body["error"]
        engine.delay_s = 0
        time.sleep(0.6)  # let the abandoned batch finish
        assert call(server.url + "/invocations", {"inputs": "fast"}) == (200, {"generated_text": "echo:fast:64"})


def test_one_at_a_time_batcher_runs_batches_of_one():
    from conftest import FakeEngine

    from llmdeploy.handlers.serving_config import parse_properties

    service = Seq2SeqService(engine=FakeEngine(delay_s=0.02),
                             config=parse_properties({"batch_size": "1", "max_batch_delay": "50"}))
    with EndpointServer(service, EndpointSettings()) as server:
        with ThreadPoolExecutor(6) as pool:
            statuses = [f.result()[0] for f in [pool.submit(call, server.url + "/invocations", {"inputs": str(i)})
                                                for i in range(6)]]
        assert statuses == [200] * 6 and server.batcher.batch_sizes == [1] * 6


def test_a_client_that_goes_away_is_cancelled_at_the_next_step(tiny_model_dir):
    """Continuous batching: the request leaves the decode right after its client disconnects (or times out)."""
    from llmdeploy.handlers.endpoint import build_service

    service = build_service(str(tiny_model_dir), max_new_tokens_cap=512, device="cpu", max_request_tokens=4096)
    with EndpointServer(service, EndpointSettings(request_timeout_s=30)) as server:
        loop = server.batcher.loop
        forward = loop._forward

        def slow():  # 20 ms a step: 400 tokens would take 8 s
            time.sleep(0.02)
            return forward()

        loop._forward = slow
        body = json.dumps({"inputs": "w1 w2", "parameters": {"max_new_tokens": 400, "min_new_tokens": 400}}).encode()
        head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        data, _ = _raw(server.port, head + body, 0.5)  # the client gives up after 0.5 s and closes
        assert data == b""
        deadline = time.monotonic() + 5
        while len(loop) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(loop) == 0 and loop.steps < 100, loop.steps  # left long before its 400 tokens
        assert call(server.url + "/invocations", {"inputs": "w3", "parameters": {"max_new_tokens": 2}})[0] == 200


def test_a_request_past_its_timeout_is_504_and_leaves_the_decode(tiny_model_dir):
    from llmdeploy.handlers.endpoint import build_service

    service = build_service(str(tiny_model_dir), max_new_tokens_cap=512, device="cpu", max_request_tokens=4096)
    with EndpointServer(service, EndpointSettings(request_timeout_s=0.3)) as server:
        loop = server.batcher.loop
        forward = loop._forward
        loop._forward = lambda: (time.sleep(0.02), forward())[1]
        status, body = call(server.url + "/invocations",
                            {"inputs": "w1", "parameters": {"max_new_tokens": 400, "min_new_tokens": 400}})
        assert status == 504
        time.sleep(0.2)
        assert len(loop) == 0 and loop.steps < 60


def _raw(port: int, payload: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``payload`` and read until the server closes (or ``wait_s``); (what came back, seconds taken)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(payload)
        t0, data = time.monotonic(), b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except TimeoutError:
            pass
        return data, time.monotonic() - t0


def test_stalled_headers_and_bodies_are_cut_off(fake_service):
    settings = EndpointSettings(header_timeout_s=0.5, body_timeout_s=0.5)
    with EndpointServer(fake_service(), settings) as server:
        data, took = _raw(server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\n", 5)  # headers never end
        assert data == b"" and took < 2.5
        data, took = _raw(server.port, b"", 5)  # connects, sends nothing
        assert data == b"" and took < 2.5
        head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        data, took = _raw(server.port, head + b'{"inp', 5)  # body never completes
        assert data.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in data and took < 2.5
        assert call(server.url + "/invocations", {"inputs": "still serving"})[0] == 200


def _serve_in_subprocess(tmp_path, *, delay_s: float, settings: str) -> subprocess.Popen:
    """The real `serve_forever` over a FakeEngine taking ``delay_s`` per batch, in a process of its own (it prints its
    port when ready and 'exited' when serve_forever returns)."""
    script = tmp_path / "srv.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from conftest import FakeEngine\n"
        "from llmdeploy.handlers.endpoint import EndpointSettings, serve_forever\n"
        "from llmdeploy.handlers.lmi_service import Seq2SeqService\n"
        "from llmdeploy.handlers.serving_config import parse_properties\n"
        f"svc = Seq2SeqService(engine=FakeEngine(delay_s={delay_s!r}), config=parse_properties({{'max_batch_delay': '1'}}))\n"
        f"asyncio.run(serve_forever(svc, {settings}, host='127.0.0.1', port=0,\n"
        "            on_ready=lambda p: print(p, flush=True)))\n"
        "print('exited', flush=True)\n")
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)


def test_sigterm_finishes_in_flight_then_exits(tmp_path):
    """The real `serve_forever` in a subprocess: a request in flight at SIGTERM still gets its answer."""
    proc = _serve_in_subprocess(tmp_path, delay_s=1.0, settings="EndpointSettings()")
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/invocations"
        with ThreadPoolExecutor(2) as pool:
            in_flight = pool.submit(call, url, {"inputs": "last"})
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # draining: new work is refused (503) or the listener is already closed
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                assert call(url, {"inputs": "late"}, timeout=5)[0] == 503
            assert in_flight.result() == (200, {"generated_text": "echo:last:64"})
        assert proc.wait(20) == 0
        assert "exited" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_serve_runs_and_stops_on_sigint(tiny_model_dir):
    from conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmdeploy.cli.main", "serve", "--model", str(tiny_model_dir),
                             "--port", str(port), "--max-new-tokens", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if call(f"http://127.0.0.1:{port}/ping", method="GET", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        status, body = call(f"http://127.0.0.1:{port}/invocations", {"inputs": "w1", "parameters": {"max_new_tokens": 9}})
        assert status == 400 and "cap of 8" in body["error"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_exits_within_the_grace_period_answering_what_is_left_503(tmp_path):
    """A generation longer than the grace period, plus a stalled upload: both answered or cut, exit in time."""
    proc = _serve_in_subprocess(tmp_path, delay_s=60.0, settings="EndpointSettings(grace_s=1.5, body_timeout_s=60)")
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/invocations"
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(call, url, {"inputs": "takes a minute"})
            stalled = pool.submit(_raw, port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{", 30)
            time.sleep(0.5)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            took = time.monotonic() - t0
            status, body = long.result()
            assert status == 503 and "did not finish in time" in body["error"]
            assert stalled.result()[1] < 10  # the stalled upload did not hold the server open
        assert 1.0 <= took < 1.5 + 2.0, took
        assert "exited" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("flag, value", [("--request-timeout", "nan"), ("--max-batch-delay-ms", "inf"),
                                         ("--grace-period", "-1"), ("--max-request-tokens", "0")])
def test_serve_refuses_non_finite_and_out_of_range_flags_in_one_line(flag, value, tiny_model_dir):
    from click.testing import CliRunner

    from llmdeploy.cli.main import cli

    res = CliRunner().invoke(cli, ["serve", "--model", str(tiny_model_dir), flag, value])
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and flag in errors[0], res.output


def test_auto_batching_follows_the_device_the_model_loaded_on(tiny_model_dir):
    """--batching auto (the default): iteration-level on CPU, static batches on CUDA (serving_config.resolve_batching).
    No GPU here: the CUDA case is the same loaded engine with its device reported as an A10G (precision.A10G);
    the choice reads nothing else of the device."""
    import copy

    from llmdeploy.handlers.batching import ContinuousBatcher, DynamicBatcher
    from llmdeploy.handlers.endpoint import build_service, make_batcher, served_batching
    from llmdeploy.handlers.precision import A10G

    service = build_service(str(tiny_model_dir), max_new_tokens_cap=8, device="cpu", max_batch_size=6)
    assert EndpointSettings().batching == "auto" and service.engine.device.kind == "cpu"
    on_gpu = copy.copy(service)
    on_gpu.engine = copy.copy(service.engine)
    on_gpu.engine.device = A10G
    cases = [(service, "auto", ContinuousBatcher), (on_gpu, "auto", DynamicBatcher),
             (on_gpu, "continuous", ContinuousBatcher), (service, "static", DynamicBatcher)]
    for svc, batching, kind in cases:  # make_batcher only builds; nothing runs until the server starts it
        batcher = make_batcher(svc, EndpointSettings(batching=batching))
        assert type(batcher) is kind, (svc.engine.device.kind, batching, batcher)
        assert served_batching(svc.engine, batching) == ("continuous" if kind is ContinuousBatcher else "static")
