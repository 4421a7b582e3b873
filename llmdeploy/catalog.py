"""The price, instance and limits catalog: data files loaded by this one module.

Like SkyPilot's catalog, every number lives in a data file under
``llmdeploy/data/catalog/`` with the source and the date it was read, and every
query takes the loaded ``Catalog`` as its first argument, so tests can pass a
three-row table. ``load_catalog()`` reads the bundled snapshot (or a refreshed
user cache, see ``llmdeploy.prices``) once per process.

File layout (all TOML, each with ``schema_version``):
- ``sources.toml``: ``[sources.KEY] url, retrieved (date), note`` and optionally ``estimated = true`` (the
  figures are derived, not published) — every other row names a KEY.
- ``gpus.toml``: ``[gpus.NAME]`` memory, the memory the driver reports (``memory_reported_mib``, with its own
  ``memory_reported_source``), bandwidth, tensor TFLOPs, compute capability.
- ``instances.toml``: ``[instances."TYPE"]`` gpu, gpu_count, vcpus, ram_gib, efa, network_cards (optional, 1).
- ``ec2_prices.toml``: ``[ec2."REGION"] "TYPE" = {on_demand, ri_1y, ri_3y, source}`` (USD/hour); optionally
  ``ri_1y_source`` / ``ri_3y_source`` when that term came from elsewhere than the row (a price refresh keeps a
  term the Price List API did not return, with the source it was read from).
- ``sagemaker_prices.toml``: ``[hosting."REGION"] "ml.TYPE" = {hourly, source}``,
  ``[serverless."REGION"] usd_per_gb_second, usd_per_gb_processed, source``,
  ``[other."REGION"] alb_hourly, kms_key_monthly, source`` and, optionally, ``public_ipv4_hourly`` (USD per
  public IPv4 address / Elastic IP per hour) with its own ``public_ipv4_source``; CloudWatch's
  ``cloudwatch_alarm_metric_monthly``, ``cloudwatch_dashboard_monthly``, ``cloudwatch_custom_metric_monthly``
  (USD per month, all three or none) with their ``cloudwatch_source``; ``ebs_gp3_gb_month`` (USD per GB-month of
  gp3 volume) with ``ebs_source``, and ``availability_zones`` (subnets of the default VPC, so the public IPv4
  addresses of an internet-facing load balancer across them) with ``availability_zones_source``.
- ``limits.toml``: ``[serverless]`` and ``[async]`` service limits the documentation states, each with a source;
  the ranges AWS's API models declare come from ``llmdeploy/data/aws_limits.json`` (``llmdeploy.apilimits``).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from llmdeploy.enums import Term
from llmdeploy.errors import ConfigError, UnknownChoiceError, UsageError

SCHEMA_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "data" / "catalog"
# The fields of an ec2_prices.toml row holding a reserved term's price ("ri_1y", "ri_3y"); each may name its own source.
RESERVED_FIELDS = tuple(t.price_field for t in Term if t is not Term.ON_DEMAND)
SAGEMAKER_PREFIX = "ml."


@dataclass(frozen=True)
class Source:
    key: str
    url: str
    retrieved: dt.date
    note: str = ""
    estimated: bool = False  # the figures are derived (e.g. a ratio applied to another price), not published


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bandwidth_gbs: float  # memory bandwidth, GB/s
    fp16_tflops: float  # dense tensor-core FP16
    bf16_tflops: float  # dense tensor-core BF16; 0 where the GPU has no bf16
    fp32_tflops: float
    int8_tops: float
    compute_capability: str
    source: Source
    # What the driver reports (nvidia-smi "Total", MiB): what a process can actually be given, unlike the
    # datasheet's "GB". None when no reading is on record; sizing then falls back to memory_gib.
    memory_reported_mib: int | None = None
    memory_reported_source: Source | None = None

    @property
    def supports_bf16(self) -> bool:
        return self.bf16_tflops > 0

    @property
    def reported_bytes(self) -> int:
        """GPU memory as the driver reports it (the datasheet figure as GiB where no reading is recorded)."""
        if self.memory_reported_mib:
            return int(self.memory_reported_mib) * 1024**2
        return int(self.memory_gib * 1024**3)


@dataclass(frozen=True)
class Instance:
    type: str
    gpu: Gpu | None
    gpu_count: int
    vcpus: int
    ram_gib: float
    efa: bool
    source: Source
    # Physical network cards; EFA bandwidth scales with one EFA interface per card (p4d 4, p5 32).
    network_cards: int = 1

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu.memory_gib if self.gpu else 0.0

    def require_gpu(self) -> Gpu:
        """This type's GPU, for code that only takes GPU types (gpu_instances' rows, a checked --instance-type);
        a CPU type there gets resolve_gpu_types' one line rather than an AttributeError."""
        if self.gpu is None:
            raise UsageError(f"instance type {self.type!r} has no GPU; models are hosted on GPU instances.",
                             hint="See 'llmdeploy instances' for GPU types.")
        return self.gpu

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_count


