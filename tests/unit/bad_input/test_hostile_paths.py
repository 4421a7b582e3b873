"""Output paths and names that would write where they must not, or lose a file llmdeploy does not own.

Checked before any work (fileio.check_output_path); only regular files are replaced; a full disk is
one line with the old file intact; SIGTERM removes temp files the way Ctrl-C does (a real signal to a
real process); `prices clear` deletes only a folder llmdeploy created and never through a link.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from llmdeploy import catalog as cat_mod
from llmdeploy import fileio
from llmdeploy.errors import FileError
from llmdeploy.prices import CACHE_MARKER, CACHE_MARKER_TEXT

from . import assert_refused, invoke


def _fifo(path):
    os.mkfifo(path)
    return path


CHART_PATHS = {
    "under /proc": lambda t: "/proc/x.png",
    "under a regular file": lambda t: (t / "file").write_text("x") and t / "file" / "c.png",
    "under a file two levels up": lambda t: (t / "f").write_text("x") and t / "f" / "a" / "b.png",
    "a folder named .png": lambda t: (t / "d.png").mkdir() or t / "d.png",
    "a FIFO": lambda t: _fifo(t / "p.png"),
    "a link to a FIFO": lambda t: (t / "l.png").symlink_to(_fifo(t / "q")) or t / "l.png",
    "a link to a folder": lambda t: (t / "m.png").symlink_to(t) or t / "m.png",
    "a broken link in the way": lambda t: (t / "gone").symlink_to(t / "nowhere") or t / "gone" / "c.png",
    "not a png": lambda t: t / "c.txt",
    "a link to a device": lambda t: (t / "n.png").symlink_to("/dev/null") or t / "n.png",
    "a device": lambda t: "/dev/null",
}


@pytest.mark.parametrize("name", CHART_PATHS)
def test_chart_path_refused_before_any_work(name, tmp_path):
    target = CHART_PATHS[name](tmp_path)
    assert_refused(invoke(["plan", "--chart", target]), 2, "--chart")


@pytest.mark.parametrize("name", CHART_PATHS)
def test_a_bad_chart_path_leaves_the_stack_file_untouched(name, tmp_path):
    """The issue's case: `plan --stack prod --chart c.txt` replaced the stack file, then failed on the chart."""
    project = tmp_path / "project"
    project.mkdir()
    stack = project / "Pulumi.prod.yaml"
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", project]).exit_code == 0
    before = stack.read_bytes()
    target = CHART_PATHS[name](tmp_path)
    assert_refused(invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", project, "--force", "--chart", target]),
                   2, "--chart")
    assert stack.read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == ["Pulumi.prod.yaml"], "no temp file left behind"


def test_a_new_stack_file_is_not_created_when_the_chart_is_bad(tmp_path):
    assert_refused(invoke(["plan", "--stack", "prod", "--project-dir", tmp_path, "--chart", tmp_path / "c.txt"]), 2)
    assert not list(tmp_path.iterdir())


OUT_PATHS = {k: v for k, v in CHART_PATHS.items() if k != "not a png"}


@pytest.mark.parametrize("name", OUT_PATHS)
def test_calibrate_out_path_refused_before_anything_is_measured(name, tmp_path, monkeypatch):
    """`calibrate --out` is checked (fileio.check_output_path) before the handler is loaded: minutes of measuring
    are never thrown away on a path that cannot be written."""
    from llmdeploy.cli import calibrate

    monkeypatch.setattr(calibrate, "load_probe", lambda *a, **k: pytest.fail("measured before checking --out"))
    model = tmp_path / "model"
    model.mkdir()
    assert_refused(invoke(["calibrate", "--model", model, "--out", OUT_PATHS[name](tmp_path)]), 2, "--out")


def test_calibrate_refuses_a_user_cache_it_cannot_write(tmp_path, monkeypatch):
    from llmdeploy import calibration as cal
    from llmdeploy.cli import calibrate

    monkeypatch.setattr(calibrate, "load_probe", lambda *a, **k: pytest.fail("measured before checking the cache"))
    cal.user_dir().mkdir(parents=True)
    _fifo(cal.default_path(cal.CPU))
    model = tmp_path / "model"
    model.mkdir()
    assert_refused(invoke(["calibrate", "--model", model]), 2, "calibration file", "not a regular file")


