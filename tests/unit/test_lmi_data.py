"""llmdeploy/data/lmi.toml: every fact sourced and dated, the pins consistent with each other."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from llmdeploy.errors import ConfigError
from llmdeploy.lmi import (
    PATH,
    cpu_image_tag,
    cuda_of_tag,
    inference_ami_for_cuda,
    load_lmi_table,
    parse_table,
    unknown_requirements_note,
)
from llmdeploy.stackconfig import DEFAULT_LMI_VERSION, StackConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    return load_lmi_table()


def test_every_source_is_dated_described_and_used(table):
    raw = PATH.read_text()
    for key, source in table.sources.items():
        assert source.url.startswith("https://") and isinstance(source.retrieved, dt.date) and len(source.note) > 80, key
        assert raw.count(f'"{key}"') >= 1, f"source {key} is never cited"
    for rel in table.versions.values():
        assert rel.branch in rel.source.note, f"{rel.version}: its source must be its recipe's branch"


def test_the_pin_is_the_stack_default(table):
    assert DEFAULT_LMI_VERSION == table.default == StackConfig(mode="realtime").lmi_version
    assert table.default_source is table.versions[table.default].source


def test_tested_pins_are_what_that_lmi_version_ships(table):
    rel = table.versions[table.tested_lmi_version]
    assert rel.transformers_pinned == table.tested_transformers, "CI's older transformers is that image's own"
    assert table.tested_tokenizers in SpecifierSet(rel.tokenizers)
    assert list(table.cpu_image.requirements) == [f"transformers=={table.tested_transformers}",
                                                  f"tokenizers=={table.tested_tokenizers}"]


def test_tested_transformers_is_the_oldest_the_package_allows(table):
    serve = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    spec = next(SpecifierSet(r.split("transformers", 1)[1]) for r in serve if r.startswith("transformers"))
    assert table.tested_transformers in spec and f">={table.tested_transformers}" in str(spec)
    for rel in table.versions.values():  # every recorded image's transformers is allowed by the extra
        pinned = rel.transformers_pinned
        assert pinned is None or pinned in spec, rel.version


def test_the_ci_installs_the_tested_pins_from_the_data():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "llmdeploy/data/lmi.toml" in ci and '["tested"]' in ci
    assert "4.51" not in ci, "the pins live in lmi.toml only"


def test_recorded_cuda_and_cpu_builds(table):
    for rel in table.versions.values():
        assert cuda_of_tag(rel.image_tag) == rel.cuda, rel.version
        assert rel.python != table.cpu_image.python, "requirements.txt's marker must skip every GPU image"
    assert cpu_image_tag(table, "0.36.0") == "0.36.0-cpu-full" and cpu_image_tag(table, "0.33.0") is None
    assert cpu_image_tag(table, "9.9.9") is None


def test_host_ami_rule(table):
    assert inference_ami_for_cuda(table, "12.8") == ""  # default hosts, through cuda-compat
    assert inference_ami_for_cuda(table, "13.0") == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert inference_ami_for_cuda(table, None) == ""
    with pytest.raises(ConfigError, match="CUDA 14.0"):
        inference_ami_for_cuda(table, "14.0")


def test_unknown_version_says_its_requirements_are_unknown(table):
    note = unknown_requirements_note(table, "0.38.0")
    assert "0.38.0" in note and "unknown" in note and table.default in note
    assert unknown_requirements_note(table, table.default) is None


def test_a_default_without_a_recipe_is_refused():
    raw = tomllib.loads(PATH.read_text())
    raw["default"] = "0.38.0"
    with pytest.raises(ConfigError, match="default '0.38.0'"):
        parse_table(raw)
