"""What a stack costs per month before any resource exists, and the budget it must stay under.

The estimate prices the stack config the way ``llmdeploy plan`` priced the option it chose
(``llmdeploy.plan.planned_line_items``, the figure ``llmdeploy status`` compares the bill with:
instances for the peak, the load balancer, the async KMS key, serverless usage from the ``usage*``
settings, and the CloudWatch alarms, dashboard and agent metrics of the stack's monitoring).
``llmdeploy preview --offline`` prices the resources the program registers with the same
``llmdeploy.costs`` functions; tests/infra/test_budget.py checks the two agree to the cent in every
mode, so the budget the program enforces is the figure people see.

A budget is ``llmdeploy:maxMonthlyUsd`` in the stack (0 = none): ``llmdeploy deploy``, the Pulumi
program itself (before it registers anything) and the policy pack (policy/) refuse a stack whose
estimate is higher. ``--max-monthly-usd`` adds a limit for one run of the CLI; it can only tighten.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmdeploy import costs
from llmdeploy.catalog import Catalog
from llmdeploy.errors import LlmdeployError
from llmdeploy.plan import planned_line_items
from llmdeploy.stackconfig import NAMESPACE, StackConfig

BUDGET_KEY = f"{NAMESPACE}:maxMonthlyUsd"


class OverBudgetError(LlmdeployError):
    """The estimate is over a budget: nothing was (or will be) created."""


def monthly_estimate(config: StackConfig, cat: Catalog) -> float:
    """What ``config`` deploys costs per month, priced as plan priced that option (``plan.planned_line_items``)."""
    return costs.total(planned_line_items(config, cat))


@dataclass(frozen=True)
class Limit:
    usd: float
    source: str  # where it was set, for the message: "llmdeploy:maxMonthlyUsd in Pulumi.dev.yaml"


def limits(config: StackConfig, *, origin: str, cli_limit: float | None = None) -> list[Limit]:
    """The budgets that apply: the stack's own (when not 0) and one from the command line."""
    found = [Limit(float(config.max_monthly_usd), f"{BUDGET_KEY} in {origin}")] if config.max_monthly_usd else []
    if cli_limit is not None:
        found.append(Limit(float(cli_limit), "--max-monthly-usd"))
    return found


def check(monthly_usd: float, applicable: list[Limit], *, stack: str) -> None:
    """OverBudgetError (one line) when ``monthly_usd`` is over any limit; rounding to the cent first,
    as every figure shown is rounded, so an estimate shown as equal to the budget passes."""
    for limit in sorted(applicable, key=lambda lim: lim.usd):
        if round(monthly_usd, 2) > limit.usd:
            raise OverBudgetError(
                f"stack {stack!r} would cost ${monthly_usd:,.2f}/month, over the budget of ${limit.usd:,.2f}/month "
                f"({limit.source}); nothing was created.",
                hint=f"Plan a cheaper option ('llmdeploy plan --stack {stack}') or raise the budget.")


def check_stack(config: StackConfig, cat: Catalog, *, stack: str, origin: str) -> float:
    """The stack's monthly estimate, after checking it against the stack's own budget."""
    monthly = monthly_estimate(config, cat)
    check(monthly, limits(config, origin=origin), stack=stack)
    return monthly
