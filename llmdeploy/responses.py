"""What a client of a llmdeploy endpoint checks: the HTTP status AND the body.

Under DJL Serving (every deployed mode) requests that arrive together are answered as
one batch, and DJL gives every request of a batch the batch's HTTP status
(PyPredictor.java copies the batch Output's code onto each request). So a malformed
request inside a batch reaches its client as **200** with ``{"error": ..., "code": ...}``
as its body, while the same request alone would get its 4xx. A success is a
``{"generated_text": ...}`` object, or a list of them when ``inputs`` was a list.

``response_error`` is that check for Python clients; ``CHECK_BODY_PY`` is the same rule
as a ``python3 -c`` program for the invoke commands the stacks print.
"""

from __future__ import annotations

import json


def response_error(status: int, body) -> str | None:
    """None for a generation; else one line naming the error. ``body``: bytes, str or decoded JSON."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            return f"HTTP {status}: body is not JSON: {body[:200]!r}"
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {status}, error {body.get('code', '?')}: {body['error']}"
    if status >= 300:
        return f"HTTP {status}: {json.dumps(body)[:200]}"
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) and "generated_text" in i for i in items):
        return f"HTTP {status}: unexpected body {json.dumps(body)[:200]}"
    return None


# Prints the body; exits 1 with the error on stderr when the body is an error (whatever the status was).
CHECK_BODY_PY = (
    "import json,sys; t=open(sys.argv[1]).read(); "
    "b=json.loads(t) if t.lstrip()[:1] in ('{','[') else sys.exit('not JSON: '+t[:300]); print(json.dumps(b)); "
    "sys.exit('error %s: %s' % (b.get('code'), b['error']) if isinstance(b, dict) and 'error' in b else 0)"
)


def check_body_command(path: str) -> str:
    """A shell command that prints the JSON response in ``path`` and fails on an error body."""
    import shlex

    return f"python3 -c {shlex.quote(CHECK_BODY_PY)} {shlex.quote(path)}"
