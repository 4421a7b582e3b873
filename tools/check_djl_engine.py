"""Developer check: the packaged handler inside DJL Serving's real Python engine (not run in CI).

CI tests the handler through tests/serve/djl_double.py, a double of DJL's Python engine. This
script holds that double to the real thing: it takes ``djl_python`` and ``djl_python_engine.py``
from a djl-serving checkout at the branch of an LMI version (default: the pinned one, see
llmdeploy/data/lmi.toml), builds model.tar.gz with ``llmdeploy package`` (a tiny random FLAN-T5
built offline, or ``--model DIR``), extracts it, starts the real engine process the way DJL's
Java side does (Connection.java: same arguments, PYTHONPATH, a Unix socket), and speaks DJL's
wire protocol to it with the Java-side half of the double (initialisation call, PyPredictor's
batching and splitting). It prints every HTTP answer DJL would send and exits 1 on the first
that is not what the handler promises.

    fetch the repository first (it is not vendored), e.g. into /work/.mirror/.../repo, then:
    python tools/check_djl_engine.py --djl-serving PATH/TO/djl-serving [--branch 0.33.0-dlc] [--model DIR]

Run it under each transformers you care about (the dev venv, and a venv with
llmdeploy/data/lmi.toml's [tested] pins): the engine process uses this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))  # djl_double (the Java side) and the tiny-model builder


class SocketTransport:
    """One connection to djl_python_engine.py: send an encoded Input, read one Output frame back."""

    def __init__(self, path: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the engine did not open {path} within {timeout_s:g} s") from None
                time.sleep(0.2)
        self.sock.settimeout(timeout_s)

    def _exact(self, n: int, into: bytearray) -> bytes:
        chunk = bytearray()
        while len(chunk) < n:
            part = self.sock.recv(n - len(chunk))
            if not part:
                raise RuntimeError("the engine closed the connection (see its log above)")
            chunk += part
        into += chunk
        return bytes(chunk)

    def __call__(self, wire: bytes) -> bytes:
        self.sock.sendall(wire)
        frame = bytearray()
        short = lambda: struct.unpack(">h", self._exact(2, frame))[0]  # noqa: E731
        length = lambda: struct.unpack(">i", self._exact(4, frame))[0]  # noqa: E731

        def utf8():
            n = length()
            if n > 0:
                self._exact(n, frame)

        short()  # code
        utf8()  # message
        for _ in range(short()):
            utf8(), utf8()
        size = short()
        if size < 0:
            raise RuntimeError("the engine streamed its answer; the handler never streams")
        for _ in range(size):
            utf8()
            self._exact(length(), frame)
        return bytes(frame)


def extract_engine(repo: str, branch: str, into: Path) -> Path:
    """engines/python/setup of ``branch`` from a djl-serving git directory (bare or not), as installed.

    The image installs djl_python with its setup.py, which appends ``__version__`` (the ``serving``
    version of gradle/libs.versions.toml) to djl_python/__init__.py when it is missing there (0.33).
    """
    if (Path(repo) / "engines" / "python" / "setup").is_dir() and not (Path(repo) / ".git").exists():
        # already extracted (`git archive BRANCH engines/python/setup gradle/libs.versions.toml | tar -x`), e.g.
        # carried to a GPU host that has neither git nor the mirror
        shutil.copytree(Path(repo) / "engines" / "python" / "setup", into / "engines" / "python" / "setup")
        (into / "gradle").mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(repo) / "gradle" / "libs.versions.toml", into / "gradle" / "libs.versions.toml")
    else:
        archive = subprocess.run(["git", "-C", repo, "archive", branch, "engines/python/setup",
                                  "gradle/libs.versions.toml"], check=True, capture_output=True).stdout
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    setup = into / "engines" / "python" / "setup"
    init = setup / "djl_python" / "__init__.py"
    if "__version__" not in init.read_text():
        version = next(line.split("=", 1)[1].strip().strip('"')
                       for line in (into / "gradle" / "libs.versions.toml").read_text().splitlines()
                       if line.split("=", 1)[0].strip() == "serving")
        with init.open("a") as fh:
            fh.write(f"\n__version__ = '{version}'\n")
    return setup


def run_engine(cmd, env, cwd, sock, properties, mode, timeout, answered: dict | None = None) -> list[str]:
    """Start the real engine, initialise it with ``properties`` and check every answer; the failures.

    ``answered``, when given, collects {case: [body, ...]} of the answers."""
    from djl_double import Djl, HttpRequest

    from llmdeploy.responses import response_error

    cmd = list(cmd)
    cmd[cmd.index("--sock-name") + 1] = sock
    engine = subprocess.Popen(cmd, env=env, cwd=cwd)
    failures = []
    try:
        djl = Djl(SocketTransport(sock, timeout))
        init = djl.initialize(properties)
        print(f"[{mode}] init -> {init.code} {init.message}; rolling batch: {djl.rolling_batch}")
        if init.code != 204:
            failures.append(f"{mode}: the initialisation call must answer 204 (the handler returns None)")
        good = {"inputs": "w1 w2 w3", "parameters": {"max_new_tokens": 4, "min_new_tokens": 4}}
        cases = {
            "single": {0: [good]},
            "single, malformed": {0: [{"inputs": 5}]},
            "batch with malformed requests": {0: [good, b"{not json", {"inputs": ["w5 w6", "w7"]},
                                                  {"inputs": "w8", "parameters": {"bogus": 1}}]},
            "over the budget": {0: [{"inputs": ["w1"] * 64, "parameters": {"max_new_tokens": 16}}]},  # 1024 > 512
            # one static batch, one generate call to the longest, each row stopped at its own length
            "batch with mixed lengths": {0: [good, {"inputs": "w9 w2", "parameters": {"max_new_tokens": 9}},
                                             {"inputs": "w3", "parameters": {"max_new_tokens": 2}}]},
        }
        if djl.rolling_batch:
            cases["joining mid-decode"] = {0: [good], 2: [{"inputs": "w9", "parameters": {"max_new_tokens": 6}}],
                                           3: [b"{not json"]}
        for name, arrivals in cases.items():
            bodies = [b for step in sorted(arrivals) for b in arrivals[step]]
            requests = {step: [HttpRequest.json(b) for b in arrivals[step]] for step in arrivals}
            answers = djl.rolling(requests) if djl.rolling_batch else djl.predict(requests[0])
            if answered is not None:
                answered[name] = [answer.json() for answer in answers]
            for body, answer in zip(bodies, answers, strict=True):
                error = response_error(answer.status, answer.body)
                print(f"[{mode}] {name}: {answer.status} {answer.headers} {json.dumps(answer.json())}")
                expect_error = not (isinstance(body, dict) and isinstance(body.get("inputs"), (str, list))
                                    and "bogus" not in body.get("parameters", {}) and len(body["inputs"]) < 64)
                shared_status = len(bodies) > 1 and not djl.rolling_batch  # DJL's dynamic batch: one status for all
                if answer.headers.get("Content-Type") != "application/json" or len(answer.headers) != 1:
                    failures.append(f"{mode} {name}: headers {answer.headers}, expected only Content-Type")
                if expect_error != (error is not None):
                    failures.append(f"{mode} {name}: {'no error' if error is None else error} for {body!r}")
                if expect_error and answer.status != (200 if shared_status else 400):
                    failures.append(f"{mode} {name}: status {answer.status} for a malformed request")
    finally:
        engine.terminate()
        try:
            engine.wait(10)
        except subprocess.TimeoutExpired:
            engine.kill()
    return failures


def main(argv=None) -> int:
    from llmdeploy.lmi import load_lmi_table

    table = load_lmi_table()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--djl-serving", required=True, help="djl-serving git directory (a checkout or a bare mirror), or a folder holding "
                        "`git archive BRANCH engines/python/setup gradle/libs.versions.toml` extracted")
    parser.add_argument("--branch", default=table.versions[table.default].branch,
                        help="branch holding the LMI version's recipe (default: the pinned %(default)s)")
    parser.add_argument("--model", type=Path, help="model folder to package (default: a tiny random FLAN-T5)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for start-up and each answer")
    args = parser.parse_args(argv)

    import transformers

    from llmdeploy.containers.package import PackageSettings, build_model_tarball
    from llmdeploy.handlers.serving_config import batch_properties

    with tempfile.TemporaryDirectory(prefix="djl-check-") as tmp_name:
        tmp = Path(tmp_name)
        engine_dir = extract_engine(args.djl_serving, args.branch, tmp / "djl-serving")
        model = args.model
        if model is None:
            from conftest import build_tiny_t5

            model = build_tiny_t5(tmp / "tiny-flan-t5")
        # iteration-level first (what auto gives on CPU; DJL drives it step by step), the static contract after
        settings = PackageSettings(max_new_tokens=16, max_request_tokens=512, batching="continuous")
        result = build_model_tarball(tmp / "model.tar.gz", settings, weights_dir=model)
        model_dir = tmp / "opt-ml-model"
        with tarfile.open(result.path) as tar:
            tar.extractall(model_dir, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        sock = str(tmp / "djl_sock")
        cmd = [sys.executable, str(engine_dir / "djl_python_engine.py"), "--sock-type", "unix", "--sock-name", sock,
               "--model-dir", str(model_dir), "--entry-point", "model.py", "--device-id", "-1",
               "--cluster-size", "1", "--recommended-entry-point", "", "--log-level", "info", "--no-async-mode"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(engine_dir), str(model_dir)]))  # PyEnv's PYTHONPATH
        print(f"djl-serving {args.branch}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
        print(f"packaged {result.path.name} ({len(result.members)} files, adapted: {list(result.adapted) or 'none'})")
        failures = []
        props_path = model_dir / "serving.properties"
        packaged = props_path.read_text()
        # As packaged (transformers: DJL's RollingBatch drives the handler one step per call), then the static
        # contract (option.rolling_batch=disable with DJL's dynamic batches, what the ctranslate2 backend gets).
        rolling_keys = tuple(f"{key}=" for key, _ in batch_properties(1, rolling=True, max_batch_delay_ms=0))
        static = "".join(f"{line}\n" for line in packaged.splitlines() if not line.startswith(rolling_keys)) + "".join(
            f"{key}={value}\n" for key, value in batch_properties(
                settings.max_batch_size, rolling=False, max_batch_delay_ms=settings.max_batch_delay_ms))
        answered: dict[str, dict] = {}
        for mode, properties in (("rolling batch", packaged), ("static batches", static)):
            props_path.write_text(properties)
            answered[mode] = {}
            failures += run_engine(cmd, env, tmp, sock + mode[0], properties, mode, args.timeout, answered[mode])
        # Greedy decoding: the iteration-level loop and a static batch (one generate call, each row stopped at its
        # own length) must give every request the same text.
        # On a GPU the handler runs bf16/fp16, where a batch of another size sums in another order: greedy ties on
        # random weights may then break differently, so there a difference is reported, not failed.
        import torch

        reduced = torch.cuda.is_available()
        rolled, static_answers = answered["rolling batch"], answered["static batches"]
        for name in sorted(set(rolled) & set(static_answers)):
            for a, b in zip(rolled[name], static_answers[name], strict=True):
                texts = [x for x in (a, b) if not (isinstance(x, dict) and "error" in x)]
                if len(texts) == 2 and a != b:
                    message = f"{name}: rolling batch answered {a!r}, static batches {b!r}"
                    if reduced:
                        print(f"NOTE (reduced precision on the GPU) {message}")
                    else:
                        failures.append(message)
    for failure in failures:
        print(f"FAIL {failure}")
    print("OK: the handler answers as promised inside the real djl_python engine" if not failures else
          f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
