"""Policy arguments as the analyzer builds them, from pulumi_policy's own classes.

pulumi_policy's servicer (policy.py, _PolicyAnalyzerServicer.Analyze / AnalyzeStack) deserializes the engine's
properties and wraps them with ``unknown_checking_proxy``, then builds ``ResourceValidationArgs(type, props, urn,
name, opts, provider, config, stack_tags)`` or ``StackValidationArgs([PolicyResource(...)], config, stack_tags)``.
These helpers do the same with properties we write (or the mocks recorded); a property only known after the
update is the SDK's own sentinel string (``UNKNOWN``), exactly what ``deserialize_properties`` leaves for one.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

UNKNOWN = UNKNOWN_STRING_VALUE


class NotApplicable(Exception):
    pass


class ResourceArgs(ResourceValidationArgs):
    def not_applicable(self, reason=None):
        raise NotApplicable(reason)


class StackArgs(StackValidationArgs):
    def not_applicable(self, reason=None):
        raise NotApplicable(reason)


def options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def urn(token: str, name: str) -> str:
    return f"urn:pulumi:test::llmdeploy::{token}::{name}"


def resource_args(token: str, props: dict[str, Any], name: str = "r", config: dict | None = None) -> ResourceArgs:
    return ResourceArgs(token, unknown_checking_proxy(props), urn(token, name), name, options(), None, config)


def policy_resource(token: str, props: dict[str, Any], name: str = "r", deps: dict | None = None) -> PolicyResource:
    return PolicyResource(token, unknown_checking_proxy(props), urn(token, name), name, options(), None, None, [], deps or {})


def stack_args(resources: list[PolicyResource], config: dict | None = None) -> StackArgs:
    return StackArgs(resources, config)


def violations(policy, args) -> list[str] | str:
    """The messages ``policy`` reports for ``args``, or "not applicable"."""
    found: list[str] = []
    try:
        policy.validate(args, lambda message, urn=None: found.append(message))
    except NotApplicable:
        return "not applicable"
    return found


def by_name(name: str):
    from llmdeploy.policy.guardrails import POLICIES

    return next(p for p in POLICIES if p.name == name)
