"""Our own program passes our own guardrails: every policy over what infra/__main__.py registers under mocks.

As the engine does it: resource policies on each resource's inputs, stack policies on every resource's
outputs (here: what the mocks answered, inputs plus id/arn/name), the stack config in PULUMI_CONFIG.
The fine-tune cluster (llmdeploy finetune up) is checked the same way.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from llmdeploy.infra.offline_preview import config_values, make_mocks, run_with_mocks
from llmdeploy.policy.guardrails import POLICIES
from tests.infra.mocks import MODES, run, run_mode, stack_config

from .helpers import policy_resource, resource_args, stack_args, violations

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def check_all(mocks, stack: str, config_map: dict[str, str], monkeypatch,
              pack_config: dict | None = None) -> dict[str, list[str]]:
    """{policy name: violations} over the recorded resources (only policies that found something)."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config_map))
    monkeypatch.setenv("PULUMI_STACK", stack)
    found: dict[str, list[str]] = {}
    stack = stack_args([policy_resource(r.type, r.outputs, r.name) for r in mocks.resources],
                       config=pack_config)
    for policy in POLICIES:
        if isinstance(policy, ResourceValidationPolicy):
            messages = [m for r in mocks.resources for m in violations(policy, resource_args(r.type, r.inputs, r.name))]
        else:
            assert isinstance(policy, StackValidationPolicy)
            messages = violations(policy, stack)
            messages = [] if messages == "not applicable" else messages
        if messages:
            found[policy.name] = messages
    return found


def _stack_env(mode: str, **overrides) -> dict[str, str]:
    return config_values(stack_config(mode, **overrides))


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_as_plan_writes_it_passes_every_policy(mode, monkeypatch):
    """Reserved included: without ingressCidr and certificateArn its load balancer is internal (issue 10's default)."""
    assert check_all(run_mode(mode), f"test-{mode}", _stack_env(mode), monkeypatch) == {}


@pytest.mark.parametrize("overrides", [dict(certificate_arn=CERT), dict(ingress_cidr="10.0.0.0/8"),
                                       dict(certificate_arn=CERT, ingress_cidr="0.0.0.0/0")],
                         ids=["https", "private", "https-to-everyone"])
def test_reserved_over_https_or_on_a_private_cidr_passes_every_policy(overrides, monkeypatch):
    mocks = run(stack_config("reserved", **overrides), stack="test-reserved")
    assert check_all(mocks, "test-reserved", _stack_env("reserved", **overrides), monkeypatch) == {}


def test_reserved_serving_plain_http_to_everyone_is_flagged_by_exactly_that_policy(monkeypatch):
    """ingressCidr 0.0.0.0/0 without a certificate, the user's choice, is a public plain-HTTP endpoint."""
    overrides = dict(ingress_cidr="0.0.0.0/0")
    mocks = run(stack_config("reserved", **overrides), stack="test-reserved")
    found = check_all(mocks, "test-reserved", _stack_env("reserved", **overrides), monkeypatch)
    assert list(found) == ["no-public-plain-http"] and len(found["no-public-plain-http"]) == 1
    assert "serve-http: internet-facing load balancer serve-alb serves plain HTTP on port 80" in found["no-public-plain-http"][0]


@pytest.mark.parametrize("mode", MODES)
def test_the_budget_policy_prices_the_program_like_the_program(mode, monkeypatch):
    """Within its budget the stack passes; a budget a cent under its estimate is a violation."""
    from llmdeploy import budget
    from llmdeploy.catalog import load_catalog

    overrides = {"certificate_arn": CERT} if mode == "reserved" else {}
    estimate = budget.monthly_estimate(stack_config(mode, **overrides), load_catalog())
    mocks = run(stack_config(mode, **overrides), stack=f"b-{mode}")
    env = _stack_env(mode, **overrides)
    assert check_all(mocks, f"b-{mode}", env, monkeypatch, {"maxMonthlyUsd": round(estimate, 2)}) == {}
    found = check_all(mocks, f"b-{mode}", env, monkeypatch, {"maxMonthlyUsd": round(estimate, 2) - 0.01})
    assert list(found) == ["monthly-budget"]


def test_the_fine_tune_cluster_passes_every_policy(monkeypatch):
    from llmdeploy.catalog import load_catalog
    from llmdeploy.infra import finetune_cluster as fc

    args = fc.FinetuneClusterArgs(expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), instance_count=2,
                                  ssh_cidr="203.0.113.7/32", idle_minutes=30, owner="ana", cost_center="ml-42",
                                  stack="ft-test", catalog=load_catalog())
    mocks = make_mocks()
    run_with_mocks(lambda: fc.FinetuneCluster("ft", args).instance_ids, mocks, stack="ft-test", config={})
    assert any(r.type == "aws:ec2/instance:Instance" for r in mocks.resources)
    assert check_all(mocks, "ft-test", {}, monkeypatch) == {}
    # and with SSH opened to the world the cluster would be refused: the component never allows it
    from llmdeploy.errors import UsageError

    with pytest.raises(UsageError):
        fc.FinetuneClusterArgs(expires_at=args.expires_at, ssh_cidr="0.0.0.0/0", catalog=load_catalog()).validate()
