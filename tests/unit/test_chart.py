"""`plan --chart`: a real PNG whose pixels follow the inputs."""

from __future__ import annotations

import struct

from click.testing import CliRunner

from llmdeploy.cli.main import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _draw(tmp_path, name, *args):
    path = tmp_path / name
    result = CliRunner().invoke(cli, ["plan", "--chart", str(path), *args])
    assert result.exit_code == 0, result.output
    return path.read_bytes()


def _size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC, "not a PNG"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_chart_is_a_png_that_changes_with_the_inputs(tmp_path):
    base = _draw(tmp_path, "a.png")
    width, height = _size(base)
    assert width > 400 and height > 300
    assert base.endswith(b"IEND\xaeB`\x82"), "the PNG must be complete"
    same = _draw(tmp_path, "b.png")
    assert same == base, "same inputs draw the same bytes"
    other = _draw(tmp_path, "c.png", "--model", "flan-t5-small", "--requests-per-day", "500")
    assert other != base
    assert _size(other) == (width, height)


def test_chart_needs_a_png_name(tmp_path):
    result = CliRunner().invoke(cli, ["plan", "--chart", str(tmp_path / "chart.jpg")])
    assert result.exit_code == 2 and "must end in .png" in result.output
    assert not (tmp_path / "chart.jpg").exists()