STACK_NAMES = ["dev\n", "dev\r\n", " dev", "../prod", "a/b", "", "x" * 101, "dev\x00", "prod;rm -rf", "é", "dev\t"]


@pytest.mark.parametrize("name", STACK_NAMES, ids=[repr(n)[:20] for n in STACK_NAMES])
@pytest.mark.parametrize("command", [["plan"], ["preview", "--offline"], ["deploy"], ["destroy"]])
def test_stack_names(name, command, tmp_path):
    result = invoke([*command, "--stack", name, "--project-dir", tmp_path])
    if name == "" and command == ["plan"]:
        assert result.exit_code == 0, "an empty --stack is no stack: plan only prints"
    else:
        assert_refused(result, 2, "is required" if name == "" else "stack name")
    assert not list(tmp_path.iterdir()), "nothing is written"


@pytest.mark.parametrize("make, needle", [
    (lambda t: _fifo(t / "Pulumi.dev.yaml"), "not a regular file"),
    (lambda t: (t / "Pulumi.dev.yaml").mkdir(), "a folder"),
    (lambda t: (t / "Pulumi.dev.yaml").symlink_to("/dev/null"), "not a regular file"),
])
def test_plan_never_replaces_a_stack_path_that_is_not_a_regular_file(make, needle, tmp_path):
    make(tmp_path)
    kind = os.lstat(tmp_path / "Pulumi.dev.yaml").st_mode
    assert_refused(invoke(["plan", "--stack", "dev", "--project-dir", tmp_path, "--force"]), 2, needle)
    assert os.lstat(tmp_path / "Pulumi.dev.yaml").st_mode == kind


def test_a_stack_file_that_is_a_link_is_written_through_and_the_link_kept(tmp_path):
    real = tmp_path / "shared" / "Pulumi.dev.yaml"
    real.parent.mkdir()
    real.write_text("config:\n  aws:profile: team\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.dev.yaml").symlink_to(real)
    result = invoke(["plan", "--stack", "dev", "--project-dir", project, "--force"])
    assert result.exit_code == 0, result.output
    assert (project / "Pulumi.dev.yaml").is_symlink()
    assert "aws:profile: team" in real.read_text() and "llmdeploy:mode" in real.read_text()


@pytest.mark.parametrize("project", [lambda t: "/proc", lambda t: (t / "f").write_text("x") and t / "f",
                                     lambda t: "/proc/self/nonexistent"])
def test_unusable_project_dir(project, tmp_path):
    assert_refused(invoke(["plan", "--stack", "dev", "--project-dir", project(tmp_path)]), 2)


def test_a_full_disk_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    """ENOSPC as the kernel reports it for the temp file's write (the double: os.fsync raising the real errno,
    which is where a full disk surfaces for a buffered write)."""
    project = tmp_path
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", project]).exit_code == 0
    before = (project / "Pulumi.prod.yaml").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    assert_refused(invoke(["plan", "--mode", "async", "--stack", "prod", "--project-dir", project, "--force"]), 1, "disk is full")
    assert (project / "Pulumi.prod.yaml").read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == ["Pulumi.prod.yaml"]
    assert_refused(invoke(["plan", "--chart", project / "c.png"]), 1, "disk is full")
    assert not (project / "c.png").exists()


def test_write_atomic_on_dev_full_is_refused_not_replaced():
    with pytest.raises(Exception, match="regular file"):
        fileio.write_atomic("/dev/full", b"x")
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")


