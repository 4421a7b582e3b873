"""The optional user config file: defaults for any command's options, below flags and environment.

Precedence, highest first: command-line flag, environment variable (``LLMDEPLOY_*``, and
AWS's own ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` for the region), this file, built-in default.

The file is TOML at ``$LLMDEPLOY_CONFIG``, else ``$XDG_CONFIG_HOME/llmdeploy/config.toml``
(``~/.config/llmdeploy/config.toml``). Top-level keys apply to every command that has that
option, however deep; a ``[command]`` table applies to one command, a group's (``[finetune]``) to each of its
subcommands and ``[finetune.up]`` to one; the deeper table wins. The CLI hands each command its values as
click's own ``default_map`` (``default_map`` below), so click's parameter sources say where a value came from::

    region = "eu-west-1"
    owner = "ml-platform"

    [plan]
    mode = "reserved"
    requests_per_day = 50000

Keys are option names with underscores (``requests_per_day``); an unknown key is an error with a
"did you mean". Safety defaults cannot be turned off here: ``yes`` (skip a confirmation, make
``reap`` delete) and ``force`` (overwrite an edited stack file) come only from the command line,
``yes`` also from ``LLMDEPLOY_ASSUME_YES=1`` for one run.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from llmdeploy.errors import ConfigError, did_you_mean

# Options that switch a safety default off: never from a file that applies to every run.
NOT_FROM_FILE = {
    "yes": "it would skip every confirmation and make a plain 'llmdeploy reap' delete; pass --yes, "
           "or set LLMDEPLOY_ASSUME_YES=1 for one run",
    "force": "it would overwrite edited stack files without asking; pass --force on the command line",
}


def config_path() -> Path:
    explicit = os.environ.get("LLMDEPLOY_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "llmdeploy" / "config.toml"


def load_user_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if path.exists() and not path.is_file():
        raise ConfigError(f"user config {path} is not a regular file.", hint="Point LLMDEPLOY_CONFIG at a TOML file.")
    if not path.is_file():
        if os.environ.get("LLMDEPLOY_CONFIG"):
            raise ConfigError(f"LLMDEPLOY_CONFIG names {str(path)!r}, which does not exist.", hint="Create it or unset LLMDEPLOY_CONFIG.")
        return {}
    from llmdeploy.fileio import read_text_utf8

    text = read_text_utf8(path, "user config")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"user config {path} is not valid TOML: {exc}.", hint="Fix it, or move it away to use the defaults.") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"user config {path} has a value Python cannot read: {str(exc).split(';')[0]}.") from None


def check_keys(raw: dict[str, Any], commands: dict[str, Any], *, path: Path | str = "") -> None:
    """ConfigError (one line, with a "did you mean") for a key no command has, and for the keys of ``NOT_FROM_FILE``.

    ``commands`` maps each command name to the set of its option names, or, for a group, to a dict
    of its subcommands mapped the same way. A top-level key must be an option of some command or a
    command's table; a ``[command]`` key an option of that command (of one of its subcommands for a group).
    """
    where = f"user config {path}" if path else "user config"

    def options_of(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set().union(*(options_of(v) for v in node.values())) if node else set()
        return set(node)

    def check_table(table: dict[str, Any], node: Any, section: str) -> None:
        valid = options_of(node)
        subs = node if isinstance(node, dict) else {}
        for key, value in table.items():
            label = f"{key!r}" + (f" in [{section}]" if section else "")
            if key in NOT_FROM_FILE:
                raise ConfigError(f"{where}: {label} is not allowed in a config file: {NOT_FROM_FILE[key]}.")
            if key in subs:
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: {label} must be a table of options for 'llmdeploy {section} {key}'.")
                check_table(value, subs[key], f"{section}.{key}")
                continue
            if isinstance(value, dict):
                hint = did_you_mean(key, subs) if subs else None
                raise ConfigError(f"{where}: [{section + '.' if section else ''}{key}] is not a command."
                                  + (f" Did you mean [{section}.{hint}]?" if hint else ""))
            if key not in valid:
                underscored = key.replace("-", "_")
                if underscored in valid:
                    raise ConfigError(f"{where}: {label} is not an option name; did you mean {underscored!r}?")
                hint = did_you_mean(key, valid)
                scope = f"'llmdeploy {section.replace('.', ' ')}'" if section else "any command"
                raise ConfigError(f"{where}: unknown key {label}: no option of {scope} has that name."
                                  + (f" Did you mean {hint!r}?" if hint else ""),
                                  hint="Keys are option names with underscores (see 'llmdeploy COMMAND --help'); remove or fix it.")

    for key, value in raw.items():
        if key in NOT_FROM_FILE:
            raise ConfigError(f"{where}: {key!r} is not allowed in a config file: {NOT_FROM_FILE[key]}.")
        if key in commands:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be a table of options for 'llmdeploy {key}'.")
            check_table(value, commands[key], key)
            continue
        if isinstance(value, dict):
            hint = did_you_mean(key, commands)
            raise ConfigError(f"{where}: [{key}] is not a command." + (f" Did you mean [{hint}]?" if hint else "")
                              + f" Commands: {', '.join(commands)}.")
        check_table({key: value}, commands, "")


def tables(raw: dict[str, Any], path: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """The file's tables that apply to the command at ``path``, lowest precedence first, each with its label.

    ``("finetune", "up")`` -> the top level ("file"), ``[finetune]`` ("file [finetune]"), ``[finetune.up]``;
    only their plain keys (a sub-table is another command's). A later table's key wins over an earlier one's.
    """
    out = [("file", {k: v for k, v in raw.items() if not isinstance(v, dict)})]
    node: Any = raw
    for depth, name in enumerate(path, start=1):
        node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break
        out.append((f"file [{'.'.join(path[:depth])}]", {k: v for k, v in node.items() if not isinstance(v, dict)}))
    return out


def default_map(raw: dict[str, Any], tree: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """click's ``default_map`` for the command at ``path`` (``()``: the root group), as click nests it.

    ``tree`` is the command tree of ``check_keys`` (a command's option names, or a group's ``{subcommand:
    tree}``). A group's map holds one map per subcommand under its name (click's Context looks a child's map
    up there), so every command, however deep, gets its own map: the options it has, from the tables
    ``tables`` lists for it. A top-level ``region`` thus reaches ``finetune up`` as it reaches ``plan``.
    """
    if isinstance(tree, dict):
        return {name: default_map(raw, sub, (*path, name)) for name, sub in tree.items()}
    merged: dict[str, Any] = {}
    for _, table in tables(raw, path):
        merged.update(table)
    return {key: value for key, value in merged.items() if key in tree}


def table_of(raw: dict[str, Any], path: tuple[str, ...], key: str) -> str | None:
    """Label of the table ``key`` of the command at ``path`` is read from ("file [plan]"), None if none has it."""
    return next((label for label, table in reversed(tables(raw, path)) if key in table), None)