@dataclass(frozen=True)
class Ec2Price:
    region: str
    instance_type: str
    on_demand: float  # USD per hour, Linux, shared tenancy
    ri_1y: float | None  # effective USD per hour, standard RI, no upfront
    ri_3y: float | None
    source: Source
    ri_1y_source: Source | None = None  # None: the row's source (set only where a refresh kept an older term)
    ri_3y_source: Source | None = None

    def hourly(self, term: str) -> float | None:
        return getattr(self, Term(term).price_field)

    def term_source(self, term: str) -> Source:
        """Where the price of ``term`` came from: the row's source unless the term names its own (``ri_1y_source``)."""
        return getattr(self, f"{Term(term).price_field}_source", None) or self.source


@dataclass(frozen=True)
class HostingPrice:
    """SageMaker real-time / asynchronous hosting: the same per-instance-hour price."""

    region: str
    instance_type: str  # ml.* name
    hourly: float
    source: Source


@dataclass(frozen=True)
class ServerlessPrice:
    region: str
    usd_per_gb_second: float
    usd_per_gb_processed: float
    source: Source


@dataclass(frozen=True)
class CloudWatchPrices:
    """What the monitoring llmdeploy deploys costs per month (before the account's free tier)."""

    alarm_metric_monthly: float  # per standard-resolution alarm metric
    dashboard_monthly: float
    custom_metric_monthly: float  # first 10,000 metrics
    source: Source


@dataclass(frozen=True)
class OtherPrices:
    region: str
    alb_hourly: float
    kms_key_monthly: float
    source: Source
    public_ipv4_hourly: float | None = None  # None: the row does not state it (never guessed)
    public_ipv4_source: Source | None = None
    cloudwatch: CloudWatchPrices | None = None  # None: the row does not state them (never guessed)
    ebs_gp3_gb_month: float | None = None  # USD per GB-month of gp3 storage; None: not stated
    ebs_source: Source | None = None
    availability_zones: int | None = None  # default-VPC subnets the load balancer spans; None: not stated
    availability_zones_source: Source | None = None


@dataclass(frozen=True)
class ServerlessLimits:
    memory_sizes_mb: tuple[int, ...]
    max_concurrency: int  # per endpoint
    max_provisioned_concurrency: int
    max_payload_mb: float
    timeout_s: int
    max_image_gb: float
    gpu: bool
    source: Source


@dataclass(frozen=True)
class AsyncLimits:
    max_payload_gb: float
    max_processing_s: int
    max_concurrent_invocations_per_instance: int
    source: Source