def test_write_atomic_reports_other_io_errors_as_file_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(FileError, match="Input/output error"):
        fileio.write_atomic(tmp_path / "a.txt", "x")
    assert not list(tmp_path.iterdir())


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from llmdeploy import fileio
    from llmdeploy.cli import main as m
    real = os.fsync
    def slow(fd):
        print("writing", flush=True)
        time.sleep(30)
        real(fd)
    fileio.os.fsync = slow
    m.main(["plan", "--stack", "prod", "--project-dir", sys.argv[1], "--force", "--mode", "async"])
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_removes_the_temp_file_like_ctrl_c(signum, tmp_path):
    """A real signal to a real `llmdeploy plan` process in the middle of writing: no temp file, old file intact."""
    assert invoke(["plan", "--mode", "reserved", "--stack", "prod", "--project-dir", tmp_path]).exit_code == 0
    before = (tmp_path / "Pulumi.prod.yaml").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "the temp file exists while writing"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode in (128 + signum, 1), err  # SIGTERM: 143; Ctrl-C: click's "Aborted!" exit 1
    assert "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pulumi.prod.yaml"], "the temp file is gone"
    assert (tmp_path / "Pulumi.prod.yaml").read_bytes() == before


# -- prices clear: only a folder llmdeploy created ------------------------------------------------------


def _refreshed_cache():
    cache = cat_mod.user_cache_dir()
    shutil.copytree(cat_mod.BUNDLED_DIR, cache, ignore=shutil.ignore_patterns("__*"))
    (cache / CACHE_MARKER).write_text(CACHE_MARKER_TEXT)
    return cache


def test_prices_clear_removes_a_cache_llmdeploy_made():
    cache = _refreshed_cache()
    result = invoke(["prices", "clear"])
    assert result.exit_code == 0 and "Removed" in result.output
    assert not cache.exists()


def test_prices_clear_leaves_a_folder_it_did_not_make(tmp_path):
    cache = cat_mod.user_cache_dir()
    cache.mkdir(parents=True)
    (cache / "thesis.tex").write_text("years of work")
    assert_refused(invoke(["prices", "clear"]), 1, "was not created by", CACHE_MARKER)
    assert (cache / "thesis.tex").read_text() == "years of work"


def test_prices_clear_never_deletes_through_a_link(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / CACHE_MARKER).write_text("forged")
    (precious / "data.csv").write_text("1,2")
    cache = cat_mod.user_cache_dir()
    cache.parent.mkdir(parents=True)
    cache.symlink_to(precious)
    assert_refused(invoke(["prices", "clear"]), 1, "symbolic link")
    assert (precious / "data.csv").exists() and cache.is_symlink()


def test_prices_clear_does_not_follow_links_out_of_the_cache(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    cache = _refreshed_cache()
    (cache / "escape").symlink_to(outside)
    (cache / "escape-file").symlink_to(outside / "keep.txt")
    assert invoke(["prices", "clear"]).exit_code == 0
    assert not cache.exists() and not cache.is_symlink()
    assert (outside / "keep.txt").read_text() == "mine"


def test_a_marker_that_is_a_link_does_not_count(tmp_path):
    cache = cat_mod.user_cache_dir()
    cache.mkdir(parents=True)
    (tmp_path / "m").write_text(CACHE_MARKER_TEXT)
    (cache / CACHE_MARKER).symlink_to(tmp_path / "m")
    (cache / "other").write_text("x")
    assert_refused(invoke(["prices", "clear"]), 1, "was not created by")
    assert (cache / "other").exists()


def test_prices_refresh_will_not_replace_a_folder_it_did_not_make(monkeypatch):
    from llmdeploy import prices

    cache = cat_mod.user_cache_dir()
    cache.mkdir(parents=True)
    (cache / "notes.txt").write_text("mine")
    monkeypatch.setattr(prices, "pricing_client", lambda: pytest.fail("no query before the cache folder is checked"))
    assert_refused(invoke(["prices", "refresh", "--region", "us-east-1"]), 1, "was not created by")
    assert (cache / "notes.txt").exists()


def test_refresh_writes_the_marker(monkeypatch, tmp_path):
    """write_catalog_dir (the one writer of a cache folder) puts the marker in, so clear can later remove it."""
    from llmdeploy import prices

    target = tmp_path / "new"
    prices.write_catalog_dir(target, cat_mod.BUNDLED_DIR, {}, {}, {"hosting": {}, "serverless": {}, "other": {}})
    assert (target / CACHE_MARKER).read_text() == CACHE_MARKER_TEXT
    prices.check_owned_cache(target)
