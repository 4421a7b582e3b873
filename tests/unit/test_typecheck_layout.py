"""mypy sees cli/, infra/... under the names they install as (llmdeploy.cli, llmdeploy.infra...).

[tool.setuptools] package-dir maps those folders into the llmdeploy package; the editable install does it with an
import hook that mypy cannot read, so typecheck/llmdeploy/ holds one symlink per mapped folder ([tool.mypy]
mypy_path). These tests keep the links in step with package-dir and resolve modules with mypy's own module finder
(the one a `mypy` run uses), so an import of llmdeploy.cli... is checked rather than silently falling back to Any.
"""

from __future__ import annotations

import io
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]
MYPY = PYPROJECT["tool"]["mypy"]
LINKS = ROOT / "typecheck" / "llmdeploy"
# Every folder installed under another name: llmdeploy.cli -> cli/, ...
MAPPED = {name: ROOT / folder for name, folder in PACKAGE_DIR.items() if name != "llmdeploy"}


def test_one_link_per_mapped_folder():
    assert sorted(p.name for p in LINKS.iterdir()) == sorted(name.split(".", 1)[1] for name in MAPPED)
    for name, folder in MAPPED.items():
        link = LINKS / name.split(".", 1)[1]
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{link}: a relative symlink (works in any clone)"
        assert link.resolve() == folder.resolve(), f"{link} points at {link.resolve()}, not {folder}"


def test_every_mapped_package_is_checked_or_followed_silently():
    """A mapped package is in [tool.mypy] packages, or (handlers/, until it is clean) followed silently."""
    silent = {m for o in PYPROJECT["tool"]["mypy"].get("overrides", []) if o.get("follow_imports") == "silent"
              for m in o["module"]}
    assert "llmdeploy" in MYPY["packages"]
    for name in MAPPED:
        assert (name in MYPY["packages"]) != (name in silent and f"{name}.*" in silent), name


@pytest.fixture
def find_module(monkeypatch):
    """mypy's module finder with pyproject.toml's [tool.mypy] settings, as `mypy` in the repository root builds it."""
    mypy = pytest.importorskip("mypy", reason="mypy comes with the dev extra")
    from mypy.config_parser import parse_config_file
    from mypy.fscache import FileSystemCache
    from mypy.modulefinder import FindModuleCache, compute_search_paths
    from mypy.options import Options

    monkeypatch.chdir(ROOT)
    options = Options()
    parse_config_file(options, lambda: None, str(ROOT / "pyproject.toml"), io.StringIO(), io.StringIO())
    finder = FindModuleCache(compute_search_paths([], options, os.path.dirname(mypy.__file__)), FileSystemCache(), options)

    def find(module: str) -> Path | None:
        found = finder.find_module(module)
        return Path(found).resolve() if isinstance(found, str) else None

    return find


def test_mypy_resolves_every_module_of_every_mapped_folder(find_module):
    for name, folder in MAPPED.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            module = ".".join((name, *parts[:-1])) if parts[-1] == "__init__" else ".".join((name, *parts))
            assert find_module(module) == path.resolve(), f"mypy does not find {module} at {path}"
    assert find_module("llmdeploy.plan") == (ROOT / "llmdeploy" / "plan.py").resolve()
    assert find_module("llmdeploy.no_such_module") is None