@dataclass(frozen=True)
class Catalog:
    schema_version: int
    origin: str  # "bundled snapshot" or the cache path it came from
    sources: Mapping[str, Source]
    gpus: Mapping[str, Gpu]
    instances: Mapping[str, Instance]
    ec2: Mapping[tuple[str, str], Ec2Price]
    hosting: Mapping[tuple[str, str], HostingPrice]
    serverless: Mapping[str, ServerlessPrice]
    other: Mapping[str, OtherPrices]
    serverless_limits: ServerlessLimits
    async_limits: AsyncLimits
    regions: tuple[str, ...] = field(default=())

    @property
    def snapshot_date(self) -> dt.date:
        """The newest date any price in this catalog was read (specs and limits do not count): of every source a
        price stands on (``price_sources``), a reserved term's or CloudWatch's own included."""
        return max(s.retrieved for s in self.price_sources())

    def price_sources(self, region: str | None = None) -> list[Source]:
        """Every source a price row of ``region`` (all regions when None) stands on, once each."""
        keep = (lambda r: True) if region is None else (lambda r: r == region)
        found: dict[str, Source] = {}
        for (r, _), ec2 in self.ec2.items():
            if keep(r):
                for term in Term:  # a kept reserved term may name its own source (ri_1y_source / ri_3y_source)
                    if ec2.hourly(term) is not None:
                        found[ec2.term_source(term).key] = ec2.term_source(term)
        for (r, _), hosting in self.hosting.items():
            if keep(r):
                found[hosting.source.key] = hosting.source
        for r, serverless in self.serverless.items():
            if keep(r):
                found[serverless.source.key] = serverless.source
        for r, other in self.other.items():
            if keep(r):
                for src in (other.source, other.public_ipv4_source, other.cloudwatch.source if other.cloudwatch else None,
                            other.ebs_source, other.availability_zones_source):
                    if src is not None:
                        found[src.key] = src
        return list(found.values())

    def oldest_price_date(self, region: str | None = None) -> dt.date:
        """The oldest date among the prices in use (``region``'s, or all): how stale the worst figure may be."""
        return min(s.retrieved for s in self.price_sources(region))


# -- loading -------------------------------------------------------------------------------------


def _read(directory: Path, name: str) -> dict:
    from llmdeploy.fileio import read_text_utf8

    path = directory / name
    if not path.exists():
        raise ConfigError(f"catalog file {path} is missing.", hint="Reinstall llmdeploy or run 'llmdeploy prices refresh'.")
    text = read_text_utf8(path, "catalog file")  # a price cache that is not UTF-8 is one line, not a traceback
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"catalog file {path} is not valid TOML: {exc}.", hint="Delete it and run 'llmdeploy prices refresh'.") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(f"catalog file {path} has a value Python cannot read: {str(exc).split(';')[0]}.") from None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"catalog file {path} has schema_version {version!r}; this llmdeploy reads {SCHEMA_VERSION}.",
            hint="Upgrade llmdeploy or run 'llmdeploy prices refresh'.",
        )
    return data


def source_of(sources: Mapping[str, Source], key: str, where: str, *, prefix: str = "catalog row",
              defined_in: str = "sources.toml") -> Source:
    """The source a data row names (every data file's rows name one); ConfigError when it is not defined."""
    try:
        return sources[key]
    except KeyError:
        raise ConfigError(f"{prefix} {where} names source {key!r}, which {defined_in} does not define.") from None


def _other_prices(sources: Mapping[str, Source], region: str, row: Mapping) -> OtherPrices:
    where = f"other.{region}"
    ipv4, ipv4_source = _optional_figure(sources, where, row, "public_ipv4_hourly", "public_ipv4_source", unit="hour")
    ebs, ebs_source = _optional_figure(sources, where, row, "ebs_gp3_gb_month", "ebs_source", unit="GB-month")
    azs, azs_source = _optional_figure(sources, where, row, "availability_zones", "availability_zones_source")
    return OtherPrices(region, row["alb_hourly"], row["kms_key_monthly"], source_of(sources, row["source"], where),
                       ipv4, ipv4_source, _cloudwatch_prices(sources, where, row), ebs, ebs_source,
                       None if azs is None else int(azs), azs_source)


