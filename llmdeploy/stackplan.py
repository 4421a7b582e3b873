"""The plan behind a stack, recomputed: plan's comparison for the traffic ``Pulumi.NAME.yaml`` recorded.

``llmdeploy plan --stack NAME`` records its traffic in the stack's ``usage*`` settings
(``plan.stack_config_for``); ``traffic_of`` reads it back into a ``plan.Traffic`` and
``plan_for_stack`` runs ``plan.make_plan`` on it with the stack's model, dtype, region, mode
and term. Nothing of plan's costing is repeated here: ``llmdeploy deploy`` shows exactly
what ``llmdeploy plan`` would print for that traffic today (same catalog, same assumptions).

Not recorded, so plan's defaults are used: ``--loading``, ``--buffer``, ``--instance-type``
restrictions and ``--calibration`` files (the bundled and user-cache calibrations apply). The stack's own instance
type and count are what the offline preview prices.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmdeploy import costs
from llmdeploy.catalog import Catalog
from llmdeploy.enums import Mode
from llmdeploy.errors import ConfigError, InfeasibleError
from llmdeploy.plan import AUTO, Plan, Traffic, make_plan
from llmdeploy.stackconfig import StackConfig


@dataclass(frozen=True)
class StackPlan:
    plan: Plan
    notes: tuple[str, ...]  # what was assumed because the stack did not record it, or why the mode changed


def traffic_of(config: StackConfig) -> tuple[Traffic, tuple[str, ...]]:
    """The traffic plan was given, from the stack's usage settings; ConfigError when it records none.

    Token counts and the latency target written by an older plan (0 here) fall back to plan's
    defaults (``Traffic``'s fields), and the notes say so.
    """
    if config.usage_requests_per_month <= 0:
        raise ConfigError("the stack records no traffic (llmdeploy:usageRequestsPerMonth is 0).",
                          hint="Write it with 'llmdeploy plan --stack NAME' to compare hosting options.")
    default = Traffic()
    missing = [key for key, value in (("usageInputTokens", config.usage_input_tokens),
                                      ("usageOutputTokens", config.usage_output_tokens),
                                      ("usageLatencyTargetMs", config.usage_latency_target_ms)) if value <= 0]
    traffic = Traffic(
        requests_per_day=config.usage_requests_per_month / costs.DAYS_PER_MONTH,
        input_tokens=config.usage_input_tokens or default.input_tokens,
        output_tokens=config.usage_output_tokens or default.output_tokens,
        active_hours=config.usage_active_hours_per_day,
        latency_target_s=config.usage_latency_target_ms / 1000 if config.usage_latency_target_ms else default.latency_target_s,
        peak_rps=config.usage_peak_requests_per_hour / 3600 if config.usage_peak_requests_per_hour else None,
    )
    notes: tuple[str, ...] = ()
    if missing:
        notes = (f"the stack does not record {', '.join(missing)} (written by an older plan): plan's defaults used "
                 f"({default.input_tokens}→{default.output_tokens} tokens, {default.latency_target_s:g} s target)",)
    return traffic, notes


def plan_for_stack(config: StackConfig, cat: Catalog) -> StackPlan:
    """``make_plan`` for the stack's recorded traffic, choosing the stack's own mode and term.

    When plan finds the stack's mode cannot serve that traffic (any more), the comparison is still
    shown, with ``auto`` as the choice and a note saying why. Other errors (no traffic recorded, a
    model plan does not know) propagate as LlmdeployError.
    """
    from llmdeploy.models import load_model_config

    traffic, notes = traffic_of(config)
    model = load_model_config(config.model)

    def planned(mode: Mode | str) -> Plan:
        return make_plan(model, cat=cat, region=config.region, mode=mode, term=config.term, dtype=config.dtype,
                         traffic=traffic)

    try:
        return StackPlan(planned(config.mode), notes)
    except InfeasibleError as exc:
        plan = planned(AUTO)  # raises too when no mode can serve it
        return StackPlan(plan, (*notes, f"plan now finds: {exc.message}"))
