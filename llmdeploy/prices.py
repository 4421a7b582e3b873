"""Live prices: read the AWS Price List API and write a refreshed catalog into the user cache.

``llmdeploy prices refresh`` calls :func:`refresh`; ``prices show`` / ``prices clear`` call
:func:`describe` and :func:`clear`. boto3 is imported inside functions only, so the planning
path (``llmdeploy plan``) never imports it.

What is read (``pricing:GetProducts``, endpoint in us-east-1, paginated). Every filter is TERM_MATCH
(one of the five Filter types in botocore's ``pricing`` model, "only products that match all filters
are returned"), and every Field is an attribute name that the genuine items in tests/aws/pricelist/
carry, with the value they carry:

- EC2 (``AmazonEC2``), one query per region and catalog instance type: ``regionCode``, ``instanceType``,
  ``operatingSystem=Linux``, ``tenancy=Shared``, ``preInstalledSw=NA``, ``capacitystatus=Used``,
  ``licenseModel=No License required``, ``marketoption=OnDemand``, ``operation=RunInstances``.
  ``marketoption`` is what separates an on-demand product from a Capacity Block one (same type,
  region, tenancy and usage type, operation ``RunInstances:CB``, on-demand price $0.00);
  ``capacitystatus=Used`` drops capacity-reservation products. ``on_demand`` = the OnDemand "Hrs"
  price; ``ri_1y`` / ``ri_3y`` = the term under ``terms.Reserved`` of the same item whose
  termAttributes are LeaseContractLength 1yr/3yr, OfferingClass standard, PurchaseOption No Upfront, as
  an effective hourly rate (upfront fee / term hours + hourly fee).
- SageMaker real-time hosting (``AmazonSageMaker``): ``regionCode``, ``productFamily=ML Instance``,
  ``component=Hosting``; a row per usage type ``<PREFIX>-Host:ml.<type>`` (OnDemand "Hrs" price).
- SageMaker serverless compute: ``regionCode``, ``productFamily=ML Serverless``; usage types
  ``<PREFIX>-ServerlessInf:Mem-<N>GB`` price one second of an N GB endpoint, so usd_per_gb_second =
  price / N. Data processed: ``regionCode``, ``operation=Invoke-Endpoint``; usage types
  ``<PREFIX>-Hst:Data-Bytes-In`` / ``-Out`` (USD per GB; the catalog keeps one rate for IN and OUT).

Usage types are parsed as AWS writes them: an optional region prefix, a dash, the usage kind, a
colon, the detail (``USE1-Hst:Data-Bytes-In``, ``USW2-BoxUsage:g5.2xlarge``, ``BoxUsage:p5.48xlarge``).
The region itself is read from ``regionCode``, never from the prefix (see USAGE_PREFIXES).

A refresh never replaces a known price with nothing: a row the API does not price keeps its previous
value (the earlier refresh's, else the bundled snapshot's), a Reserved term the API does not return
keeps the previous rate with its own source (``ri_1y_source``), and the summary says which and why.

The pure ``parse_*`` functions take one PriceList item (the JSON string the API returns) and are
what the tests feed with genuine items.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmdeploy import catalog as cat_mod
from llmdeploy.enums import Term
from llmdeploy.errors import CloudError, LlmdeployError, UnknownChoiceError

PRICING_REGION = "us-east-1"  # the Price List API lives in us-east-1 (and ap-south-1), whatever region is priced
SOURCE_URL = "https://pricing.us-east-1.amazonaws.com (AWS Price List API)"
SOURCE_PREFIX = "aws-price-list-"
TERM_HOURS = {"1yr": 8760, "3yr": 26280}  # a Reserved term's LeaseContractLength, in hours
RI_TERMS = {"ri_1y": "1yr", "ri_3y": "3yr"}  # catalog field (llmdeploy.enums.Term.price_field) -> LeaseContractLength
PRICE_FILES = ("sources.toml", "ec2_prices.toml", "sagemaker_prices.toml")

# The region prefix of a usage type, as AWS writes it. Parsing never depends on this table (the region
# comes from regionCode); it documents what was checked and lets the tests build items per region.
# EC2: the AmazonEC2 offer files of 2026-09-10 (us-east-1 has no prefix: "BoxUsage:p5.48xlarge";
# "USW2-BoxUsage:..."; "EU-BoxUsage:..." - the legacy EU-, not EUW1-). SageMaker: "USE1-Host:ml.*" and
# "USE1-ServerlessInf:Mem-3GB" in Price List readings, "USW2-Hst:Data-Bytes-Out" in AWS's own usage-type
# examples (AWS ML blog, "Analyze Amazon SageMaker spend ... Part 5: Hosting"); eu-west-1 "EU-" follows
# AWS's prefix for EU (Ireland) in every service read here (EC2, Systems Manager "EU-MI-AdvInstances-Hrs").
USAGE_PREFIXES = {
    "AmazonEC2": {"us-east-1": "", "us-west-2": "USW2", "eu-west-1": "EU"},
    "AmazonSageMaker": {"us-east-1": "USE1", "us-west-2": "USW2", "eu-west-1": "EU"},
}

EC2_NOTE = (
    "Read from the AWS Price List API (pricing:GetProducts, service AmazonEC2) by 'llmdeploy prices refresh'. "
    "Products: operatingSystem Linux, tenancy Shared, preInstalledSw NA, capacitystatus Used, licenseModel "
    "No License required, marketoption OnDemand, operation RunInstances (usage type [PREFIX-]BoxUsage:TYPE). "
    "on_demand = the OnDemand term's USD per hour. ri_1y / ri_3y = the Reserved term with LeaseContractLength "
    "1yr / 3yr, OfferingClass standard, PurchaseOption No Upfront (STANDARD Reserved Instance, NO UPFRONT), "
    "effective USD per hour (any upfront fee / term hours + the hourly fee). Where the API returned no such term "
    "but an earlier catalog had one, that rate is kept and the row names its source in ri_1y_source / ri_3y_source; "
    "a missing ri_* means no catalog ever had one for that type and region."
)
SAGEMAKER_NOTE = (
    "Read from the AWS Price List API (pricing:GetProducts, service AmazonSageMaker) by 'llmdeploy prices refresh'. "
    "hosting = productFamily ML Instance, component Hosting, usage type PREFIX-Host:ml.TYPE: SageMaker real-time "
    "inference on-demand USD per instance-hour (asynchronous inference bills the same per-instance-hour price). "
    "serverless usd_per_gb_second = the on-demand price of usage type PREFIX-ServerlessInf:Mem-NGB (productFamily "
    "ML Serverless, USD per second of an N GB endpoint) divided by N (the highest if the sizes differ); "
    "usd_per_gb_processed = the operation Invoke-Endpoint PREFIX-Hst:Data-Bytes-In / -Out price per GB (the higher "
    "of the two if they differ). A serverless row is refreshed only when both rates were returned. Provisioned "
    "concurrency is not read."
)


# -- usage types ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UsageType:
    """``USE1-Hst:Data-Bytes-In`` -> prefix "USE1", kind "Hst", detail "Data-Bytes-In"."""

    prefix: str  # "" where AWS writes none (EC2 in us-east-1)
    kind: str  # BoxUsage, DedicatedUsage, UnusedBox, Host, AsyncInf, Hst, ServerlessInf, ...
    detail: str  # the instance type, "Data-Bytes-In", "Mem-4GB", ...

    def __str__(self) -> str:
        return f"{self.prefix + '-' if self.prefix else ''}{self.kind}:{self.detail}"


# A region prefix is upper case letters and at most one digit (USE1, USW2, EU, EUC1, APN1, UGW1); the kind
# starts with a letter and has lower case in it, so "BoxUsage:x" is read as no prefix.
_USAGE_TYPE = re.compile(r"^(?:(?P<prefix>[A-Z]{2,4}[0-9]?)-)?(?P<kind>[A-Za-z][A-Za-z0-9.-]*):(?P<detail>[^:\s]+)$")


def parse_usage_type(text: str) -> UsageType | None:
    """Split a Price List ``usagetype`` into region prefix, kind and detail; None if it has no ``kind:detail``."""
    m = _USAGE_TYPE.match(str(text or ""))
    if not m:
        return None
    return UsageType(m.group("prefix") or "", m.group("kind"), m.group("detail"))


# -- parsing one PriceList item ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ec2Offer:
    region: str
    instance_type: str
    on_demand: float
    ri_1y: float | None
    ri_3y: float | None
    sku: str = ""
    usage_type: str = ""
    reserved_terms: int = 0  # how many Reserved terms the item carried (0: none at all)


@dataclasses.dataclass(frozen=True)
class HostingOffer:
    region: str
    instance_type: str  # ml.*
    hourly: float
    sku: str = ""
    usage_type: str = ""


@dataclasses.dataclass(frozen=True)
class ServerlessOffer:
    """One serverless-related price: kind "compute" (USD per GB-second) or "data-in" / "data-out" (USD per GB)."""

    region: str
    kind: str
    usd: float
    sku: str = ""
    usage_type: str = ""


def _load(item: str | Mapping) -> dict:
    return json.loads(item) if isinstance(item, (str, bytes)) else dict(item)


def _attrs(doc: Mapping) -> dict:
    return dict(doc.get("product", {}).get("attributes", {}))


def _usd(dim: Mapping) -> float | None:
    """A dimension's USD price; None where AWS (or a recording of it) wrote something that is not a number."""
    raw = dim.get("pricePerUnit", {}).get("USD")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _unit(dim: Mapping) -> str:
    return str(dim.get("unit", "")).strip().lower()


