"""What one billable thing costs per month, priced from the catalog.

The plan's monthly figure for an option is the sum of these line items, and
``llmdeploy preview --offline`` prices each resource the Pulumi program would
create with the same functions, so the two agree by construction when the
program creates what the plan assumed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from llmdeploy import catalog as cat_mod
from llmdeploy.catalog import Catalog
from llmdeploy.enums import Term
from llmdeploy.errors import UsageError

# AWS's own convention (Pricing Calculator, price pages): a month is 730 hours.
HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
GB = 1e9  # SageMaker serverless bills data processed per GB (10^9 bytes) and memory per GB configured


@dataclass(frozen=True)
class LineItem:
    kind: str  # ec2-instance | root-volume | load-balancer | public-ipv4 | sagemaker-instance | serverless-compute
    #          | serverless-data | kms-key | cloudwatch-alarms | cloudwatch-dashboard | cloudwatch-metrics
    description: str
    quantity: float  # units per month
    unit: str
    unit_usd: float
    source: str  # catalog source key the unit price came from

    @property
    def monthly_usd(self) -> float:
        return self.quantity * self.unit_usd


def usd(x: float | None, digits: int = 2, *, missing: str = "-") -> str:
    """$1,234.50; ``missing`` where there is no figure ("-": none applies, "?": unknown, e.g. no catalog price)."""
    return missing if x is None else f"${x:,.{digits}f}"


def total(items: list[LineItem] | tuple[LineItem, ...]) -> float:
    """The monthly sum, exactly rounded (``math.fsum``): the same items give the same total in any order, so plan
    (items by mode), the offline preview (items by resource, in registration order) and the budget agree to the
    cent even on a half cent (an ALB's 730 h × $0.0225 = $16.425)."""
    return math.fsum(i.monthly_usd for i in items)


def ec2_instances(cat: Catalog, region: str, instance_type: str, count: int, term: str) -> LineItem:
    """Always-on EC2 instances: a reservation is paid every hour whether used or not."""
    price = cat_mod.ec2_price(cat, region, instance_type)
    hourly = price.hourly(term)
    if hourly is None:
        raise UsageError(f"the catalog has no {term} price for {instance_type} in {region}.", hint="Use --term on-demand.")
    return LineItem("ec2-instance", f"{count} × {instance_type} ({Term(term).label})", count * HOURS_PER_MONTH,
                    "instance-hour", hourly, price.term_source(term).key)


def root_volumes(cat: Catalog, region: str, count: int, size_gb: int) -> LineItem:
    """The gp3 root volume every self-hosted instance boots from, billed per GB-month provisioned (baseline IOPS free)."""
    other = cat_mod.other_prices(cat, region)
    if other.ebs_gp3_gb_month is None or other.ebs_source is None:
        raise UsageError(f"the catalog has no EBS gp3 price for {region}.", hint="Run 'llmdeploy prices refresh' or pick another --region.")
    return LineItem("root-volume", f"{count} × {size_gb} GB gp3 root volume", count * size_gb, "GB-month", other.ebs_gp3_gb_month,
                    other.ebs_source.key)


def load_balancer(cat: Catalog, region: str) -> LineItem:
    other = cat_mod.other_prices(cat, region)
    return LineItem("load-balancer", "application load balancer (hours; LCUs not counted)", HOURS_PER_MONTH, "hour",
                    other.alb_hourly, other.source.key)


def load_balancer_ipv4(cat: Catalog, region: str) -> LineItem:
    """The public IPv4 addresses of an internet-facing ALB: one per subnet (Availability Zone) it spans, every hour."""
    other = cat_mod.other_prices(cat, region)
    if other.public_ipv4_hourly is None or other.public_ipv4_source is None or not other.availability_zones:
        raise UsageError(f"the catalog has no public IPv4 price or Availability Zone count for {region}.",
                         hint="Run 'llmdeploy prices refresh' or pick another --region.")
    azs = other.availability_zones
    return LineItem("public-ipv4", f"{azs} public IPv4 addresses of the load balancer (one per Availability Zone)",
                    azs * HOURS_PER_MONTH, "address-hour", other.public_ipv4_hourly, other.public_ipv4_source.key)


def reserved_fleet(cat: Catalog, region: str, instance_type: str, count: int, term: str, root_volume_gb: int, *,
                   internet_facing: bool) -> list[LineItem]:
    """Everything a self-hosted (reserved mode) endpoint bills: instances, their root volumes, the ALB and, when it
    is internet-facing, its public IPv4 addresses (an internal ALB has private addresses only, which are free)."""
    items = [ec2_instances(cat, region, instance_type, count, term), root_volumes(cat, region, count, root_volume_gb),
             load_balancer(cat, region)]
    return items + [load_balancer_ipv4(cat, region)] if internet_facing else items


def sagemaker_instances(cat: Catalog, region: str, instance_type: str, count: int, hours_per_day: float = 24) -> LineItem:
    """SageMaker hosting instances (real-time, or async while scaled out) for ``hours_per_day``."""
    price = cat_mod.hosting_price(cat, region, instance_type)
    hours = count * hours_per_day * DAYS_PER_MONTH
    when = "always on" if hours_per_day >= 24 else f"{hours_per_day:g} h/day, scaled to zero otherwise"
    return LineItem("sagemaker-instance", f"{count} × {price.instance_type} ({when})", hours, "instance-hour",
                    price.hourly, price.source.key)


def kms_key(cat: Catalog, region: str) -> LineItem:
    other = cat_mod.other_prices(cat, region)
    return LineItem("kms-key", "customer managed KMS key", 1, "key-month", other.kms_key_monthly, other.source.key)


def serverless(cat: Catalog, region: str, memory_mb: int, requests_per_month: float, ms_per_request: float,
               bytes_per_request: float) -> list[LineItem]:
    """Serverless inference: memory-seconds of compute plus data processed in and out."""
    price = cat_mod.serverless_price(cat, region)
    gb_seconds = requests_per_month * (ms_per_request / 1000) * (memory_mb / 1024)
    gb_processed = requests_per_month * bytes_per_request / GB
    return [
        LineItem("serverless-compute", f"serverless compute at {memory_mb} MB", gb_seconds, "GB-second",
                 price.usd_per_gb_second, price.source.key),
        LineItem("serverless-data", "serverless data processed (in + out)", gb_processed, "GB", price.usd_per_gb_processed,
                 price.source.key),
    ]


def monitoring(cat: Catalog, region: str, *, alarm_metrics: int, dashboards: int, custom_metrics: int) -> list[LineItem]:
    """CloudWatch alarms, dashboards and custom metrics a stack creates (before the account's free tier).

    Empty when the catalog row states no CloudWatch prices: nothing is guessed, and the caller says so.
    """
    prices = cat_mod.other_prices(cat, region).cloudwatch
    if prices is None:
        return []
    items = [LineItem("cloudwatch-alarms", f"{alarm_metrics} CloudWatch alarm metric(s), standard resolution",
                      alarm_metrics, "alarm-metric-month", prices.alarm_metric_monthly, prices.source.key),
             LineItem("cloudwatch-dashboard", "CloudWatch dashboard", dashboards, "dashboard-month",
                      prices.dashboard_monthly, prices.source.key)]
    if custom_metrics:
        items.append(LineItem("cloudwatch-metrics", f"{custom_metrics} custom metrics (CloudWatch agent, GPU)",
                              custom_metrics, "metric-month", prices.custom_metric_monthly, prices.source.key))
    return [i for i in items if i.quantity]


def instances_for(peak_rps: float, per_instance_rps: float) -> int:
    """Instances needed to serve a peak, at least one."""
    if per_instance_rps <= 0:
        return 0
    return max(1, math.ceil(peak_rps / per_instance_rps - 1e-9))


def planned_to_date(monthly_usd: float, now: dt.datetime) -> tuple[float, float]:
    """(what the plan's monthly figure has cost since the month began, hours elapsed), UTC months.

    The monthly figure is an hourly rate times 730 hours, so the plan to date is that rate times the hours
    elapsed: a 31-day month ends at 744/730 of the monthly figure, as the bill would.
    """
    now = now.astimezone(dt.UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    hours = (now - start).total_seconds() / 3600
    return monthly_usd * hours / HOURS_PER_MONTH, hours
