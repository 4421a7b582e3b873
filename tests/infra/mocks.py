"""Helpers for the infra tests: run the real Pulumi program under Pulumi's mocks.

Each ``run`` sets fresh mocks (``llmdeploy.infra.offline_preview.run_program``),
feeds the stack config as ``llmdeploy:*`` config and returns the recording mocks,
whose ``resources`` list every resource the program registered with its type and
inputs (wire names: camelCase, as a provider would receive them).
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

from llmdeploy.policy.guardrails import is_taggable  # noqa: F401 - whether a type takes tags: the policy pack's rule
from llmdeploy.stackconfig import StackConfig

# One valid stack per mode, in the bundled catalog's us-east-1.
BASE = {
    "realtime": dict(mode="realtime", instance_type="ml.g4dn.xlarge", instance_count=3, min_instances=1),
    "async": dict(mode="async", instance_type="ml.g4dn.xlarge", instance_count=2, min_instances=0,
                  usage_active_hours_per_day=8, async_max_concurrent_invocations=4),
    "serverless": dict(mode="serverless", model="flan-t5-small", serverless_memory_mb=4096, serverless_max_concurrency=10,
                       usage_requests_per_month=60000, usage_ms_per_request=800, usage_bytes_per_request=1500),
    "reserved": dict(mode="reserved", instance_type="g4dn.xlarge", instance_count=2, min_instances=2, term="1y"),
}
MODES = tuple(BASE)
OWNER, COST_CENTER = "ml-platform", "cc-42"


def stack_config(mode: str, **overrides) -> StackConfig:
    return StackConfig(**{**BASE[mode], "owner": OWNER, "cost_center": COST_CENTER, **overrides})


def run(config: StackConfig | dict[str, str], stack: str = "test", artifact_dir: str | None = None):
    """``artifact_dir``: where the program builds model.tar.gz (kept; by default a folder removed after the run)."""
    from llmdeploy.infra.offline_preview import run_program

    with warnings.catch_warnings():
        # pulumi_aws warns about its own deprecated classes as its modules load: not ours to fix.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
        return run_program(config, stack=stack, artifact_dir=artifact_dir)


@functools.cache
def run_mode(mode: str):
    """The default stack of ``mode``, run once per test session (read-only use)."""
    return run(stack_config(mode), stack=f"test-{mode}")


def of_type(mocks, token: str) -> list:
    return [r for r in mocks.resources if r.type == token]


def one(mocks, token: str):
    found = of_type(mocks, token)
    assert len(found) == 1, f"expected exactly one {token}, found {len(found)}"
    return found[0]


def custom(mocks) -> list:
    return [r for r in mocks.resources if r.custom]


def policy_documents(mocks) -> list[tuple[str, dict]]:
    """(resource name, parsed document) for every inline policy and trust policy."""
    docs = []
    for r in mocks.resources:
        for key in ("policy", "assumeRolePolicy"):
            if r.type.startswith("aws:iam/") and isinstance(r.inputs.get(key), str):
                docs.append((f"{r.name}.{key}", json.loads(r.inputs[key])))
    return docs


def statements(doc: dict) -> list[dict]:
    st = doc["Statement"]
    return st if isinstance(st, list) else [st]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]