def _is_hours(unit: str) -> bool:
    return unit.lower() in ("hrs", "hr", "hours", "hour")


def _on_demand_dims(doc: Mapping) -> list[Mapping]:
    return [d for t in doc.get("terms", {}).get("OnDemand", {}).values() for d in t.get("priceDimensions", {}).values()]


def on_demand_hourly(doc: Mapping) -> float | None:
    """The OnDemand term's USD/hour (the "Hrs" dimension); None if there is none or it is zero."""
    for dim in _on_demand_dims(doc):
        price = _usd(dim)
        if _is_hours(_unit(dim)) and price:
            return price
    return None


def reserved_effective_hourly(doc: Mapping, lease: str, *, offering_class: str = "standard",
                              purchase_option: str = "No Upfront") -> float | None:
    """Effective USD/hour of the Reserved term with these termAttributes (upfront / term hours + hourly)."""
    hours = TERM_HOURS[lease]
    for term in doc.get("terms", {}).get("Reserved", {}).values():
        ta = term.get("termAttributes", {})
        if (str(ta.get("LeaseContractLength", "")).lower() != lease
                or str(ta.get("OfferingClass", "")).lower() != offering_class.lower()
                or str(ta.get("PurchaseOption", "")).lower() != purchase_option.lower()):
            continue
        hourly = upfront = 0.0
        seen = False
        for dim in term.get("priceDimensions", {}).values():
            price = _usd(dim)
            if price is None:
                continue
            unit = _unit(dim)
            if _is_hours(unit):
                hourly += price
                seen = True
            elif unit == "quantity":  # the "Upfront Fee" dimension
                upfront += price
                seen = True
        if seen and (hourly or upfront):
            return round(upfront / hours + hourly, 6)
    return None


# The attribute values of a plain Linux, shared-tenancy, on-demand EC2 product. The query asks for exactly
# these (plan_queries), and the parser checks them again (a filter the API ignored must not let a Windows,
# dedicated, capacity-reservation or Capacity Block price through).
EC2_REQUIRED = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
    "marketoption": "OnDemand",
    "operation": "RunInstances",
}
# Items recorded before AWS added marketoption (2018, 2020) lack it; a missing attribute is not a mismatch.
_EC2_OPTIONAL = frozenset({"marketoption"})


