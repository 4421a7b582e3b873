"""llmdeploy's own cache of what the Hub said about a commit: a damaged copy counts as absent, never a traceback."""

from __future__ import annotations

import json

import pytest

from llmdeploy import hub

GOOD = {"repo_id": "org/m", "commit": "a" * 40, "parameters": {"BF16": 1000, "F32": 24}, "total": 1024, "gated": None}


def test_a_well_formed_cache_is_read(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    assert hub._read_facts(path) == GOOD


@pytest.mark.parametrize("damaged", [
    "not json", "[1, 2]", json.dumps({**GOOD, "parameters": [1, 2]}), json.dumps({**GOOD, "parameters": {"BF16": "many"}}),
    json.dumps({**GOOD, "parameters": {"BF16": -5}}), json.dumps({**GOOD, "parameters": {"BF16": True}}),
    json.dumps({**GOOD, "total": "1024"}), json.dumps({**GOOD, "total": 1.5}),
])
def test_a_damaged_cache_counts_as_absent(tmp_path, damaged):
    path = tmp_path / "c.json"
    path.write_text(damaged)
    assert hub._read_facts(path) is None
