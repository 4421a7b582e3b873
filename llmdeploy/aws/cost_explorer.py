"""Month-to-date cost of a stack's tagged resources, from AWS Cost Explorer (``llmdeploy status``).

- Cost Explorer attributes cost to a tag only once the tag key is an *active cost-allocation tag*
  (Billing console, or ``UpdateCostAllocationTagsStatus``), and only from then on. ``tag_status`` asks
  ``ListCostAllocationTags`` first: an inactive or unseen key means any figure would be a misleading $0.
- ``month_to_date`` calls ``GetCostAndUsage`` for the current UTC month (Cost Explorer's days are UTC; the end
  date is exclusive, so tomorrow includes today's partial, estimated data), filtered on the ``llmdeploy:stack``
  tag with ``AmortizedCost``: a reserved instance's fee is booked to the account, not to the tagged instance,
  under UnblendedCost; amortized cost spreads it over the usage it covers, which carries the tag, and is what
  plan's effective hourly RI prices mean. On-demand usage is the same under both.
- The API lives in us-east-1 (ce.us-east-1.amazonaws.com; cn-northwest-1 in the China partition) and AWS bills
  $0.01 per request (each page counts): ``llmdeploy status`` makes two, and ``--no-cost`` none.

IAM: ``IAM_ACTIONS`` below.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from llmdeploy.aws.clients import client, cloud_error
from llmdeploy.tags import STACK as STACK_TAG

COST_METRIC = "AmortizedCost"
IAM_ACTIONS = ("ce:ListCostAllocationTags", "ce:GetCostAndUsage")
ACTIVATE_HINT = ("aws ce update-cost-allocation-tags-status --cost-allocation-tags-status "
                 f"TagKey={STACK_TAG},Status=Active")


def endpoint_region(region: str) -> str:
    return "cn-northwest-1" if region.startswith("cn-") else "us-east-1"


def tag_status(region: str, key: str = STACK_TAG) -> str | None:
    """'Active', 'Inactive', or None when Cost Explorer has not seen the key on any resource yet."""
    ce = client("ce", endpoint_region(region))
    rows, token = [], None
    while True:
        try:
            page = ce.list_cost_allocation_tags(TagKeys=[key], Type="UserDefined", **({"NextToken": token} if token else {}))
        except Exception as exc:  # noqa: BLE001 - one line for any AWS failure
            raise cloud_error(exc, "reading cost-allocation tags (ce:ListCostAllocationTags)") from None
        rows += [r for r in page.get("CostAllocationTags", []) if r.get("TagKey") == key]
        token = page.get("NextToken")
        if not token:
            break
    return rows[0].get("Status") if rows else None


@dataclass(frozen=True)
class MonthToDate:
    start: dt.date
    end: dt.date  # exclusive
    amount: float
    unit: str
    estimated: bool


def month_bounds(now: dt.datetime) -> tuple[dt.date, dt.date, dt.date]:
    """(first day of the month, the exclusive end to ask for: tomorrow, first day of next month), UTC."""
    today = now.astimezone(dt.UTC).date()
    first = today.replace(day=1)
    days = calendar.monthrange(today.year, today.month)[1]
    next_first = first + dt.timedelta(days=days)
    return first, min(today + dt.timedelta(days=1), next_first), next_first


def month_to_date(stack: str, region: str, *, now: dt.datetime) -> MonthToDate:
    first, end, _ = month_bounds(now)
    ce = client("ce", endpoint_region(region))
    amount, unit, estimated, token = 0.0, "USD", False, None
    while True:
        kwargs = dict(TimePeriod={"Start": first.isoformat(), "End": end.isoformat()}, Granularity="MONTHLY",
                      Metrics=[COST_METRIC],
                      Filter={"Tags": {"Key": STACK_TAG, "Values": [stack], "MatchOptions": ["EQUALS"]}})
        try:
            page = ce.get_cost_and_usage(**kwargs, **({"NextPageToken": token} if token else {}))
        except Exception as exc:  # noqa: BLE001
            raise cloud_error(exc, "reading month-to-date cost (ce:GetCostAndUsage)") from None
        for period in page.get("ResultsByTime", []):
            total = period.get("Total", {}).get(COST_METRIC)
            if total:
                amount += float(total.get("Amount", 0))
                unit = total.get("Unit") or unit
            estimated = estimated or bool(period.get("Estimated"))
        token = page.get("NextPageToken")
        if not token:
            return MonthToDate(first, end, amount, unit, estimated)