def parse_ec2_product(item: str | Mapping) -> Ec2Offer | None:
    """One AmazonEC2 PriceList item -> an Ec2Offer, or None for anything that is not plain Linux, shared
    tenancy, no pre-installed software, capacity Used, license included, on-demand market, usage type
    ``[PREFIX-]BoxUsage:<instanceType>`` (Windows, BYOL, SQL, dedicated, reservations, Capacity Blocks...),
    or has no positive on-demand price."""
    doc = _load(item)
    a = _attrs(doc)
    for key, want in EC2_REQUIRED.items():
        if a.get(key, want if key in _EC2_OPTIONAL else None) != want:
            return None
    itype, region = a.get("instanceType"), a.get("regionCode")
    usage = parse_usage_type(a.get("usagetype", ""))
    if not itype or not region or usage is None or usage.kind != "BoxUsage" or usage.detail != itype:
        return None
    on_demand = on_demand_hourly(doc)
    if not on_demand:
        return None
    return Ec2Offer(region=region, instance_type=itype, on_demand=on_demand,
                    ri_1y=reserved_effective_hourly(doc, RI_TERMS["ri_1y"]), ri_3y=reserved_effective_hourly(doc, RI_TERMS["ri_3y"]),
                    sku=doc.get("product", {}).get("sku", ""), usage_type=str(usage),
                    reserved_terms=len(doc.get("terms", {}).get("Reserved", {}) or {}))


def parse_hosting_product(item: str | Mapping) -> HostingOffer | None:
    """One AmazonSageMaker item -> a real-time hosting price (component Hosting, usage type
    ``PREFIX-Host:ml.<type>``), else None (AsyncInf:, Train:, Notebk:, Studio... are other meters)."""
    doc = _load(item)
    a = _attrs(doc)
    if str(a.get("component", "")).lower() != "hosting":
        return None
    usage = parse_usage_type(a.get("usagetype", ""))
    if usage is None or usage.kind != "Host" or not usage.detail.startswith(cat_mod.SAGEMAKER_PREFIX):
        return None
    name = usage.detail
    listed = a.get("instanceName")  # where present it must name the same type as the usage type
    if listed and listed != name:
        return None
    region = a.get("regionCode")
    hourly = on_demand_hourly(doc)
    if not region or not hourly:
        return None
    return HostingOffer(region=region, instance_type=name, hourly=hourly, sku=doc.get("product", {}).get("sku", ""),
                        usage_type=str(usage))


_SERVERLESS_MEM = re.compile(r"^Mem-(\d+)GB$")
_DATA_BYTES = re.compile(r"^Data-Bytes-(In|Out)$")


def parse_serverless_product(item: str | Mapping) -> ServerlessOffer | None:
    """One AmazonSageMaker item -> serverless compute (``PREFIX-ServerlessInf:Mem-<N>GB``, per GB-second) or data
    processed (``PREFIX-Hst:Data-Bytes-In`` / ``-Out``, per GB), else None. Zero-priced dimensions (a free
    tier, if AWS lists one as a range) are skipped."""
    doc = _load(item)
    a = _attrs(doc)
    usage, region = parse_usage_type(a.get("usagetype", "")), a.get("regionCode")
    sku = doc.get("product", {}).get("sku", "")
    if not region or usage is None:
        return None
    dims = _on_demand_dims(doc)
    if usage.kind == "ServerlessInf" and (m := _SERVERLESS_MEM.match(usage.detail)):
        paid = [p for d in dims if _unit(d).startswith("sec") and (p := _usd(d))]
        if not paid:
            return None
        return ServerlessOffer(region, "compute", round(max(paid) / int(m.group(1)), 12), sku, str(usage))
    if usage.kind == "Hst" and (m := _DATA_BYTES.match(usage.detail)):
        paid = [p for d in dims if _unit(d) in ("gb", "gigabytes") and (p := _usd(d))]
        if not paid:
            return None
        return ServerlessOffer(region, "data-" + m.group(1).lower(), max(paid), sku, str(usage))
    return None


# -- the queries ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Query:
    region: str
    kind: str  # "ec2", "hosting", "serverless", "data"
    service_code: str
    filters: tuple[tuple[str, str], ...]
    instance_type: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "ServiceCode": self.service_code,
            "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in self.filters],
        }

    @property
    def key(self) -> str:
        """Which bucket of offers this query fills: "ec2:REGION:TYPE", "hosting:REGION", "serverless:REGION"."""
        if self.kind == "ec2":
            return f"ec2:{self.region}:{self.instance_type}"
        return f"{'serverless' if self.kind == 'data' else self.kind}:{self.region}"


HOSTING_FILTERS = (("productFamily", "ML Instance"), ("component", "Hosting"))
SERVERLESS_FILTERS = (("productFamily", "ML Serverless"),)
DATA_FILTERS = (("operation", "Invoke-Endpoint"),)


def plan_queries(regions: Sequence[str], instance_types: Sequence[str]) -> list[Query]:
    """Every GetProducts query a refresh makes, in order."""
    out: list[Query] = []
    for region in regions:
        for itype in instance_types:
            out.append(Query(region, "ec2", "AmazonEC2", (("regionCode", region), ("instanceType", itype),
                                                          *EC2_REQUIRED.items()), itype))
        out.append(Query(region, "hosting", "AmazonSageMaker", (("regionCode", region), *HOSTING_FILTERS)))
        out.append(Query(region, "serverless", "AmazonSageMaker", (("regionCode", region), *SERVERLESS_FILTERS)))
        out.append(Query(region, "data", "AmazonSageMaker", (("regionCode", region), *DATA_FILTERS)))
    return out