def _optional_figure(sources: Mapping[str, Source], where: str, row: Mapping, name: str, source_key: str, *,
                     unit: str = "") -> tuple[float | None, Source | None]:
    """An optional figure of a row and the source it names in its own ``source_key``: a price in USD per ``unit``
    (0 or more), or without ``unit`` a count (a whole number of 1 or more). (None, None) when the row has none."""
    value = row.get(name)
    if value is None:
        return None, None
    if unit:
        bad, use = not isinstance(value, (int, float)) or value < 0, f"a price in USD per {unit} (0 or more)"
    else:
        bad, use = not isinstance(value, int) or value < 1, "a whole number of 1 or more"
    if bad or isinstance(value, bool):
        raise ConfigError(f"catalog row {where} has {name} {value!r}; use {use}.")
    if source_key not in row:
        raise ConfigError(f"catalog row {where} has {name} but no {source_key} naming where it came from.")
    return (float(value) if unit else value), source_of(sources, row[source_key], f"{where}.{name}")


_CLOUDWATCH_KEYS = ("cloudwatch_alarm_metric_monthly", "cloudwatch_dashboard_monthly", "cloudwatch_custom_metric_monthly")


def _cloudwatch_prices(sources: Mapping[str, Source], where: str, row: Mapping) -> CloudWatchPrices | None:
    present = [k for k in _CLOUDWATCH_KEYS if k in row]
    if not present:
        return None
    if len(present) != len(_CLOUDWATCH_KEYS):
        missing = ", ".join(k for k in _CLOUDWATCH_KEYS if k not in row)
        raise ConfigError(f"catalog row {where} prices CloudWatch only in part; add {missing} or remove the others.")
    for key in _CLOUDWATCH_KEYS:
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"catalog row {where} has {key} {value!r}; use a price in USD per month (0 or more).")
    if "cloudwatch_source" not in row:
        raise ConfigError(f"catalog row {where} has CloudWatch prices but no cloudwatch_source naming where they came from.")
    return CloudWatchPrices(float(row["cloudwatch_alarm_metric_monthly"]), float(row["cloudwatch_dashboard_monthly"]),
                            float(row["cloudwatch_custom_metric_monthly"]),
                            source_of(sources, row["cloudwatch_source"], f"{where}.cloudwatch"))


def _network_cards(row: Mapping, itype: str) -> int:
    cards = row.get("network_cards", 1)  # absent: the common single-card type
    if isinstance(cards, bool) or not isinstance(cards, int) or cards < 1:
        raise ConfigError(f"catalog instance {itype!r} has network_cards {cards!r}; use a whole number of 1 or more.")
    return cards


def _malformed_is_one_line(load):
    """A catalog folder with a missing key or a value of the wrong type (a hand-edited or truncated price cache)
    is one ConfigError naming the folder, not a KeyError traceback."""

    @functools.wraps(load)
    def wrapper(directory: Path, origin: str | None = None) -> Catalog:
        try:
            return load(directory, origin)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"lacks {exc.args[0]!r}" if isinstance(exc, KeyError) else f"has a malformed value ({exc})"
            raise ConfigError(f"catalog {directory} {what}.",
                              hint="Run 'llmdeploy prices clear' (a refreshed cache) or fix the --catalog folder.") from None

    return wrapper


@_malformed_is_one_line
def load_catalog_from(directory: Path, origin: str | None = None) -> Catalog:
    """Parse one catalog directory. Raises ConfigError on anything malformed."""
    directory = Path(directory)
    sources = _read_sources(directory)
    gpus = _read_gpus(directory, sources)
    instances = _read_instances(directory, sources, gpus)
    ec2 = _read_ec2(directory, sources)
    sm = _read(directory, "sagemaker_prices.toml")
    hosting = {
        (region, itype): HostingPrice(region, itype, row["hourly"], source_of(sources, row["source"], f"hosting.{region}.{itype}"))
        for region, rows in sm["hosting"].items()
        for itype, row in rows.items()
    }
    serverless = {
        region: ServerlessPrice(
            region, row["usd_per_gb_second"], row["usd_per_gb_processed"], source_of(sources, row["source"], f"serverless.{region}")
        )
        for region, row in sm["serverless"].items()
    }
    other = {region: _other_prices(sources, region, row) for region, row in sm["other"].items()}
    serverless_limits, async_limits = _read_limits(directory, sources)
    regions = tuple(sorted({r for r, _ in ec2} | {r for r, _ in hosting}))
    return Catalog(
        schema_version=SCHEMA_VERSION,
        origin=origin or str(directory),
        sources=MappingProxyType(sources),
        gpus=MappingProxyType(gpus),
        instances=MappingProxyType(instances),
        ec2=MappingProxyType(ec2),
        hosting=MappingProxyType(hosting),
        serverless=MappingProxyType(serverless),
        other=MappingProxyType(other),
        serverless_limits=serverless_limits,
        async_limits=async_limits,
        regions=regions,
    )


