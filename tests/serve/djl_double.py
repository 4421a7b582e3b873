r"""A small test double shaped like djl_python's Input/Output (djl_python is not on PyPI).

Mirrors engines/python/setup/djl_python/inputs.py and outputs.py: properties dict,
content pairs keyed ``batch_NNN.<key>`` for batches (as PyPredictor.java builds them),
``get_batches``, ``is_empty``, ``Output.add(value, key, batch_index)`` keying
``batch_{i}.{key}`` (PyPredictor.java splits the answer with ``batch_(\d+)\.(.*)`` and
gives every item the batch's one status code and properties).
"""

from __future__ import annotations

import json


class Input:
    def __init__(self, properties: dict | None = None, content: list[tuple[str, bytes]] | None = None):
        self.properties = dict(properties or {})
        self.content = list(content or [])

    @classmethod
    def batch(cls, bodies: list, properties: dict | None = None) -> "Input":
        props = dict(properties or {})
        props["batch_size"] = str(len(bodies))
        content = []
        for i, body in enumerate(bodies):
            raw = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
            props[f"batch_{i:03d}.Content-Type"] = "application/json"
            content.append((f"batch_{i:03d}.data", bytes(raw)))
        return cls(props, content)

    @classmethod
    def single(cls, body, properties: dict | None = None) -> "Input":
        props = dict(properties or {})
        props["Content-Type"] = "application/json"
        raw = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
        return cls(props, [("data", bytes(raw))])

    def is_batch(self) -> bool:
        return "batch_size" in self.properties

    def get_batch_size(self) -> int:
        return int(self.properties.get("batch_size", "1"))

    def get_batches(self) -> list["Input"]:
        if not self.is_batch():
            return [self]
        batch = [Input() for _ in range(self.get_batch_size())]
        for key, value in self.properties.items():
            if key.startswith("batch_") and key != "batch_size":
                batch[int(key[6:9])].properties[key[10:]] = value
        for key, value in self.content:
            batch[int(key[6:9])].content.append((key[10:], value))
        return batch

    def get_properties(self) -> dict:
        return self.properties

    def get_property(self, key: str):
        return next((v for k, v in self.properties.items() if k.lower() == key.lower()), None)

    def is_empty(self) -> bool:
        return not self.content

    def get_as_bytes(self, key=None):
        if not self.content:
            return None
        for k, v in self.content:
            if k == (key or "data"):
                return v
        return self.content[0][1]

    def get_as_string(self, key=None) -> str:
        return self.get_as_bytes(key).decode()

    def get_as_json(self, key=None):
        return json.loads(self.get_as_string(key))


class Output:
    def __init__(self, code: int = 200, message: str = "OK"):
        self.code = code
        self.message = message
        self.properties: dict = {}
        self.content: list[tuple[str | None, bytes]] = []

    def set_code(self, code: int):
        self.code = code
        return self

    def set_message(self, message: str):
        self.message = message
        return self

    def error(self, error: str, code=424, message="prediction failure"):
        self.code, self.message = code, message
        return self.add_as_json({"code": code, "message": message, "error": error})

    def add_property(self, key, val):
        self.properties[key] = val
        return self

    def add(self, value, key=None, batch_index=None):
        if batch_index is not None:
            key = f"batch_{batch_index}.{'' if key is None else key}"
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, (bytes, bytearray)):
            value = json.dumps(value).encode()
        self.content.append((key, bytes(value)))
        return self

    def add_as_json(self, val, key=None, batch_index=None):
        return self.add(json.dumps(val), key=key, batch_index=batch_index)

    # test helpers
    def json_items(self) -> dict:
        return {k: json.loads(v) for k, v in self.content}