def pricing_client():
    """The boto3 ``pricing`` client (us-east-1), with llmdeploy's retry policy and endpoint override."""
    from llmdeploy.aws import clients

    return clients.client("pricing", PRICING_REGION)


def _items(client, query: Query) -> Iterable[str]:
    for page in client.get_paginator("get_products").paginate(**query.params()):
        yield from page.get("PriceList", [])


# -- errors -----------------------------------------------------------------------------------------


def _cloud_error(exc: BaseException, bundled_date: dt.date) -> CloudError:
    from llmdeploy.aws.clients import (
        ACCESS_DENIED_CODES,
        CREDENTIAL_CODES,
        MISSING_CREDENTIALS,
        describe_failure,
        error_code,
    )

    tail = f"Nothing was written. Configure credentials (aws configure / AWS_PROFILE) or keep using the bundled snapshot of {bundled_date}."
    name = type(exc).__name__
    code = error_code(exc)
    if name in MISSING_CREDENTIALS:
        return CloudError(f"cannot read the AWS Price List API: no AWS credentials found. Configure credentials "
                          f"(aws configure / AWS_PROFILE) or keep using the bundled snapshot of {bundled_date}.")
    if code in CREDENTIAL_CODES | ACCESS_DENIED_CODES:
        why = ("access denied (the credentials need pricing:GetProducts)" if code in ACCESS_DENIED_CODES
               else f"the AWS credentials were rejected ({describe_failure(exc)})")
        return CloudError(f"cannot read the AWS Price List API: {why}. {tail}")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return CloudError(f"cannot read the AWS Price List API: cannot reach pricing.{PRICING_REGION}.amazonaws.com "
                          f"({exc}). Nothing was written; keep using the bundled snapshot of {bundled_date} or retry "
                          f"with network access.")
    return CloudError(f"cannot read the AWS Price List API: {describe_failure(exc)}. Nothing was written; the prices "
                      f"in use are unchanged (bundled snapshot of {bundled_date} or the previous refresh).")


def _is_aws_error(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (BotoCoreError, ClientError))


# -- building the refreshed catalog -----------------------------------------------------------------


@dataclasses.dataclass
class Change:
    region: str
    item: str  # "g5.xlarge on-demand", "ml.g5.xlarge", "serverless per GB-second"
    old: float | None
    new: float | None

    @property
    def ratio(self) -> float:
        if not self.old or self.new is None:
            return 0.0
        return self.new / self.old - 1.0

    def as_dict(self) -> dict:
        return {"item": self.item, "old": self.old, "new": self.new, "change_pct": round(self.ratio * 100, 2)}

    def __str__(self) -> str:
        old = "-" if self.old is None else f"{self.old:g}"
        new = "-" if self.new is None else f"{self.new:g}"
        pct = f" ({self.ratio * 100:+.1f}%)" if self.old and self.new is not None else ""
        return f"{self.item} {old} -> {new}{pct}"


@dataclasses.dataclass(frozen=True)
class RowOutcome:
    """What a refresh did with one catalog row ("ec2 g5.xlarge", "sagemaker ml.g5.xlarge", "serverless")."""

    row: str
    why: str
    source: str | None = None  # the source key the row has now (None: the row has no price)

    def as_dict(self) -> dict:
        return {"row": self.row, "source": self.source, "why": self.why}


@dataclasses.dataclass(frozen=True)
class KeptTerm:
    """A Reserved term the API did not return, kept from the previous catalog inside a refreshed row."""

    row: str
    term: str  # "ri_1y" / "ri_3y"
    value: float
    source: str
    why: str

    def as_dict(self) -> dict:
        return {"row": self.row, "term": self.term, "value": self.value, "source": self.source, "why": self.why}

    def __str__(self) -> str:
        return f"{self.row} {Term.of_price_field(self.term).label} kept at {self.value:g} ({self.source}): {self.why}"


@dataclasses.dataclass
class RegionSummary:
    region: str
    refreshed: list[RowOutcome] = dataclasses.field(default_factory=list)  # priced again by the API
    added: list[RowOutcome] = dataclasses.field(default_factory=list)  # priced by the API, absent before
    kept: list[RowOutcome] = dataclasses.field(default_factory=list)  # not priced by the API: left as before
    kept_terms: list[KeptTerm] = dataclasses.field(default_factory=list)
    not_priced: list[RowOutcome] = dataclasses.field(default_factory=list)  # no price before and none now
    changes: list[Change] = dataclasses.field(default_factory=list)

    def biggest(self, n: int = 3) -> list[Change]:
        moved = [c for c in self.changes if c.old and c.new is not None and abs(c.ratio) > 1e-9]
        return sorted(moved, key=lambda c: (-abs(c.ratio), c.item))[:n]

    def as_dict(self) -> dict:
        return {
            "region": self.region,
            "rows_refreshed": len(self.refreshed), "rows_added": len(self.added), "rows_kept": len(self.kept),
            "terms_kept": len(self.kept_terms), "rows_not_priced": len(self.not_priced),
            "refreshed": [r.as_dict() for r in self.refreshed], "added": [r.as_dict() for r in self.added],
            "kept": [r.as_dict() for r in self.kept], "kept_terms": [t.as_dict() for t in self.kept_terms],
            "not_priced": [r.as_dict() for r in self.not_priced],
            "biggest_changes": [c.as_dict() for c in self.biggest()],
        }


@dataclasses.dataclass
class RefreshResult:
    cache_dir: Path
    retrieved: dt.date
    regions: list[RegionSummary]
    queries: int
    items_read: int

    def as_dict(self) -> dict:
        return {
            "cache": str(self.cache_dir), "retrieved": self.retrieved.isoformat(), "source_url": SOURCE_URL,
            "queries": self.queries, "price_list_items": self.items_read,
            "regions": [r.as_dict() for r in self.regions],
            "not_refreshed": "other.* (load balancer hourly, KMS key monthly, public IPv4, CloudWatch, EBS gp3, "
                             "Availability Zone counts) figures and every spec/limit file are kept from the bundled snapshot.",
        }


