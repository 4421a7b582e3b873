"""The optional user config file: defaults for any command's options, below flags and environment.

Precedence, highest first: command-line flag, environment variable (``LLMDEPLOY_*``, and
AWS's own ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` for the region), this file, built-in default.

The file is TOML at ``$LLMDEPLOY_CONFIG``, else ``$XDG_CONFIG_HOME/llmdeploy/config.toml``
(``~/.config/llmdeploy/config.toml``). Top-level keys apply to every command that has that
option; a ``[command]`` table applies to one command (``[finetune.up]`` to a subcommand)::

    region = "eu-west-1"
    owner = "ml-platform"

    [plan]
    mode = "reserved"
    requests_per_day = 50000
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from llmdeploy.errors import ConfigError


def config_path() -> Path:
    explicit = os.environ.get("LLMDEPLOY_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "llmdeploy" / "config.toml"


def load_user_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.is_file():
        if os.environ.get("LLMDEPLOY_CONFIG"):
            raise ConfigError(f"LLMDEPLOY_CONFIG names {str(path)!r}, which does not exist.", hint="Create it or unset LLMDEPLOY_CONFIG.")
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"user config {path} is not valid TOML: {exc}.", hint="Fix it, or move it away to use the defaults.") from None


def default_map(raw: dict[str, Any], commands: list[str]) -> dict[str, Any]:
    """click's ``default_map`` for the root group: shared keys copied under each command, command tables on top."""
    shared = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    out: dict[str, Any] = {}
    for name in commands:
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"user config key {name!r} must be a table of options for 'llmdeploy {name}'.")
        merged = {**shared, **{k: v for k, v in section.items() if not isinstance(v, dict)}}
        for sub, table in section.items():
            if isinstance(table, dict):
                merged[sub] = {**shared, **table}
        out[name] = merged
    return out
