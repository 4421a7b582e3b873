"""Isolation shared by every test: no user config, no refreshed price cache, no LLMDEPLOY_* settings from the shell."""

from __future__ import annotations

import pytest

# Settings a developer may have exported; tests must see the built-in defaults unless they set one.
_USER_SETTINGS = (
    "LLMDEPLOY_CONFIG", "LLMDEPLOY_REGION", "LLMDEPLOY_MODEL", "LLMDEPLOY_REVISION", "LLMDEPLOY_DTYPE", "LLMDEPLOY_MODE", "LLMDEPLOY_STACK",
    "LLMDEPLOY_OWNER", "LLMDEPLOY_COST_CENTER", "LLMDEPLOY_CATALOG", "LLMDEPLOY_BUNDLED_PRICES", "AWS_REGION",
    "LLMDEPLOY_ASSUME_YES",
    "LLMDEPLOY_MAX_MONTHLY_USD", "PULUMI_BACKEND_URL", "PULUMI_STACK", "PULUMI_CONFIG",
)


@pytest.fixture(autouse=True)
def _isolated_user_state(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(home / "cache"))
    for name in _USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    from llmdeploy.catalog import load_catalog

    load_catalog.cache_clear()
    yield
    load_catalog.cache_clear()