def _read_toml(path: Path) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _s(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)  # a valid TOML basic string


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return _s(str(value))


def _inline(row: Mapping) -> str:
    return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in row.items() if v is not None) + " }"




def _dump_sources(sources: Mapping[str, Mapping]) -> str:
    out = ["schema_version = 1", "", "# Written by 'llmdeploy prices refresh': the bundled sources plus the AWS Price List API.", ""]
    for key, row in sources.items():
        out.append(f"[sources.{_s(key)}]")
        for field in ("url", "retrieved", "note", "estimated"):  # estimated: derived rows stay marked after a refresh
            if field in row:
                out.append(f"{field} = {_v(row[field])}")
        out.append("")
    return "\n".join(out)


EC2_FIELDS = ("on_demand", "ri_1y", "ri_3y", "source", "ri_1y_source", "ri_3y_source")


def _dump_ec2(ec2: Mapping[str, Mapping[str, Mapping]]) -> str:
    out = ["schema_version = 1", "",
           "# USD per hour; written by 'llmdeploy prices refresh' (see each row's source).", ""]
    for region, rows in ec2.items():
        out.append(f"[ec2.{_s(region)}]")
        out += [f"{_s(t)} = {_inline({k: row.get(k) for k in EC2_FIELDS})}" for t, row in rows.items()]
        out.append("")
    return "\n".join(out)


def _dump_sagemaker(sm: Mapping[str, Mapping]) -> str:
    out = ["schema_version = 1", "", "# Written by 'llmdeploy prices refresh' (see each row's source).", ""]
    for region, rows in sm.get("hosting", {}).items():
        out.append(f"[hosting.{_s(region)}]")
        out += [f"{_s(t)} = {_inline({'hourly': row['hourly'], 'source': row['source']})}" for t, row in rows.items()]
        out.append("")
    for section in ("serverless", "other"):
        for region, row in sm.get(section, {}).items():
            out.append(f"[{section}.{_s(region)}]")
            out += [f"{k} = {_v(v)}" for k, v in row.items()]
            out.append("")
    return "\n".join(out)


def _previous_refresh(cache: Path) -> tuple[dict, dict, dict] | None:
    """The current cache's price files, if it is a valid catalog (its refreshed rows are the latest known prices)."""
    if not (cache / "sources.toml").is_file():
        return None
    try:
        cat_mod.load_catalog_from(cache)
        return tuple(_read_toml(cache / name) for name in PRICE_FILES)  # type: ignore[return-value]
    except (LlmdeployError, OSError, tomllib.TOMLDecodeError):
        return None


def _row_sources(row: Mapping) -> set[str]:
    """Every source key a price row names (the row's, and any kept term's)."""
    return {row[k] for k in ("source", *(f"{field}_source" for field in RI_TERMS), "public_ipv4_source", "cloudwatch_source",
                             "ebs_source", "availability_zones_source") if row.get(k)}


def _why_ec2_kept(n_items: int | None) -> str:
    if n_items is None:
        return "not queried in this refresh"
    if n_items == 0:
        return "GetProducts returned no product for it"
    return (f"none of the {n_items} products GetProducts returned is a Linux, shared-tenancy, on-demand "
            f"[PREFIX-]BoxUsage price")


def _why_ri_kept(offer: Ec2Offer, lease: str) -> str:
    if not offer.reserved_terms:
        return f"the product ({offer.sku}) carried no Reserved terms"
    return (f"none of the {offer.reserved_terms} Reserved terms of {offer.sku} is LeaseContractLength {lease}, "
            f"OfferingClass standard, PurchaseOption No Upfront")


@dataclasses.dataclass
class _Tables:
    """The latest known price tables, as the three price files hold them (``{region: {type: row}}`` and so on)."""

    sources: dict[str, dict]
    ec2: dict[str, dict]
    hosting: dict[str, dict]
    serverless: dict[str, dict]
    other: dict[str, dict]

    @classmethod
    def known(cls, bundled_dir: Path, previous: tuple[dict, dict, dict] | None) -> _Tables:
        """The bundled snapshot's tables, with the rows an earlier refresh wrote (``previous``, the cache) on top."""
        sources_doc, ec2_doc, sm_doc = (_read_toml(bundled_dir / name) for name in PRICE_FILES)
        tables = cls(dict(sources_doc["sources"]), {r: dict(rows) for r, rows in ec2_doc["ec2"].items()},
                     {r: dict(rows) for r, rows in sm_doc["hosting"].items()}, dict(sm_doc["serverless"]),
                     dict(sm_doc["other"]))
        if previous:
            tables._carry(*previous)
        return tables

    def _carry(self, p_sources: dict, p_ec2: dict, p_sm: dict) -> None:
        """Rows an earlier refresh wrote are the latest known prices, in every region (when their sources are)."""
        p_src = p_sources.get("sources", {})
        known = set(self.sources) | {k for k in p_src if k.startswith(SOURCE_PREFIX)}

        def carry(row: Mapping) -> bool:
            return str(row.get("source", "")).startswith(SOURCE_PREFIX) and _row_sources(row) <= known

        for r, rows in p_ec2.get("ec2", {}).items():
            self.ec2.setdefault(r, {}).update({t: dict(row) for t, row in rows.items() if carry(row)})
        for r, rows in p_sm.get("hosting", {}).items():
            self.hosting.setdefault(r, {}).update({t: dict(row) for t, row in rows.items() if carry(row)})
        for r, row in p_sm.get("serverless", {}).items():
            if carry(row):
                self.serverless[r] = dict(row)
        for key, row in p_src.items():
            if key.startswith(SOURCE_PREFIX):
                self.sources.setdefault(key, row)

    def drop_unused_sources(self) -> None:
        """Drop Price List sources no row names any more (an earlier refresh's, fully replaced)."""
        used = {k for rows in (*self.ec2.values(), *self.hosting.values()) for row in rows.values() for k in _row_sources(row)}
        used |= {k for row in (*self.serverless.values(), *self.other.values()) for k in _row_sources(row)}
        self.sources = {k: v for k, v in self.sources.items() if not k.startswith(SOURCE_PREFIX) or k in used}


