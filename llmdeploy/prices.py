"""Live prices: read the AWS Price List API and write a refreshed catalog into the user cache.

``llmdeploy prices refresh`` calls :func:`refresh`; ``prices show`` / ``prices clear`` call
:func:`describe` and :func:`clear`. boto3 is imported inside functions only, so the planning
path (``llmdeploy plan``) never imports it.

What is read (``pricing:GetProducts``, endpoint in us-east-1, paginated):

- EC2 (``AmazonEC2``), one query per region and catalog instance type, TERM_MATCH on
  ``regionCode``, ``instanceType``, ``operatingSystem=Linux``, ``tenancy=Shared``,
  ``preInstalledSw=NA``, ``capacitystatus=Used``, ``licenseModel=No License required``.
  ``on_demand`` = the OnDemand "Hrs" price; ``ri_1y`` / ``ri_3y`` = the Reserved term whose
  termAttributes are LeaseContractLength 1yr/3yr, OfferingClass standard, PurchaseOption
  No Upfront, as an effective hourly rate (upfront fee / term hours + hourly fee).
- SageMaker real-time hosting (``AmazonSageMaker``): ``productFamily=ML Instance``,
  ``component=Hosting`` per region; the row is ``instanceName`` (``ml.*``, usage type
  ``<REGION>-Host:ml.*``), OnDemand "Hrs" price.
- SageMaker serverless: ``productFamily=ML Serverless`` per region; usage types
  ``<REGION>-ServerlessInf:Mem-<N>GB`` price one second of an N-GB endpoint, so
  usd_per_gb_second = price / N (the zero-priced free-tier range is skipped). Data processed:
  ``operation=Invoke-Endpoint`` per region, usage types ``...Data-Bytes-In`` / ``...Data-Bytes-Out``
  (USD per GB; the catalog keeps one rate that applies IN and OUT).

The pure ``parse_*`` functions take one PriceList item (the JSON string the API returns) and
are what the tests feed with recorded-shape items.
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
from llmdeploy.errors import CloudError, LlmdeployError, UnknownChoiceError

PRICING_REGION = "us-east-1"  # the Price List API lives in us-east-1 (and ap-south-1), whatever region is priced
SOURCE_URL = "https://pricing.us-east-1.amazonaws.com (AWS Price List API)"
SOURCE_PREFIX = "aws-price-list-"
TERM_HOURS = {"1yr": 8760, "3yr": 26280}
PRICE_FILES = ("sources.toml", "ec2_prices.toml", "sagemaker_prices.toml")
CREDENTIAL_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "AuthFailure",
    "MissingAuthenticationToken",
})

EC2_NOTE = (
    "Read from the AWS Price List API (pricing:GetProducts, service AmazonEC2) by 'llmdeploy prices refresh'. "
    "Products: operatingSystem Linux, tenancy Shared, preInstalledSw NA, capacitystatus Used, licenseModel "
    "No License required, operation RunInstances. on_demand = the OnDemand term's USD per hour. ri_1y / ri_3y = "
    "the Reserved term with LeaseContractLength 1yr / 3yr, OfferingClass standard, PurchaseOption No Upfront "
    "(STANDARD Reserved Instance, NO UPFRONT), effective USD per hour (any upfront fee / term hours + the hourly "
    "fee). A missing ri_* means the API returned no such term for that type and region."
)
SAGEMAKER_NOTE = (
    "Read from the AWS Price List API (pricing:GetProducts, service AmazonSageMaker) by 'llmdeploy prices refresh'. "
    "hosting = productFamily ML Instance, component Hosting (usage type <region>-Host:ml.*): SageMaker real-time "
    "inference on-demand USD per instance-hour (asynchronous inference bills the same per-instance-hour price). "
    "serverless usd_per_gb_second = the on-demand price of usage type <region>-ServerlessInf:Mem-<N>GB (productFamily "
    "ML Serverless, USD per second of an N GB endpoint) divided by N, excluding the free-tier range; "
    "usd_per_gb_processed = the operation Invoke-Endpoint Data-Bytes-In / Data-Bytes-Out price per GB (the higher "
    "of the two if they differ). Provisioned concurrency is not read."
)


# -- parsing one PriceList item ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ec2Offer:
    region: str
    instance_type: str
    on_demand: float
    ri_1y: float | None
    ri_3y: float | None
    sku: str = ""


@dataclasses.dataclass(frozen=True)
class HostingOffer:
    region: str
    instance_type: str  # ml.*
    hourly: float
    sku: str = ""


@dataclasses.dataclass(frozen=True)
class ServerlessOffer:
    """One serverless-related price: kind "compute" (USD per GB-second) or "data-in" / "data-out" (USD per GB)."""

    region: str
    kind: str
    usd: float
    sku: str = ""


def _load(item: str | Mapping) -> dict:
    return json.loads(item) if isinstance(item, (str, bytes)) else dict(item)


def _attrs(doc: Mapping) -> dict:
    return dict(doc.get("product", {}).get("attributes", {}))


def _usd(dim: Mapping) -> float | None:
    raw = dim.get("pricePerUnit", {}).get("USD")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _is_hours(unit: str) -> bool:
    return unit.lower() in ("hrs", "hr", "hours", "hour")


def on_demand_hourly(doc: Mapping) -> float | None:
    """The OnDemand term's USD/hour (the "Hrs" dimension); None if there is none or it is zero."""
    for term in doc.get("terms", {}).get("OnDemand", {}).values():
        for dim in term.get("priceDimensions", {}).values():
            price = _usd(dim)
            if _is_hours(str(dim.get("unit", ""))) and price:
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
            unit = str(dim.get("unit", ""))
            if _is_hours(unit):
                hourly += price
                seen = True
            elif unit.lower() == "quantity":  # the "Upfront Fee" dimension
                upfront += price
                seen = True
        if seen and (hourly or upfront):
            return round(upfront / hours + hourly, 6)
    return None