def _read_sources(directory: Path) -> dict[str, Source]:
    return {
        key: Source(key=key, url=row["url"], retrieved=row["retrieved"], note=row.get("note", ""),
                    estimated=bool(row.get("estimated", False)))
        for key, row in _read(directory, "sources.toml")["sources"].items()
    }


def _read_gpus(directory: Path, sources: Mapping[str, Source]) -> dict[str, Gpu]:
    gpus = {
        name: Gpu(
            name=name,
            memory_gib=row["memory_gib"],
            bandwidth_gbs=row["bandwidth_gbs"],
            fp16_tflops=row["fp16_tflops"],
            bf16_tflops=row.get("bf16_tflops", 0.0),
            fp32_tflops=row["fp32_tflops"],
            int8_tops=row.get("int8_tops", 0.0),
            compute_capability=str(row["compute_capability"]),
            source=source_of(sources, row["source"], f"gpus.{name}"),
            memory_reported_mib=row.get("memory_reported_mib"),
            memory_reported_source=(source_of(sources, row["memory_reported_source"], f"gpus.{name}.memory_reported_mib")
                                    if "memory_reported_source" in row else None),
        )
        for name, row in _read(directory, "gpus.toml")["gpus"].items()
    }
    for name, gpu in gpus.items():
        mib = gpu.memory_reported_mib
        if mib is not None and (isinstance(mib, bool) or not isinstance(mib, int) or mib < 1 or gpu.memory_reported_source is None):
            raise ConfigError(f"catalog GPU {name!r} has memory_reported_mib {mib!r}; use a whole number of MiB with a "
                              "memory_reported_source naming where the reading came from.")
    return gpus


def _read_instances(directory: Path, sources: Mapping[str, Source], gpus: Mapping[str, Gpu]) -> dict[str, Instance]:
    instances = {}
    for itype, row in _read(directory, "instances.toml")["instances"].items():
        gpu_name = row.get("gpu")
        if gpu_name is not None and gpu_name not in gpus:
            raise ConfigError(f"catalog instance {itype!r} names GPU {gpu_name!r}, which gpus.toml does not define.")
        instances[itype] = Instance(
            type=itype,
            gpu=gpus[gpu_name] if gpu_name else None,
            gpu_count=row.get("gpu_count", 0),
            vcpus=row["vcpus"],
            ram_gib=row["ram_gib"],
            efa=row.get("efa", False),
            source=source_of(sources, row["source"], f"instances.{itype}"),
            network_cards=_network_cards(row, itype),
        )
    return instances


def _read_ec2(directory: Path, sources: Mapping[str, Source]) -> dict[tuple[str, str], Ec2Price]:
    ec2 = {}
    for region, rows in _read(directory, "ec2_prices.toml")["ec2"].items():
        for itype, row in rows.items():
            for term in RESERVED_FIELDS:
                if f"{term}_source" in row and row.get(term) is None:
                    raise ConfigError(f"catalog row ec2.{region}.{itype} has {term}_source but no {term} price.")
            ec2[(region, itype)] = Ec2Price(
                region=region,
                instance_type=itype,
                on_demand=row["on_demand"],
                ri_1y=row.get("ri_1y"),
                ri_3y=row.get("ri_3y"),
                source=source_of(sources, row["source"], f"ec2.{region}.{itype}"),
                **{f"{term}_source": source_of(sources, row[f"{term}_source"], f"ec2.{region}.{itype}.{term}")
                   for term in RESERVED_FIELDS if f"{term}_source" in row},
            )
    return ec2