def build_price_tables(bundled_dir: Path, regions: Sequence[str], offers: Mapping[str, list], retrieved: dt.date,
                       previous: tuple[dict, dict, dict] | None = None, *, seen: Mapping[str, int] | None = None,
                       instance_types: Sequence[str] | None = None) -> tuple[dict, dict, dict, list[RegionSummary]]:
    """Merge parsed offers into the latest known price tables. Returns (sources, ec2, sagemaker, summaries).

    ``offers`` and ``seen`` are keyed like :attr:`Query.key` ("ec2:REGION:TYPE", "hosting:REGION",
    "serverless:REGION"): the parsed offers, and how many items GetProducts returned for that key.
    The latest known price of a row is the previous refresh's (``previous``, the cache) where it came from
    the API, else the bundled snapshot's. A row the API prices now is replaced (a Reserved term it does not
    return keeps the known rate and that rate's source); a row it does not price is kept; a catalog type
    the snapshot lacked in a region is added. Nothing known is ever dropped.
    """
    seen = seen or {}
    tables = _Tables.known(bundled_dir, previous)
    ec2_key, sm_key = f"{SOURCE_PREFIX}ec2-{retrieved}", f"{SOURCE_PREFIX}sagemaker-{retrieved}"
    tables.sources[ec2_key] = {"url": SOURCE_URL, "retrieved": retrieved, "note": EC2_NOTE}
    tables.sources[sm_key] = {"url": SOURCE_URL, "retrieved": retrieved, "note": SAGEMAKER_NOTE}

    summaries = []
    for region in regions:
        s = RegionSummary(region)
        rows = tables.ec2.setdefault(region, {})
        _merge_ec2(s, rows, offers, seen, instance_types, ec2_key)
        hrows = tables.hosting.setdefault(region, {})
        _merge_hosting(s, hrows, offers, seen, instance_types, sm_key)
        _merge_serverless(s, tables.serverless, offers, seen, sm_key)
        if not hrows:
            del tables.hosting[region]
        if not rows:
            del tables.ec2[region]
        summaries.append(s)

    tables.drop_unused_sources()
    sm = {"hosting": tables.hosting, "serverless": tables.serverless, "other": tables.other}
    return tables.sources, tables.ec2, sm, summaries


def _merge_ec2(s: RegionSummary, rows: dict[str, dict], offers: Mapping[str, list], seen: Mapping[str, int],
               instance_types: Sequence[str] | None, ec2_key: str) -> None:
    """EC2: one query per catalog type; the first plain Linux on-demand product of that type wins."""
    region = s.region
    queried = [k.split(":", 2)[2] for k in (*offers, *seen) if k.startswith(f"ec2:{region}:")]
    for t in sorted(set(instance_types or ()) | set(queried) | set(rows)):
        key = f"ec2:{region}:{t}"
        found = [o for o in offers.get(key, []) if o.region == region and o.instance_type == t]
        old = rows.get(t)
        if not found:
            if old is not None:
                s.kept.append(RowOutcome(f"ec2 {t}", _why_ec2_kept(seen.get(key)), old["source"]))
            else:
                s.not_priced.append(RowOutcome(f"ec2 {t}", _why_ec2_kept(seen.get(key))))
            continue
        o = found[0]
        new: dict[str, Any] = {"on_demand": o.on_demand, "source": ec2_key}
        for field, lease in RI_TERMS.items():
            value = getattr(o, field)
            if value is not None:
                new[field] = value
            elif old is not None and old.get(field) is not None:
                kept_from = old.get(f"{field}_source") or old["source"]
                new[field] = old[field]
                if kept_from != ec2_key:
                    new[f"{field}_source"] = kept_from
                s.kept_terms.append(KeptTerm(f"ec2 {t}", field, old[field], kept_from, _why_ri_kept(o, lease)))
        why = f"SKU {o.sku} ({o.usage_type})"
        if old is None:
            s.added.append(RowOutcome(f"ec2 {t}", why + "; the catalog had no price for it here", ec2_key))
        else:
            s.refreshed.append(RowOutcome(f"ec2 {t}", why, ec2_key))
            s.changes.append(Change(region, f"{t} {Term.ON_DEMAND.label}", old.get("on_demand"), o.on_demand))
            for field in RI_TERMS:
                if getattr(o, field) is not None:
                    s.changes.append(Change(region, f"{t} {Term.of_price_field(field).label}", old.get(field), getattr(o, field)))
        rows[t] = new


def _merge_hosting(s: RegionSummary, hrows: dict[str, dict], offers: Mapping[str, list], seen: Mapping[str, int],
                   instance_types: Sequence[str] | None, sm_key: str) -> None:
    """SageMaker hosting: one query per region; rows by usage type PREFIX-Host:ml.TYPE."""
    region = s.region
    hkey = f"hosting:{region}"
    hgot: dict[str, HostingOffer] = {}
    for o in offers.get(hkey, []):
        if o.region == region:
            hgot.setdefault(o.instance_type, o)
    ml_types = {cat_mod.SAGEMAKER_PREFIX + t for t in (instance_types or ())}
    n = seen.get(hkey)
    no_host = ("not queried in this refresh" if n is None else
               f"no Host:TYPE product among the {n} 'ML Instance' / 'Hosting' products GetProducts returned")
    for t in sorted(ml_types | set(hgot) | set(hrows)):
        old, got = hrows.get(t), hgot.get(t)
        if got is None:
            if old is not None:
                s.kept.append(RowOutcome(f"sagemaker {t}", no_host.replace("TYPE", t), old["source"]))
            else:
                s.not_priced.append(RowOutcome(f"sagemaker {t}", no_host.replace("TYPE", t)))
            continue
        why = f"SKU {got.sku} ({got.usage_type})"
        if old is None:
            s.added.append(RowOutcome(f"sagemaker {t}", why + "; the catalog had no price for it here", sm_key))
        else:
            s.refreshed.append(RowOutcome(f"sagemaker {t}", why, sm_key))
            s.changes.append(Change(region, t, old.get("hourly"), got.hourly))
        hrows[t] = {"hourly": got.hourly, "source": sm_key}