EC2_REQUIRED = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


def parse_ec2_product(item: str | Mapping) -> Ec2Offer | None:
    """One AmazonEC2 PriceList item -> an Ec2Offer, or None for anything that is not plain Linux, shared
    tenancy, no pre-installed software, capacity Used, license included (Windows, BYOL, RHEL, SQL, dedicated,
    reservations...), or has no on-demand price."""
    doc = _load(item)
    a = _attrs(doc)
    for key, want in EC2_REQUIRED.items():
        if a.get(key) != want:
            return None
    if a.get("operation", "RunInstances") != "RunInstances":  # RunInstances:0002 = Windows, :0010 = RHEL, ...
        return None
    itype, region = a.get("instanceType"), a.get("regionCode")
    on_demand = on_demand_hourly(doc)
    if not itype or not region or not on_demand:
        return None
    return Ec2Offer(region=region, instance_type=itype, on_demand=on_demand,
                    ri_1y=reserved_effective_hourly(doc, "1yr"), ri_3y=reserved_effective_hourly(doc, "3yr"),
                    sku=doc.get("product", {}).get("sku", ""))


_HOST_USAGE = re.compile(r"(?:^|-)Host:(ml\.[\w.-]+)$")


def parse_hosting_product(item: str | Mapping) -> HostingOffer | None:
    """One AmazonSageMaker item -> a real-time hosting price (component Hosting, ``ml.*``), else None."""
    doc = _load(item)
    a = _attrs(doc)
    if str(a.get("component", "")).lower() != "hosting":
        return None
    usage = str(a.get("usagetype", ""))
    match = _HOST_USAGE.search(usage)
    if usage and not match:  # AsyncInf:, Tsform:, Notebk:, Studio... are other components' meters
        return None
    name = a.get("instanceName") or str(a.get("instanceType", "")).removesuffix("-Hosting") or (match and match.group(1))
    region = a.get("regionCode")
    hourly = on_demand_hourly(doc)
    if not name or not str(name).startswith(cat_mod.SAGEMAKER_PREFIX) or not region or not hourly:
        return None
    return HostingOffer(region=region, instance_type=str(name), hourly=hourly, sku=doc.get("product", {}).get("sku", ""))


_SERVERLESS_MEM = re.compile(r"(?:^|-)ServerlessInf:Mem-(\d+)GB$")
_DATA_BYTES = re.compile(r"(?:^|-)Data-Bytes-(In|Out)$")