def _read_limits(directory: Path, sources: Mapping[str, Source]) -> tuple[ServerlessLimits, AsyncLimits]:
    limits = _read(directory, "limits.toml")
    sl, al = limits["serverless"], limits["async"]
    # Ranges AWS's API models declare come from llmdeploy/data/aws_limits.json (generated from botocore, the one
    # place they live); limits.toml keeps what only the documentation states (the 1 GB memory step, payloads).
    from llmdeploy import apilimits

    mem_low, mem_high = apilimits.int_range("serverlessMemoryMb")[0], apilimits.int_max("serverlessMemoryMb")
    serverless_limits = ServerlessLimits(
        memory_sizes_mb=tuple(range(mem_low, mem_high + 1, sl["memory_step_mb"])),
        max_concurrency=apilimits.int_max("serverlessMaxConcurrency"),
        max_provisioned_concurrency=apilimits.int_max("serverlessProvisionedConcurrency"),
        max_payload_mb=sl["max_payload_mb"],
        timeout_s=sl["timeout_s"],
        max_image_gb=sl["max_image_gb"],
        gpu=sl["gpu"],
        source=source_of(sources, sl["source"], "limits.serverless"),
    )
    async_limits = AsyncLimits(
        max_payload_gb=al["max_payload_gb"],
        max_processing_s=al["max_processing_s"],
        max_concurrent_invocations_per_instance=apilimits.int_max("asyncMaxConcurrentInvocations"),
        source=source_of(sources, al["source"], "limits.async"),
    )
    return serverless_limits, async_limits


def user_cache_dir() -> Path:
    """Where ``llmdeploy prices refresh`` writes a refreshed catalog."""
    base = os.environ.get("LLMDEPLOY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmdeploy"
    )
    return Path(base) / "catalog"


@functools.cache
def load_catalog(directory: str | None = None) -> Catalog:
    """The catalog for this process: ``directory`` if given, else the user cache when present, else bundled."""
    if directory:
        return load_catalog_from(Path(directory))
    cache = user_cache_dir()
    if (cache / "sources.toml").is_file() and os.environ.get("LLMDEPLOY_BUNDLED_PRICES") != "1":
        return load_catalog_from(cache, origin=f"refreshed cache {cache}")
    return load_catalog_from(BUNDLED_DIR, origin="bundled snapshot")


# -- queries: each takes the catalog as its first argument ----------------------------------------


def price_rows(cat: Catalog) -> list[dict]:
    """Every price in the catalog, one dict per figure, each with its source, date and whether it is estimated."""
    def row(region, kind, item, field, value, unit, src: Source) -> dict:
        return {"region": region, "kind": kind, "item": item, "field": field, "value": value, "unit": unit,
                "source": src.key, "url": src.url, "date": src.retrieved.isoformat(), "estimated": src.estimated}

    out = []
    for (region, itype), p in sorted(cat.ec2.items()):
        for term in Term:
            if p.hourly(term) is not None:
                out.append(row(region, "ec2", itype, term, p.hourly(term), "USD/hour", p.term_source(term)))
    for (region, itype), h in sorted(cat.hosting.items()):
        out.append(row(region, "sagemaker-hosting", itype, "hourly", h.hourly, "USD/hour", h.source))
    for region, s in sorted(cat.serverless.items()):
        out.append(row(region, "sagemaker-serverless", "compute", "usd_per_gb_second", s.usd_per_gb_second, "USD/GB-second", s.source))
        out.append(row(region, "sagemaker-serverless", "data", "usd_per_gb_processed", s.usd_per_gb_processed, "USD/GB", s.source))
    for region, o in sorted(cat.other.items()):
        out.append(row(region, "other", "application load balancer", "alb_hourly", o.alb_hourly, "USD/hour", o.source))
        out.append(row(region, "other", "KMS key", "kms_key_monthly", o.kms_key_monthly, "USD/month", o.source))
        if o.public_ipv4_hourly is not None and o.public_ipv4_source:
            out.append(row(region, "other", "public IPv4 address", "public_ipv4_hourly", o.public_ipv4_hourly, "USD/hour",
                           o.public_ipv4_source))
        if o.ebs_gp3_gb_month is not None and o.ebs_source:
            out.append(row(region, "other", "EBS gp3 storage", "ebs_gp3_gb_month", o.ebs_gp3_gb_month, "USD/GB-month", o.ebs_source))
        if o.cloudwatch is not None:
            cw = o.cloudwatch
            for item, fld, value in (
                    ("CloudWatch alarm metric", "cloudwatch_alarm_metric_monthly", cw.alarm_metric_monthly),
                    ("CloudWatch dashboard", "cloudwatch_dashboard_monthly", cw.dashboard_monthly),
                    ("CloudWatch custom metric", "cloudwatch_custom_metric_monthly", cw.custom_metric_monthly)):
                out.append(row(region, "other", item, fld, value, "USD/month", cw.source))
    return out



