"""What clients check: the body as well as the status (DJL answers errors inside a batch with 200)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmdeploy.responses import CHECK_BODY_PY, response_error


@pytest.mark.parametrize("status, body, needles", [
    (200, {"generated_text": "hallo"}, None),
    (200, [{"generated_text": "a"}, {"generated_text": "b"}], None),
    (200, {"error": "unknown generation parameter 'bogus'", "code": 400}, ["HTTP 200", "error 400", "bogus"]),
    (400, {"error": "'inputs' is an empty list", "code": 400}, ["HTTP 400", "empty list"]),
    (502, "<html>Bad Gateway</html>", ["HTTP 502", "not JSON"]),
    (200, {"outputs": []}, ["unexpected body"]),
])
def test_response_error(status, body, needles):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    found = response_error(status, raw)
    if needles is None:
        assert found is None
    else:
        assert found is not None and all(n in found for n in needles), found


@pytest.mark.parametrize("body, code", [(b'{"generated_text": "x"}', 0), (b'[{"generated_text": "x"}]', 0),
                                        (b'{"error": "bad", "code": 400}', 1), (b"<html>", 1)])
def test_the_invoke_commands_body_check(tmp_path, body, code):
    path = tmp_path / "response.json"
    path.write_bytes(body)
    proc = subprocess.run([sys.executable, "-c", CHECK_BODY_PY, str(path)], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    if code and body.startswith(b"{"):
        assert "error 400: bad" in proc.stderr