def parse_serverless_product(item: str | Mapping) -> ServerlessOffer | None:
    """One AmazonSageMaker item -> serverless compute (per GB-second) or data processed (per GB), else None."""
    doc = _load(item)
    a = _attrs(doc)
    usage, region = str(a.get("usagetype", "")), a.get("regionCode")
    sku = doc.get("product", {}).get("sku", "")
    if not region:
        return None
    dims = [d for t in doc.get("terms", {}).get("OnDemand", {}).values() for d in t.get("priceDimensions", {}).values()]
    if (m := _SERVERLESS_MEM.search(usage)):
        # Tiered: a zero-priced free-tier range, then the paid rate. Take the paid, per-second rate.
        paid = [p for d in dims if str(d.get("unit", "")).lower() in ("second", "seconds") and (p := _usd(d))]
        if not paid:
            return None
        return ServerlessOffer(region, "compute", round(max(paid) / int(m.group(1)), 12), sku)
    if (m := _DATA_BYTES.search(usage)):
        paid = [p for d in dims if str(d.get("unit", "")).lower() in ("gb", "gigabytes") and (p := _usd(d))]
        if not paid:
            return None
        return ServerlessOffer(region, "data-" + m.group(1).lower(), max(paid), sku)
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


def plan_queries(regions: Sequence[str], instance_types: Sequence[str]) -> list[Query]:
    """Every GetProducts query a refresh makes, in order."""
    out: list[Query] = []
    for region in regions:
        for itype in instance_types:
            out.append(Query(region, "ec2", "AmazonEC2", (("regionCode", region), ("instanceType", itype),
                                                          *EC2_REQUIRED.items()), itype))
        out.append(Query(region, "hosting", "AmazonSageMaker",
                         (("regionCode", region), ("productFamily", "ML Instance"), ("component", "Hosting"))))
        out.append(Query(region, "serverless", "AmazonSageMaker",
                         (("regionCode", region), ("productFamily", "ML Serverless"))))
        out.append(Query(region, "data", "AmazonSageMaker", (("regionCode", region), ("operation", "Invoke-Endpoint"))))
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
    from llmdeploy.aws.clients import describe_failure, error_code

    tail = f"Nothing was written. Configure credentials (aws configure / AWS_PROFILE) or keep using the bundled snapshot of {bundled_date}."
    name = type(exc).__name__
    code = error_code(exc)
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return CloudError(f"cannot read the AWS Price List API: no AWS credentials found. Configure credentials "
                          f"(aws configure / AWS_PROFILE) or keep using the bundled snapshot of {bundled_date}.")
    if code in CREDENTIAL_CODES:
        why = ("access denied (the credentials need pricing:GetProducts)" if code.startswith("AccessDenied")
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
    item: str  # "g5.xlarge on-demand", "ml.g5.xlarge", "serverless GB-second"
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


@dataclasses.dataclass
class RegionSummary:
    region: str
    refreshed: int = 0
    added: int = 0
    kept: list[str] = dataclasses.field(default_factory=list)  # rows the API did not return, left as before
    changes: list[Change] = dataclasses.field(default_factory=list)

    def biggest(self, n: int = 3) -> list[Change]:
        moved = [c for c in self.changes if c.old and c.new is not None and abs(c.ratio) > 1e-9]
        return sorted(moved, key=lambda c: (-abs(c.ratio), c.item))[:n]

    def as_dict(self) -> dict:
        return {"region": self.region, "rows_refreshed": self.refreshed, "rows_added": self.added,
                "rows_kept_from_snapshot": len(self.kept), "kept": self.kept,
                "biggest_changes": [c.as_dict() for c in self.biggest()]}


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
            "not_refreshed": "other.* (load balancer hourly, KMS key monthly) prices and every spec/limit file are "
                             "kept from the bundled snapshot.",
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


def _dump_ec2(ec2: Mapping[str, Mapping[str, Mapping]]) -> str:
    out = ["schema_version = 1", "",
           "# USD per hour; written by 'llmdeploy prices refresh' (see each row's source).", ""]
    for region, rows in ec2.items():
        out.append(f"[ec2.{_s(region)}]")
        out += [f"{_s(t)} = {_inline({k: row.get(k) for k in ('on_demand', 'ri_1y', 'ri_3y', 'source')})}" for t, row in rows.items()]
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
    """The current cache's price files, if it is a valid catalog (rows from an earlier refresh are carried over)."""
    if not (cache / "sources.toml").is_file():
        return None
    try:
        cat_mod.load_catalog_from(cache)
        return tuple(_read_toml(cache / name) for name in PRICE_FILES)  # type: ignore[return-value]
    except (LlmdeployError, OSError, tomllib.TOMLDecodeError):
        return None


def build_price_tables(bundled_dir: Path, regions: Sequence[str], offers: Mapping[str, list], retrieved: dt.date,
                       previous: tuple[dict, dict, dict] | None = None) -> tuple[dict, dict, dict, list[RegionSummary]]:
    """Merge parsed offers into the bundled price tables. Returns (sources, ec2, sagemaker, summaries).

    Rows the API did not return stay as they were (bundled, or from an earlier refresh for regions not
    refreshed now); rows for catalog instance types the snapshot lacked in a region are added.
    """
    sources_doc, ec2_doc, sm_doc = (_read_toml(bundled_dir / name) for name in PRICE_FILES)
    sources: dict[str, dict] = dict(sources_doc["sources"])
    ec2: dict[str, dict] = {r: dict(rows) for r, rows in ec2_doc["ec2"].items()}
    hosting: dict[str, dict] = {r: dict(rows) for r, rows in sm_doc["hosting"].items()}
    serverless: dict[str, dict] = dict(sm_doc["serverless"])
    other: dict[str, dict] = dict(sm_doc["other"])

    if previous:  # carry rows an earlier refresh wrote for regions not refreshed this time
        p_sources, p_ec2, p_sm = previous
        for r, rows in p_ec2.get("ec2", {}).items():
            if r not in regions:
                for t, row in rows.items():
                    if str(row.get("source", "")).startswith(SOURCE_PREFIX):
                        ec2.setdefault(r, {})[t] = row
        for r, rows in p_sm.get("hosting", {}).items():
            if r not in regions:
                for t, row in rows.items():
                    if str(row.get("source", "")).startswith(SOURCE_PREFIX):
                        hosting.setdefault(r, {})[t] = row
        for r, row in p_sm.get("serverless", {}).items():
            if r not in regions and str(row.get("source", "")).startswith(SOURCE_PREFIX):
                serverless[r] = row
        for key, row in p_sources.get("sources", {}).items():
            if key.startswith(SOURCE_PREFIX):
                sources.setdefault(key, row)

    ec2_key, sm_key = f"{SOURCE_PREFIX}ec2-{retrieved}", f"{SOURCE_PREFIX}sagemaker-{retrieved}"
    sources[ec2_key] = {"url": SOURCE_URL, "retrieved": retrieved, "note": EC2_NOTE}
    sources[sm_key] = {"url": SOURCE_URL, "retrieved": retrieved, "note": SAGEMAKER_NOTE}

    summaries = []
    for region in regions:
        s = RegionSummary(region)
        # EC2: first valid offer per type wins
        got: dict[str, Ec2Offer] = {}
        for o in offers.get(f"ec2:{region}", []):
            got.setdefault(o.instance_type, o)
        rows = ec2.setdefault(region, {})
        for t, o in got.items():
            old = rows.get(t)
            if old is None:
                s.added += 1
            else:
                s.refreshed += 1
                for label, field in (("on-demand", "on_demand"), ("1y RI", "ri_1y"), ("3y RI", "ri_3y")):
                    s.changes.append(Change(region, f"{t} {label}", old.get(field), getattr(o, field)))
            rows[t] = {"on_demand": o.on_demand, "ri_1y": o.ri_1y, "ri_3y": o.ri_3y, "source": ec2_key}
        s.kept += [f"ec2 {t}" for t in rows if t not in got]
        # SageMaker hosting
        hgot: dict[str, HostingOffer] = {}
        for o in offers.get(f"hosting:{region}", []):
            hgot.setdefault(o.instance_type, o)
        hrows = hosting.setdefault(region, {})
        for t, o in hgot.items():
            old = hrows.get(t)
            if old is None:
                s.added += 1
            else:
                s.refreshed += 1
                s.changes.append(Change(region, t, old.get("hourly"), o.hourly))
            hrows[t] = {"hourly": o.hourly, "source": sm_key}
        s.kept += [f"sagemaker {t}" for t in hrows if t not in hgot]
        # Serverless: needs both a compute and a data-processed rate
        sv = offers.get(f"serverless:{region}", [])
        compute = sorted({o.usd for o in sv if o.kind == "compute"})
        data = [o.usd for o in sv if o.kind.startswith("data-")]
        old_sv = serverless.get(region)
        if compute and data:
            # Every memory size should give the same per-GB rate; if not, keep the highest (conservative).
            new_sv = {"usd_per_gb_second": compute[-1], "usd_per_gb_processed": max(data), "source": sm_key}
            if old_sv is None:
                s.added += 1
            else:
                s.refreshed += 1
                s.changes.append(Change(region, "serverless per GB-second", old_sv.get("usd_per_gb_second"), compute[-1]))
                s.changes.append(Change(region, "serverless per GB processed", old_sv.get("usd_per_gb_processed"), max(data)))
            serverless[region] = new_sv
        elif old_sv is not None:
            s.kept.append("serverless")
        if not hrows:
            del hosting[region]
        if not rows:
            del ec2[region]
        summaries.append(s)

    # Drop sources no row names any more (an earlier refresh's, fully replaced).
    used = {row["source"] for rows in ec2.values() for row in rows.values()}
    used |= {row["source"] for rows in hosting.values() for row in rows.values()}
    used |= {row["source"] for row in [*serverless.values(), *other.values()]}
    sources = {k: v for k, v in sources.items() if not k.startswith(SOURCE_PREFIX) or k in used}
    sm = {"hosting": hosting, "serverless": serverless, "other": other}
    return sources, ec2, sm, summaries


def write_catalog_dir(target: Path, bundled_dir: Path, sources: Mapping, ec2: Mapping, sm: Mapping) -> None:
    """A complete catalog directory: the bundled files, with the three price files replaced."""
    target.mkdir(parents=True, exist_ok=True)
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
    queries = plan_queries(regions, types)

    # 1. Read everything first: nothing is written until every query has succeeded.
    offers: dict[str, list] = {}
    items_read = 0
    try:
        if client is None:
            client = pricing_client()
        phases = [f"{q.region}: " + {"ec2": f"EC2 prices ({len(types)} instance types)", "hosting": "SageMaker hosting prices",
                                     "serverless": "SageMaker serverless prices", "data": "SageMaker data-processed prices"}[q.kind]
                  for q in queries]
        for done, q in enumerate(queries):
            key = f"{'serverless' if q.kind == 'data' else q.kind}:{q.region}"
            bucket = offers.setdefault(key, [])
            for item in _items(client, q):
                items_read += 1
                if q.kind == "ec2":
                    o = parse_ec2_product(item)
                    if o and o.region == q.region and o.instance_type == q.instance_type:
                        bucket.append(o)
                elif q.kind == "hosting":
                    o = parse_hosting_product(item)
                    if o and o.region == q.region and o.instance_type in known_ml:
                        bucket.append(o)
                else:
                    o = parse_serverless_product(item)
                    if o and o.region == q.region:
                        bucket.append(o)
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
    sources, ec2, sm, summaries = build_price_tables(cat_mod.BUNDLED_DIR, regions, offers, today, _previous_refresh(cache))
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
            "newest_price_date": max(p.source.retrieved for p in rows).isoformat() if rows else None,
        })
    used = {p.source.key for p in [*cat.ec2.values(), *cat.hosting.values(), *cat.serverless.values(), *cat.other.values()]}
    used |= {o.public_ipv4_source.key for o in cat.other.values() if o.public_ipv4_source}
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
    # Rename first so a concurrent reader never sees a half-deleted catalog.
    doomed = Path(tempfile.mkdtemp(prefix=".catalog.del-", dir=cache.parent))
    os.rmdir(doomed)
    os.rename(cache, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return cache