def check_region(cat: Catalog, region: str) -> str:
    if region not in cat.regions:
        raise UnknownChoiceError("region", region, cat.regions, fix="Pass --region with one of these.")
    return region


def instance(cat: Catalog, instance_type: str) -> Instance:
    """The hardware of an EC2 type; ``ml.`` SageMaker names resolve to the same hardware."""
    bare = instance_type.removeprefix(SAGEMAKER_PREFIX)
    try:
        return cat.instances[bare]
    except KeyError:
        raise UnknownChoiceError("instance type", instance_type, cat.instances, fix="See 'llmdeploy instances'.") from None


def ec2_price(cat: Catalog, region: str, instance_type: str) -> Ec2Price:
    check_region(cat, region)
    instance(cat, instance_type)
    try:
        return cat.ec2[(region, instance_type)]
    except KeyError:
        offered = [t for r, t in cat.ec2 if r == region]
        raise UnknownChoiceError(
            f"instance type in {region}", instance_type, offered, fix="Pick a type offered in this region or another --region."
        ) from None


def hosting_price(cat: Catalog, region: str, instance_type: str) -> HostingPrice:
    """SageMaker hosting price for an ``ml.`` type (a bare EC2 name is accepted and prefixed)."""
    check_region(cat, region)
    ml = instance_type if instance_type.startswith(SAGEMAKER_PREFIX) else SAGEMAKER_PREFIX + instance_type
    try:
        return cat.hosting[(region, ml)]
    except KeyError:
        offered = [t for r, t in cat.hosting if r == region]
        raise UnknownChoiceError(
            f"SageMaker instance type in {region}", ml, offered, fix="Pick an ml.* type offered in this region."
        ) from None


def serverless_price(cat: Catalog, region: str) -> ServerlessPrice:
    check_region(cat, region)
    try:
        return cat.serverless[region]
    except KeyError:
        raise UnknownChoiceError("region for SageMaker serverless", region, cat.serverless) from None


def other_prices(cat: Catalog, region: str) -> OtherPrices:
    check_region(cat, region)
    try:
        return cat.other[region]
    except KeyError:
        raise UnknownChoiceError("region for load balancer / KMS prices", region, cat.other) from None


def gpu_instances(cat: Catalog, region: str, families: Iterable[str] | None = None) -> list[Instance]:
    """GPU instance types priced on EC2 in ``region``, cheapest on-demand first."""
    check_region(cat, region)
    wanted = set(families) if families else None
    rows = [
        cat.instances[t]
        for (r, t) in cat.ec2
        if r == region and t in cat.instances and cat.instances[t].gpu and (wanted is None or cat.instances[t].family in wanted)
    ]
    return sorted(rows, key=lambda i: (cat.ec2[(region, i.type)].on_demand, i.type))


def resolve_gpu_types(cat: Catalog, names: Iterable[str]) -> tuple[str, ...]:
    """Bare EC2 names of the GPU types a user named (``ml.`` names accepted), sorted, once each."""
    out = set()
    for name in names:
        inst = instance(cat, name)
        if inst.gpu is None:
            raise UsageError(f"instance type {name!r} has no GPU; models are hosted on GPU instances.",
                             hint="See 'llmdeploy instances' for GPU types.")
        out.add(inst.type)
    return tuple(sorted(out))