def _merge_serverless(s: RegionSummary, serverless: dict[str, dict], offers: Mapping[str, list], seen: Mapping[str, int],
                      sm_key: str) -> None:
    """Serverless: a row needs both the GB-second and the data-processed rate."""
    region = s.region
    skey = f"serverless:{region}"
    sv = [o for o in offers.get(skey, []) if o.region == region]
    compute = sorted({o.usd for o in sv if o.kind == "compute"})
    data = sorted({o.usd for o in sv if o.kind.startswith("data-")})
    old_sv = serverless.get(region)
    missing = [what for what, got in (("no ServerlessInf:Mem-<N>GB compute price", compute),
                                      ("no Hst:Data-Bytes-In/Out data-processed price", data)) if not got]
    if missing:
        why = ("not queried in this refresh" if skey not in seen else
               " and ".join(missing) + f" among the {seen[skey]} products GetProducts returned; a serverless row "
               "is refreshed only with both rates")
        if old_sv is not None:
            s.kept.append(RowOutcome("serverless", why, old_sv["source"]))
        else:
            s.not_priced.append(RowOutcome("serverless", why))
        return
    # Every memory size should give the same per-GB rate; if not, keep the highest (conservative).
    sizes = sorted(o.usage_type for o in sv if o.kind == "compute")
    why = f"{len(sizes)} ServerlessInf:Mem-<N>GB prices and {len(sv) - len(sizes)} Hst:Data-Bytes prices"
    if old_sv is None:
        s.added.append(RowOutcome("serverless", why + "; the catalog had no serverless price here", sm_key))
    else:
        s.refreshed.append(RowOutcome("serverless", why, sm_key))
        s.changes.append(Change(region, "serverless per GB-second", old_sv.get("usd_per_gb_second"), compute[-1]))
        s.changes.append(Change(region, "serverless per GB processed", old_sv.get("usd_per_gb_processed"), data[-1]))
    serverless[region] = {"usd_per_gb_second": compute[-1], "usd_per_gb_processed": data[-1], "source": sm_key}


# Written into every cache folder `prices refresh` creates: `prices clear` (and a later refresh) delete or
# replace $LLMDEPLOY_CACHE_DIR/catalog only when it is there, so a folder llmdeploy did not make is never lost.
CACHE_MARKER = ".llmdeploy-cache"
CACHE_MARKER_TEXT = ("This folder is a price catalog written by 'llmdeploy prices refresh'.\n"
                     "'llmdeploy prices clear' deletes it (it deletes only folders holding this file).\n")


def check_owned_cache(cache: Path) -> None:
    """LlmdeployError unless ``cache`` is a real folder that llmdeploy created (it holds ``CACHE_MARKER``)."""
    if cache.is_symlink():
        raise LlmdeployError(f"{cache} is a symbolic link (to {os.path.realpath(cache)}); llmdeploy only deletes or "
                             "replaces a cache folder it created, never what a link points to.",
                             hint="Remove the link yourself, or set LLMDEPLOY_CACHE_DIR to another folder.")
    marker = cache / CACHE_MARKER
    if not cache.is_dir() or marker.is_symlink() or not marker.is_file():
        raise LlmdeployError(f"{cache} was not created by 'llmdeploy prices refresh' (no {CACHE_MARKER} file in it); "
                             "llmdeploy leaves it alone.",
                             hint="If it is an old llmdeploy cache, delete it yourself; else set LLMDEPLOY_CACHE_DIR to another folder.")


def write_catalog_dir(target: Path, bundled_dir: Path, sources: Mapping, ec2: Mapping, sm: Mapping) -> None:
    """A complete catalog directory: the bundled files, with the three price files replaced, and the cache marker."""
    target.mkdir(parents=True, exist_ok=True)
    (target / CACHE_MARKER).write_text(CACHE_MARKER_TEXT, encoding="utf-8")
    for src in sorted(Path(bundled_dir).glob("*.toml")):
        if src.name not in PRICE_FILES:
            shutil.copyfile(src, target / src.name)
    for name, text in (("sources.toml", _dump_sources(sources)), ("ec2_prices.toml", _dump_ec2(ec2)),
                       ("sagemaker_prices.toml", _dump_sagemaker(sm))):
        with open(target / name, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def swap_in(new_dir: Path, cache: Path) -> None:
    """Replace ``cache`` with ``new_dir`` by renames (same filesystem): a reader sees the old catalog,
    no cache (so the bundled snapshot) for an instant, or the new one, never half of one."""
    old = None
    if cache.exists() or cache.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=".catalog.old-", dir=cache.parent))
        os.rmdir(old)
        os.rename(cache, old)
    try:
        os.rename(new_dir, cache)
    except BaseException:
        if old is not None:
            os.rename(old, cache)  # put the previous catalog back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)



