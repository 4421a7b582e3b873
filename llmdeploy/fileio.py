"""Reading and writing the user's files: UTF-8 or one clear line, checked output paths, atomic writes.

Every command that reads a file a person may have written (a model's config.json,
Pulumi.NAME.yaml, the user config, a price cache) reads it with :func:`read_text_utf8`;
every command that writes one checks the path with :func:`check_output_path` before it
starts its work, and writes with :func:`write_atomic`. Problems are ``LlmdeployError``s:
one line, caught only in the CLI.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from llmdeploy.errors import ConfigError, FileError, UsageError


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def read_text_utf8(path: str | os.PathLike, what: str) -> str:
    """The text of ``path``; ConfigError (one line naming ``what`` and the fix) if it is unreadable or not UTF-8."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None  # missing or unreadable: reading says which, below
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # A FIFO, a device, a socket: reading could block for ever or never end.
        raise ConfigError(f"{what} {path} is not a regular file (a FIFO, device or socket); give a file path.")
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a file.") from None
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {_reason(exc)}.") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}).",
            hint="Save it as UTF-8.",
        ) from None


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """The file to write for ``path``, checked before any work: UsageError if it cannot be written there.

    Refuses, each with one line: an existing path that is not a regular file (a folder, a FIFO, a
    device, a socket: llmdeploy replaces only regular files), a path under a regular file, and a
    folder where no file can be created (read-only, /proc, no permission; probed by creating and
    removing an empty temp file, which is the only test that holds for root too). A symbolic link to
    a regular file is followed: the file it points to is replaced and the link kept.
    """
    path = Path(path).expanduser()
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.exists() and not target.is_file():
            raise UsageError(f"{what} {str(path)!r} links to {target}, which is not a regular file; give a file path.")
        path = target
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # a component is a file: found below
    except OSError as exc:
        raise UsageError(f"cannot use {what} {str(path)!r}: {_reason(exc)}.") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise UsageError(f"{what} {str(path)!r} is {kind}; llmdeploy only replaces regular files. Give a file path.")
    # The nearest existing ancestor must be a folder we can create files in.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link in the way
            raise UsageError(f"cannot write {what} {str(path)!r}: {parent} is a broken symbolic link.")
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {what} {str(path)!r}: {parent} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".llmdeploy-probe-", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {str(path)!r}: {parent} is not writable ({_reason(exc)}).") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_atomic(path: str | os.PathLike, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    The rename is atomic on POSIX, so an interrupted write (Ctrl-C, or SIGTERM: the CLI turns it
    into SystemExit) leaves the old file (or nothing) and no temp file, never a truncated one.
    Only a regular file is replaced (a symbolic link to one is written through); a full disk or
    another I/O error is one line (FileError), with the old file untouched.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise UsageError(f"{str(path)!r} is not a regular file; llmdeploy only replaces regular files.")
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FileError(f"cannot write {path}: the disk is full ({_reason(exc)}); nothing was changed.",
                            hint="Free some space and run it again.") from None
        raise FileError(f"cannot write {path}: {_reason(exc)}; nothing was changed.") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path
