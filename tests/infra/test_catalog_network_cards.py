"""The catalog's network_cards: one place for the number, read into Instance, 1 where a row has none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from llmdeploy.catalog import BUNDLED_DIR, load_catalog_from
from llmdeploy.errors import ConfigError

_spec = importlib.util.spec_from_file_location("fakecat_cards", Path(__file__).parents[1] / "aws" / "fakecat.py")
fakecat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakecat)


def test_bundled_multi_card_types():
    cat = load_catalog_from(BUNDLED_DIR)
    assert cat.instances["p4d.24xlarge"].network_cards == 4, "p4d.24xlarge has 4 network cards (catalog row)"
    assert cat.instances["p5.48xlarge"].network_cards == 32, "p5.48xlarge has 32 network cards (catalog row)"
    others = {t: i.network_cards for t, i in cat.instances.items() if t not in ("p4d.24xlarge", "p5.48xlarge")}
    assert set(others.values()) == {1}, "rows without network_cards read as 1"
    note = cat.instances["p5.48xlarge"].source.note
    assert "network_cards" in note and "32 network cards" in note, "the rows' source must say where network_cards comes from"


def _catalog_with(tmp_path, p4d_extra: str):
    folder = fakecat.write(tmp_path)
    path = Path(folder) / "instances.toml"
    path.write_text(path.read_text().replace('efa = true\nsource = "test"', f'efa = true\n{p4d_extra}source = "test"', 1))
    return load_catalog_from(folder)


def test_absent_network_cards_default_to_one(tmp_path):
    assert _catalog_with(tmp_path, "").instances["p4d.24xlarge"].network_cards == 1


def test_network_cards_read_from_the_row(tmp_path):
    assert _catalog_with(tmp_path, "network_cards = 4\n").instances["p4d.24xlarge"].network_cards == 4


@pytest.mark.parametrize("value", ["0", '"4"', "true", "2.5"])
def test_bad_network_cards_is_one_line_config_error(tmp_path, value):
    with pytest.raises(ConfigError, match=r"p4d\.24xlarge.*network_cards") as err:
        _catalog_with(tmp_path, f"network_cards = {value}\n")
    assert "\n" not in str(err.value), "a malformed catalog row must read as one line"