def refresh(regions: Sequence[str] | None = None, *, client=None, today: dt.date | None = None,
            progress: Callable[[str, int, int, bool], None] | None = None, instance_types: Sequence[str] | None = None,
            cache_dir: Path | None = None) -> RefreshResult:
    """Read the Price List API and swap a refreshed catalog into the user cache. Writes nothing on failure.

    ``progress(phase, done, total, phase_finished)`` is called after every query.
    """
    bundled = cat_mod.load_catalog_from(cat_mod.BUNDLED_DIR, origin="bundled snapshot")
    regions = list(dict.fromkeys(regions or bundled.regions))
    for region in regions:
        if region not in bundled.regions:
            raise UnknownChoiceError("region", region, bundled.regions,
                                     fix="The catalog prices these regions only (load balancer and KMS prices come from the snapshot).")
    types = list(instance_types) if instance_types is not None else sorted(bundled.instances)
    known_ml = {cat_mod.SAGEMAKER_PREFIX + t for t in bundled.instances}
    today = today or dt.date.today()
    cache = Path(cache_dir) if cache_dir else cat_mod.user_cache_dir()
    if cache.exists() or cache.is_symlink():
        check_owned_cache(cache)  # replace only a cache an earlier refresh wrote; checked before any query
    queries = plan_queries(regions, types)

    # 1. Read everything first: nothing is written until every query has succeeded.
    offers: dict[str, list] = {}
    seen: dict[str, int] = {}
    items_read = 0
    try:
        if client is None:
            client = pricing_client()
        phases = [f"{q.region}: " + {"ec2": f"EC2 prices ({len(types)} instance types)", "hosting": "SageMaker hosting prices",
                                     "serverless": "SageMaker serverless prices", "data": "SageMaker data-processed prices"}[q.kind]
                  for q in queries]
        for done, q in enumerate(queries):
            bucket = offers.setdefault(q.key, [])
            seen.setdefault(q.key, 0)
            for item in _items(client, q):
                items_read += 1
                seen[q.key] += 1
                if q.kind == "ec2":
                    ec2_offer = parse_ec2_product(item)
                    if ec2_offer and ec2_offer.region == q.region and ec2_offer.instance_type == q.instance_type:
                        bucket.append(ec2_offer)
                elif q.kind == "hosting":
                    hosting_offer = parse_hosting_product(item)
                    if hosting_offer and hosting_offer.region == q.region and hosting_offer.instance_type in known_ml:
                        bucket.append(hosting_offer)
                else:
                    serverless_offer = parse_serverless_product(item)
                    if serverless_offer and serverless_offer.region == q.region:
                        bucket.append(serverless_offer)
            if progress:
                finished = done + 1 == len(queries) or phases[done + 1] != phases[done]
                progress(phases[done], done + 1, len(queries), finished)
    except LlmdeployError:
        raise
    except Exception as exc:
        if _is_aws_error(exc):
            raise _cloud_error(exc, bundled.snapshot_date) from None
        raise

    # 2. Build the new catalog next to the cache, validate it, swap it in.
    sources, ec2, sm, summaries = build_price_tables(cat_mod.BUNDLED_DIR, regions, offers, today, _previous_refresh(cache),
                                                     seen=seen, instance_types=types)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".catalog.new-", dir=cache.parent))
    try:
        write_catalog_dir(tmp, cat_mod.BUNDLED_DIR, sources, ec2, sm)
        cat_mod.load_catalog_from(tmp)  # raises ConfigError if anything is malformed
        swap_in(tmp, cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cat_mod.load_catalog.cache_clear()
    return RefreshResult(cache_dir=cache, retrieved=today, regions=summaries, queries=len(queries), items_read=items_read)


# -- show / clear ------------------------------------------------------------------------------------


def describe() -> dict:
    """What ``prices show`` prints: which catalog is in use, its date, rows per region, sources."""
    cat_mod.load_catalog.cache_clear()
    cat = cat_mod.load_catalog()
    cache = cat_mod.user_cache_dir()
    refreshed = cat.origin.startswith("refreshed cache")
    regions = []
    for region in cat.regions:
        ec2 = [p for (r, _), p in cat.ec2.items() if r == region]
        hosting = [p for (r, _), p in cat.hosting.items() if r == region]
        rows = ec2 + hosting + ([cat.serverless[region]] if region in cat.serverless else [])
        live = [p for p in rows if p.source.key.startswith(SOURCE_PREFIX)]
        regions.append({
            "region": region, "ec2_rows": len(ec2), "sagemaker_hosting_rows": len(hosting),
            "serverless": region in cat.serverless, "rows_from_price_list_api": len(live),
            "rows_from_snapshot": len(rows) - len(live),
            # over every price of the region (a kept reserved term's, CloudWatch's...), as the headline dates are
            "newest_price_date": max(s.retrieved for s in cat.price_sources(region)).isoformat() if rows else None,
        })
    used = {s.key for s in cat.price_sources()}
    return {
        "in_use": "refreshed cache" if refreshed else "bundled snapshot",
        "origin": cat.origin,
        "date": cat.snapshot_date.isoformat(),
        "cache_dir": str(cache),
        "cache_present": (cache / "sources.toml").is_file(),
        "bundled_forced": os.environ.get("LLMDEPLOY_BUNDLED_PRICES") == "1",
        "regions": regions,
        "sources": [{"key": s.key, "retrieved": s.retrieved.isoformat(), "url": s.url} for s in
                    sorted(cat.sources.values(), key=lambda s: (s.retrieved, s.key), reverse=True) if s.key in used],
    }


def clear(cache_dir: Path | None = None) -> Path | None:
    """Remove the refreshed cache; returns the path removed, or None if there was none."""
    cache = Path(cache_dir) if cache_dir else cat_mod.user_cache_dir()
    cat_mod.load_catalog.cache_clear()
    if not (cache.exists() or cache.is_symlink()):
        return None
    check_owned_cache(cache)
    # Rename first so a concurrent reader never sees a half-deleted catalog. rmtree never follows a
    # symbolic link inside the folder (it removes the link), so nothing outside it is touched.
    doomed = Path(tempfile.mkdtemp(prefix=".catalog.del-", dir=cache.parent))
    os.rmdir(doomed)
    os.rename(cache, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return cache
