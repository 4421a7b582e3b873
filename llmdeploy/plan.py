"""Every way of hosting a model for a traffic profile: cost, feasibility, break-even, a recommendation.

Data flows one way: model config → sizing → catalog → costs → this module.
The expensive part (which instance serves how many requests per second) does
not depend on traffic volume, so it is computed once per instance
(``_Candidate``); costs at other traffic levels (break-even, charts) reuse it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from llmdeploy import calibration as cal_mod
from llmdeploy import catalog as cat_mod
from llmdeploy import checks, costs, monitoring, sizing
from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Catalog, Instance
from llmdeploy.enums import Mode, Term
from llmdeploy.errors import InfeasibleError, UnknownChoiceError, UsageError
from llmdeploy.handlers import serving_config as serving
from llmdeploy.models import ModelConfig
from llmdeploy.stackconfig import StackConfig

AUTO = "auto"  # --mode auto: the recommended option
PLAN_MODES = (*(mode.value for mode in Mode), AUTO)  # plain strings: click.Choice matches an Enum member by its name
BREAK_EVEN_RANGE = (1.0, 1e8)  # requests per day over which break-even and the cheapest option are stated
# Every option plan prices: reserved once per term, each managed mode once (declaration order: the tie-break).
OPTION_KEYS: tuple[tuple[Mode, Term | None], ...] = (
    *((Mode.RESERVED, term) for term in Term), *((mode, None) for mode in Mode if mode is not Mode.RESERVED))
_T = TypeVar("_T")
SERVERLESS_DTYPE = "fp32"  # the handler runs fp32 on a CPU whatever the checkpoint's dtype (handlers/precision.py)


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float = 10_000
    input_tokens: int = 256
    output_tokens: int = 64
    active_hours: int = 12  # hours a day with traffic
    latency_target_s: float = 5.0
    peak_rps: float | None = None  # derived from the average when None

    def validate(self) -> Traffic:
        # One check per number (llmdeploy.checks: finite, in range); the CLI's flags only parse.
        checks.number("--requests-per-day", self.requests_per_day, above=0, maximum=checks.MAX_REQUESTS_PER_DAY)
        checks.number("--input-tokens", self.input_tokens, minimum=1, maximum=checks.MAX_TOKENS)
        checks.number("--output-tokens", self.output_tokens, minimum=1, maximum=checks.MAX_TOKENS)
        checks.number("--active-hours", self.active_hours, minimum=1, maximum=24)
        checks.number("--latency-target", self.latency_target_s, above=0, maximum=checks.MAX_LATENCY_S)
        if self.peak_rps is not None:
            checks.number("--peak-rps", self.peak_rps, above=0, maximum=checks.MAX_RPS)
            average = self.requests_per_day / (self.active_hours * 3600)
            if self.peak_rps < average * (1 - 1e-9):  # equal is flat traffic; the margin absorbs rounding
                raise UsageError(
                    f"--peak-rps {self.peak_rps:g} is below the average rate of {average:.4g} requests/s that "
                    f"--requests-per-day {self.requests_per_day:g} over --active-hours {self.active_hours} implies.",
                    hint=f"Pass --peak-rps {average:.4g} or more, or fewer requests per day.",
                )
        return self

    def peak(self, a: Assumptions) -> float:
        if self.peak_rps is not None:
            return self.peak_rps
        return self.requests_per_day / (self.active_hours * 3600) * a.peak_to_average

    @property
    def requests_per_month(self) -> float:
        return self.requests_per_day * costs.DAYS_PER_MONTH

    def scaled(self, requests_per_day: float) -> Traffic:
        """The same shape of traffic at another volume (the peak scales with it)."""
        factor = requests_per_day / self.requests_per_day
        peak = None if self.peak_rps is None else self.peak_rps * factor
        return replace(self, requests_per_day=requests_per_day, peak_rps=peak)


def option_label(mode: Mode, term: Term | None) -> str:
    """How an option is named in tables, break-even notes and charts: "reserved (1-year RI)", "async"."""
    return f"{mode} ({term.label})" if term else str(mode)


@dataclass(frozen=True)
class Option:
    mode: Mode
    term: Term | None  # reserved only
    instance_type: str | None
    instance_count: int
    feasible: bool
    reason: str
    line_items: tuple[costs.LineItem, ...] = ()
    latency_s: float | None = None
    batch_size: int | None = None
    requests_per_s_per_instance: float | None = None
    tensor_parallel: int = 1
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int | None = None
    ms_per_request: int | None = None
    speed_model: str = ""  # the calibration the latency came from

    @property
    def monthly_usd(self) -> float | None:
        return round(costs.total(self.line_items), 2) if self.feasible else None

    def monthly(self) -> float:
        """``monthly_usd`` of an option that can host the model (the choice, the recommendation)."""
        return self.known(self.monthly_usd, "monthly cost")

    def known(self, value: _T | None, what: str) -> _T:
        """One of this option's fields that every feasible option has (its instance type, batch, serverless memory,
        cost...); a one-line InfeasibleError with the option's reason if this option cannot host the model."""
        if value is None:
            raise InfeasibleError(f"{self.label} has no {what}: it cannot host the model ({self.reason}).")
        return value

    @property
    def annual_usd(self) -> float | None:
        return None if self.monthly_usd is None else round(self.monthly_usd * 12, 2)

    @property
    def label(self) -> str:
        return option_label(self.mode, self.term)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "term": self.term,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "monthly_usd": self.monthly_usd,
            "annual_usd": self.annual_usd,
            "feasible": self.feasible,
            "reason": self.reason,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 3),
            "batch_size": self.batch_size,
            "requests_per_s_per_instance": None if self.requests_per_s_per_instance is None else round(self.requests_per_s_per_instance, 3),
            "tensor_parallel": self.tensor_parallel,
            "serverless_memory_mb": self.serverless_memory_mb,
            "speed_model": self.speed_model,
            "line_items": [
                {
                    "kind": i.kind,
                    "description": i.description,
                    "quantity": round(i.quantity, 3),
                    "unit": i.unit,
                    "unit_usd": i.unit_usd,
                    "monthly_usd": round(i.monthly_usd, 2),
                    "source": i.source,
                }
                for i in self.line_items
            ],
        }


@dataclass(frozen=True)
class Interval:
    """A stretch of traffic (requests/day, ``low`` exclusive unless it is the range's start, ``high`` inclusive)."""

    low: float
    high: float
    option: str  # the cheapest option's label there; "" where no option can serve


@dataclass(frozen=True)
class BreakEven:
    managed: str  # option label
    versus: str
    variable: str  # "requests_per_day" or "active_hours_per_day"
    value: float | None  # the first crossing, None if there is none
    note: str
    crossings: tuple[float, ...] = ()  # every point where the cheaper of the two changes
    managed_cheaper: tuple[tuple[float, float], ...] = ()  # the stretches where ``managed`` is the cheaper one


@dataclass(frozen=True)
class Plan:
    model: ModelConfig
    dtype: str
    region: str
    traffic: Traffic
    mode: Mode | str  # a Mode, or AUTO
    term: Term
    options: tuple[Option, ...]
    choice: Option
    recommended: Option
    reasons: tuple[str, ...]
    break_even: tuple[BreakEven, ...]
    catalog_origin: str
    catalog_date: str  # the oldest date among the prices of this region
    assumptions: Assumptions = field(repr=False)
    instance_types: tuple[str, ...] = ()  # the candidates the user restricted the plan to, if any
    cheapest: tuple[Interval, ...] = ()  # the cheapest option over BREAK_EVEN_RANGE
    cheapest_exact_to: float = BREAK_EVEN_RANGE[1]  # exact up to here; a fine grid beyond (see _intervals)
    calibrations: tuple[dict, ...] = ()  # the speed calibrations the plan used
    loading: str = "safetensors"
    calibration_files: tuple[str, ...] = ()


# -- per-instance serving capacity (traffic-independent) ----------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    instance: Instance
    fit: sizing.Fit
    reason: str
    latency: sizing.Latency | None = None  # the batch it serves best at; None when it cannot serve (``reason``)

    @property
    def ok(self) -> bool:
        return self.latency is not None

    @property
    def rps(self) -> float:
        return self.fit.replicas * self.latency.requests_per_s if self.latency is not None else 0.0


def _capacity(m: ModelConfig, dtype: str, inst: Instance, traffic: Traffic, *, loading: str, buffer: float | None,
              a: Assumptions, latency_target: float | None, cals: cal_mod.CalibrationSet) -> _Candidate:
    mem1 = sizing.inference_memory(m, dtype, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens, buffer=buffer)
    host = sizing.host_ram_to_load(m, dtype, loading, a)
    fit = sizing.fit_on_instance(mem1, host, inst, a, dtype=dtype)
    if not fit.fits:
        return _Candidate(inst, fit, fit.reason)
    if m.encoder_decoder and fit.tensor_parallel > 1:
        # What gets deployed is the LMI handler (handlers/), which loads one copy of a T5 model on one GPU: a copy
        # split over several GPUs would not load there, and the speed model's tensor-parallel scaling is not what
        # it would run.
        return _Candidate(inst, fit, f"the LMI handler runs one copy of {m.name} per GPU; here it would need "
                                           f"tensor parallel degree {fit.tensor_parallel}")
    gpu = inst.require_gpu()  # fit_on_instance refused a type without one above
    cal = cals.for_gpu(gpu, dtype)
    usable = sizing.gpu_usable_bytes(gpu, a)
    # The batch: up to the handler's default (the batches `llmdeploy calibrate` measures); the one chosen goes into
    # the stack as maxBatchSize, which package writes where the deployed server reads it (serving_config).
    # sizing.latency times `batch` requests decoded together, each making the traffic's output_tokens, and
    # requests_per_s = batch / that time: the speed of transformers' generate() on `batch` requests, which the
    # calibrations time. On a GPU the deployment's default is static batches (stack setting batching: auto; DJL's
    # dynamic batching of `batch` requests, one generate() call each), which this describes for the traffic's
    # uniform output_tokens; with mixed lengths a batch runs to its longest request and a request may also wait
    # for the batch ahead of it (up to one more total_s plus max_batch_delay), which plan does not model. On a CPU
    # (serverless) the default is iteration-level batching, where a finished request's slot is refilled at the next
    # step, so each slot turns over one request per latency.total_s whatever the mix of lengths.
    # Batch 1 is mem1, which fit_on_instance found fits: it always runs, and it alone decides the latency target.
    best = sizing.latency(m, dtype, cal, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens,
                          tensor_parallel=fit.tensor_parallel)
    if latency_target is not None and best.total_s > latency_target:
        return _Candidate(inst, fit, f"~{best.total_s:.1f} s per request exceeds the {latency_target:g} s latency target")
    batch = 2
    while batch <= serving.DEFAULT_MAX_BATCH_SIZE:
        mem = sizing.inference_memory(m, dtype, batch=batch, input_tokens=traffic.input_tokens,
                                      output_tokens=traffic.output_tokens, buffer=buffer)
        if mem.per_gpu(fit.tensor_parallel) > usable:
            break
        lat = sizing.latency(m, dtype, cal, batch=batch, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens,
                             tensor_parallel=fit.tensor_parallel)
        if latency_target is not None and lat.total_s > latency_target:
            break
        if lat.requests_per_s > best.requests_per_s:
            best = lat
        batch *= 2
    return _Candidate(inst, fit, fit.reason, best)


def _candidates(m, dtype, cat: Catalog, region: str, traffic: Traffic, instance_types, *, loading, buffer, a, latency_target, cals):
    return [
        _capacity(m, dtype, cat_mod.instance(cat, t), traffic, loading=loading, buffer=buffer, a=a, latency_target=latency_target,
                  cals=cals)
        for t in instance_types
    ]


# -- costing each mode ------------------------------------------------------------------------------------


def _cheapest(cands: list[_Candidate], traffic: Traffic, a: Assumptions, price: Callable[[_Candidate, int], list[costs.LineItem]]):
    """(candidate, count, line items) of the cheapest feasible candidate, or None."""
    peak = traffic.peak(a)
    best = None
    for c in cands:
        if not c.ok:
            continue
        count = costs.instances_for(peak, c.rps)
        items = price(c, count)
        key = (costs.total(items), c.instance.type)
        if best is None or key < best[0]:
            best = (key, c, count, items)
    return None if best is None else best[1:]


def _why_none(cands: list[_Candidate], where: str) -> str:
    if not cands:
        return f"no GPU instance type is priced for {where} in this region"
    shown = "; ".join(f"{c.instance.type}: {c.reason}" for c in cands[:3])
    more = f" (and {len(cands) - 3} more)" if len(cands) > 3 else ""
    return f"no {where} instance can host it: {shown}{more}"


def _instance_option(mode: Mode, term: Term | None, cands, traffic, a, price) -> Option:
    picked = _cheapest(cands, traffic, a, price)
    if picked is None:
        return Option(mode, term, None, 0, False, _why_none(cands, mode.label))
    c, count, items = picked
    return Option(
        mode, term, _name_for(mode, c.instance.type), count, True,
        f"{c.reason}; {c.latency.requests_per_s * c.fit.replicas:.2f} req/s per instance at batch {c.latency.batch}",
        tuple(items), c.latency.total_s, c.latency.batch, c.rps, c.fit.tensor_parallel, speed_model=c.latency.speed_model,
    )


def _name_for(mode: Mode, instance_type: str) -> str:
    return cat_mod.SAGEMAKER_PREFIX + instance_type if mode.on_sagemaker else instance_type


def _serverless_option(m: ModelConfig, cat: Catalog, region: str, traffic: Traffic, *, buffer, a: Assumptions,
                       cals: cal_mod.CalibrationSet) -> Option:
    """SageMaker serverless: CPUs only, so the handler runs fp32 there; speed from the CPU calibration."""
    limits = cat.serverless_limits
    if region not in cat.serverless:
        return Option(Mode.SERVERLESS, None, None, 0, False,
                      f"the catalog has no SageMaker serverless price for {region} (run 'llmdeploy prices refresh')")
    # The endpoint runs the handler in the LMI CPU image: weights in fp32 whatever the stack's dtype
    # (handlers/precision.py: fp32 on CPU) beside DJL's Java front end (its heap, llmdeploy/data/lmi.toml).
    from llmdeploy.lmi import load_lmi_table

    dtype = SERVERLESS_DTYPE
    mem = sizing.inference_memory(m, dtype, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens,
                                  buffer=buffer, a=a)
    needed = mem.total + int((a.host_overhead_gib + load_lmi_table().cpu_image.jvm_heap_gib) * sizing.GIB)
    sizes = [s for s in limits.memory_sizes_mb if s * 1024**2 >= needed]
    if not sizes:
        return Option(Mode.SERVERLESS, None, None, 0, False,
                      f"needs {needed / 1e9:.1f} GB of memory ({dtype} on CPU); SageMaker serverless allows at most "
                      f"{max(limits.memory_sizes_mb)} MB")
    cal = cals.for_cpu()
    lat = sizing.latency(m, dtype, cal, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens)
    if lat.total_s > min(traffic.latency_target_s, limits.timeout_s):
        bound = "the latency target" if traffic.latency_target_s <= limits.timeout_s else "the serverless timeout"
        limit = min(traffic.latency_target_s, limits.timeout_s)
        return Option(Mode.SERVERLESS, None, None, 0, False,
                      f"needs a GPU: ~{lat.total_s:.1f} s per request on serverless CPUs ({cal.origin} CPU speed) exceeds "
                      f"{bound} of {limit:g} s (SageMaker serverless has no GPUs)", latency_s=lat.total_s, speed_model=lat.speed_model)
    concurrency = max(1, math.ceil(traffic.peak(a) * lat.total_s))
    if concurrency > limits.max_concurrency:
        return Option(Mode.SERVERLESS, None, None, 0, False,
                      f"peak needs {concurrency} concurrent invocations; serverless allows {limits.max_concurrency} per endpoint",
                      latency_s=lat.total_s, speed_model=lat.speed_model)
    memory_mb = sizes[0]
    ms = math.ceil(lat.total_s * 1000)
    items = hosting_items(cat, region, Mode.SERVERLESS, serverless_memory_mb=memory_mb, requests_per_month=traffic.requests_per_month,
                          ms_per_request=ms, bytes_per_request=_bytes_per_request(traffic, a))
    return Option(Mode.SERVERLESS, None, None, 0, True,
                  f"{memory_mb} MB, ~{lat.total_s:.2f} s per request on CPU ({dtype}, {cal.origin} CPU speed), concurrency {concurrency}",
                  tuple(items), lat.total_s, 1, None, 1, memory_mb, concurrency, ms, speed_model=lat.speed_model)


def _bytes_per_request(traffic: Traffic, a: Assumptions) -> int:
    return math.ceil((traffic.input_tokens + traffic.output_tokens) * a.bytes_per_token + a.json_overhead_bytes)


@dataclass(frozen=True)
class _Context:
    """Everything traffic-independent, so options can be re-costed at other traffic levels cheaply."""

    m: ModelConfig
    dtype: str
    cat: Catalog
    region: str
    a: Assumptions
    buffer: float | None
    ec2: list
    hosting: list
    hosting_async: list
    cals: cal_mod.CalibrationSet

    def options(self, traffic: Traffic) -> list[Option]:
        return [self.option(mode, term, traffic) for mode, term in OPTION_KEYS]

    def option(self, mode: Mode | str, term: Term | str | None, traffic: Traffic) -> Option:
        mode, term = Mode(mode), None if term is None else Term(term)
        cat, region, a = self.cat, self.region, self.a
        if mode == Mode.SERVERLESS:
            return _serverless_option(self.m, cat, region, traffic, buffer=self.buffer, a=a, cals=self.cals)
        if mode == Mode.RESERVED:
            # The plan prices the fleet the program creates by default: an internal load balancer (issue 10), which
            # has no public IPv4 addresses. A stack made internet-facing pays for them (planned_line_items).
            other = cat_mod.other_prices(cat, region)
            if other.ebs_gp3_gb_month is None:
                return Option(mode, term, None, 0, False, f"the catalog has no EBS gp3 figure for {region}, which a "
                              "self-hosted fleet pays for (root volumes)")
        cands, price = self.priced(mode, term, traffic.active_hours)
        return _instance_option(mode, term, cands, traffic, a, price)

    def priced(self, mode: Mode, term: Term | None, active_hours: float):
        """(candidates, price(candidate, count) -> line items) of an instance-based mode."""
        cat, region, a = self.cat, self.region, self.a

        def price(c, n):
            return hosting_items(cat, region, mode, instance_type=c.instance.type, count=n, gpus=c.instance.gpu_count,
                                 term=term, active_hours=active_hours, root_volume_gb=a.root_volume_gb)
        if mode == Mode.RESERVED:
            # A type without a published price for this term is not a candidate for it.
            paid = _reserved_term(term)
            return [c for c in self.ec2 if cat.ec2[(region, c.instance.type)].hourly(paid) is not None], price
        if mode == Mode.REALTIME:
            return self.hosting, price
        return self.hosting_async, price


def hosting_items(cat: Catalog, region: str, mode: Mode, *, instance_type: str = "", count: int = 0, gpus: int = 0,
                  term: Term | None = Term.ONE_YEAR, active_hours: float = 24, serverless_memory_mb: int = 0,
                  requests_per_month: float = 0, ms_per_request: float = 0, bytes_per_request: float = 0,
                  root_volume_gb: int | None = None, internet_facing: bool = False,
                  monitored: monitoring.Billable | None = None) -> list[costs.LineItem]:
    """The monthly line items of one way of hosting: the one pricing rule plan, status, the budget and the tests share.

    Reserved: the instances, their gp3 root volumes (``root_volume_gb`` each, by default the assumptions' figure
    the program provisions), the load balancer and, when ``internet_facing``, its public IPv4 addresses.
    ``monitored`` is what the stack's monitoring bills (alarms, dashboard, agent metrics); by default the full
    set the Pulumi program creates for this mode (llmdeploy.monitoring).
    """
    if mode == Mode.RESERVED:
        volume = load_assumptions().root_volume_gb if root_volume_gb is None else root_volume_gb
        items = costs.reserved_fleet(cat, region, instance_type, count, _reserved_term(term), volume,
                                     internet_facing=internet_facing)
    elif mode == Mode.REALTIME:
        items = [costs.sagemaker_instances(cat, region, instance_type, count, 24)]
    elif mode == Mode.ASYNC:
        # Scales to zero: instance-hours only while traffic lasts.
        items = [costs.sagemaker_instances(cat, region, instance_type, count, active_hours), costs.kms_key(cat, region)]
    else:
        items = costs.serverless(cat, region, serverless_memory_mb, requests_per_month, ms_per_request, bytes_per_request)
    b = monitored or monitoring.billable(mode, instance_count=count, gpus_per_instance=gpus)
    return items + costs.monitoring(cat, region, alarm_metrics=b.alarm_metrics, dashboards=b.dashboards,
                                    custom_metrics=b.custom_metrics)


def _reserved_term(term: Term | None) -> Term:
    """The term a reserved-mode price needs (the other modes have none: OPTION_KEYS pairs them with None)."""
    if term is None:
        raise UsageError(f"the reserved mode is priced per term, and none was given; valid: {', '.join(Term)}.")
    return term


def planned_line_items(config: StackConfig, cat: Catalog) -> list[costs.LineItem]:
    """What a stack config costs per month, priced as ``plan`` priced it (``llmdeploy status`` compares the bill,
    the program checks its budget against it, ``preview --offline`` prices the same resources)."""
    return hosting_items(
        cat, config.region, config.mode, instance_type=config.instance_type, count=config.instance_count,
        term=config.term, active_hours=config.usage_active_hours_per_day, serverless_memory_mb=config.serverless_memory_mb,
        requests_per_month=config.usage_requests_per_month, ms_per_request=config.usage_ms_per_request,
        bytes_per_request=config.usage_bytes_per_request, internet_facing=config.internet_facing,
        monitored=monitoring.billable_for(config, cat))


def _context(m, dtype, cat, region, traffic, *, loading, buffer, a, cals: cal_mod.CalibrationSet,
             only: tuple[str, ...] = ()) -> _Context:
    ec2_types = [t for (r, t) in cat.ec2 if r == region and t in cat.instances and cat.instances[t].gpu]
    hosted = [t.removeprefix(cat_mod.SAGEMAKER_PREFIX) for (r, t) in cat.hosting if r == region]
    hosted = [t for t in hosted if t in cat.instances and cat.instances[t].gpu]
    if only:
        ec2_types = [t for t in ec2_types if t in only]
        hosted = [t for t in hosted if t in only]
    kw = dict(loading=loading, buffer=buffer, a=a, cals=cals)
    # Async requests queue instead of waiting on a socket: no latency target, only the service's processing limit.
    return _Context(
        m, dtype, cat, region, a, buffer,
        _candidates(m, dtype, cat, region, traffic, sorted(ec2_types), latency_target=traffic.latency_target_s, **kw),
        _candidates(m, dtype, cat, region, traffic, sorted(hosted), latency_target=traffic.latency_target_s, **kw),
        _candidates(m, dtype, cat, region, traffic, sorted(hosted), latency_target=cat.async_limits.max_processing_s, **kw),
        cals,
    )


# -- the plan ------------------------------------------------------------------------------------------


def make_plan(
    m: ModelConfig,
    *,
    cat: Catalog,
    region: str = "us-east-1",
    mode: Mode | str = AUTO,
    term: Term | str = Term.ONE_YEAR,
    dtype: str | None = None,
    traffic: Traffic = Traffic(),
    loading: str = "safetensors",
    buffer: float | None = None,
    assumptions: Assumptions | None = None,
    instance_types: tuple[str, ...] = (),
    calibration_files: tuple[str, ...] = (),
) -> Plan:
    if mode not in PLAN_MODES:
        raise UnknownChoiceError("mode", mode, PLAN_MODES, fix="Pass --mode with one of these.")
    if term not in tuple(Term):
        raise UnknownChoiceError("term", term, tuple(Term), fix="Pass --term with one of these.")
    mode, term = (mode if mode == AUTO else Mode(mode)), Term(term)
    if loading not in sizing.LOADING_STRATEGIES:
        raise UnknownChoiceError("loading strategy", loading, sizing.LOADING_STRATEGIES)
    dtype = dtype or m.native_dtype
    sizing.dtype_bytes(dtype)
    cat_mod.check_region(cat, region)
    traffic.validate()
    only = cat_mod.resolve_gpu_types(cat, instance_types)
    a = assumptions or load_assumptions()
    cals = cal_mod.resolve(calibration_files, a, cat=cat)
    ctx = _context(m, dtype, cat, region, traffic, loading=loading, buffer=buffer, a=a, cals=cals, only=only)
    options = ctx.options(traffic)
    comparable = [o for o in options if o.feasible and (o.mode != Mode.RESERVED or o.term == term)]
    if not comparable:
        raise InfeasibleError(
            f"no hosting mode in {region} can serve {m.name} in {dtype}: "
            + "; ".join(f"{o.label}: {o.reason}" for o in options if o.term in (None, term)),
            hint="Try --loading streaming, a smaller --dtype (int8), a longer --latency-target, other --instance-type, "
                 "or another --region.",
        )
    recommended = min(comparable, key=lambda o: (o.monthly_usd, _MODE_ORDER.index(o.mode)))
    if mode == AUTO:
        choice = recommended
    else:
        choice = next(o for o in options if o.mode == mode and (mode != Mode.RESERVED or o.term == term))
        if not choice.feasible:
            feasible = ", ".join(sorted({o.mode for o in comparable}))
            raise InfeasibleError(
                f"mode '{mode}' cannot host {m.name} ({dtype}) in {region}: {choice.reason}.",
                hint=f"Feasible modes: {feasible}; or --mode auto.",
            )
    comparable_keys = [(md, tm) for md, tm in OPTION_KEYS if md != Mode.RESERVED or tm == term]
    cheapest, exact_to = _cheapest_intervals(ctx, traffic, comparable_keys)
    return Plan(
        model=m, dtype=dtype, region=region, traffic=traffic, mode=mode, term=term, options=tuple(options), choice=choice,
        recommended=recommended, reasons=tuple(_reasons(recommended, options, term)),
        break_even=tuple(_break_even(ctx, traffic, term)), catalog_origin=cat.origin,
        catalog_date=cat.oldest_price_date(region).isoformat(), assumptions=a, instance_types=only,
        cheapest=tuple(cheapest), cheapest_exact_to=exact_to, calibrations=tuple(cals.report()), loading=loading,
        calibration_files=tuple(map(str, calibration_files)),
    )



def _reasons(rec: Option, options: list[Option], term: Term) -> list[str]:
    reasons = [f"{rec.label} is the cheapest feasible option at ${rec.monthly():,.2f}/month"]
    for o in options:
        if o is rec or (o.mode == Mode.RESERVED and o.term != term):
            continue
        if o.feasible:
            reasons.append(f"{o.label} costs ${o.monthly() - rec.monthly():,.2f}/month more")
        else:
            reasons.append(f"{o.label} is not possible: {o.reason}")
    longer = next((o for o in options if o.mode == Mode.RESERVED and o.term == Term.THREE_YEARS and o.feasible), None)
    if term != Term.THREE_YEARS and longer and rec.feasible and longer.monthly() < rec.monthly():
        reasons.append(f"a 3-year commitment would cost ${longer.monthly():,.2f}/month")
    if rec.mode == Mode.ASYNC:
        reasons.append("async answers through S3 and scales to zero: a request after an idle spell waits minutes for an instance")
    return reasons


# -- break-even: exact over the whole range ------------------------------------------------------------------
#
# Between two points where some candidate instance's count steps up (count = ceil(peak / its req/s)), every
# instance-based option costs a constant; serverless is affine in traffic (its monitoring is the fixed part). So
# the cheapest option can only change at those steps or where serverless's line crosses a constant, and checking each stretch once (and
# solving the serverless crossings) is exact, where a scan between sample points would miss short stretches.
# Costs come from the same price functions and tie-break (cost, then Mode's order) as the recommendation.

_MAX_STEPS = 200_000  # count steps examined one by one; a model needing more (thousands of instances) gets a fine grid beyond


_MODE_ORDER = list(Mode)


def _rank(label: str) -> int:
    """The tie-break rank of an option label's mode ("reserved (1-year RI)" -> reserved's)."""
    return _MODE_ORDER.index(Mode(label.split(" ", 1)[0]))


@dataclass
class _Curve:
    """Monthly cost of one option as a function of requests/day, for the traffic shape of the plan."""

    label: str
    peak_per_rpd: float
    candidates: list  # (monthly per instance, fixed monthly, req/s per instance, type)
    serverless: Option | None = None  # at the plan's traffic: cost is affine in requests/day
    serverless_slope: float = 0.0  # USD/month per request/day (compute and data), from the price, not the traffic level
    serverless_max_peak: float = 0.0
    serverless_fixed: float = 0.0  # what serverless bills at no traffic (its monitoring)

    def cost(self, rpd: float) -> float | None:
        if self.serverless is not None:
            if rpd * self.peak_per_rpd > self.serverless_max_peak * (1 + 1e-12):
                return None
            # the option's own line items: a fixed part (monitoring) and a part linear in requests; round once, as
            # Option does
            return round(self.serverless_fixed + self.serverless_slope * rpd, 2)
        peak = rpd * self.peak_per_rpd
        ceil = math.ceil
        # costs.instances_for, inlined: this runs for every stretch of the break-even scan. Rounding once, after
        # the minimum, gives the same cents as rounding each (rounding is monotone).
        return round(min(max(1, ceil(peak / rps - 1e-9)) * unit + fixed for unit, fixed, rps, _ in self.candidates), 2)

    def per_step(self) -> list[float]:
        """Requests/day one instance of each candidate carries: its count steps up right after each multiple."""
        return [rps / self.peak_per_rpd for _, _, rps, _ in self.candidates]

    def steps(self, low: float, high: float) -> list[float]:
        """Requests/day in (low, high) where this curve can jump."""
        out = []
        for per_step in self.per_step():
            k = max(1, math.floor(low / per_step))
            while k * per_step < high:
                if k * per_step > low:
                    out.append(k * per_step)
                k += 1
        if self.serverless is not None:
            limit = self.serverless_max_peak / self.peak_per_rpd
            if low < limit < high:
                out.append(limit)
        return out


def _curves(ctx: _Context, traffic: Traffic, keys) -> list[_Curve]:
    peak_per_rpd = traffic.peak(ctx.a) / traffic.requests_per_day
    curves = []
    for mode, term in keys:
        label = option_label(mode, term)
        if mode == Mode.SERVERLESS:
            opt = ctx.option(mode, term, traffic)
            if not opt.feasible:
                continue
            max_peak = ctx.cat.serverless_limits.max_concurrency / opt.known(opt.latency_s, "latency")
            memory_mb = opt.known(opt.serverless_memory_mb, "serverless memory size")
            ms = opt.known(opt.ms_per_request, "milliseconds per request")

            def priced(requests_per_month: float, monitored: monitoring.Billable | None = None, memory_mb: int = memory_mb,
                       ms: int = ms) -> float:
                return costs.total(hosting_items(ctx.cat, ctx.region, Mode.SERVERLESS, serverless_memory_mb=memory_mb,
                                                 requests_per_month=requests_per_month, ms_per_request=ms,
                                                 bytes_per_request=_bytes_per_request(traffic, ctx.a), monitored=monitored))
            # Both parts read off the same line items: with no requests (what does not scale: monitoring), and the
            # usage of one request a day without monitoring. Neither depends on the plan's own traffic level, so a
            # stack's recorded traffic (rounded to whole requests a month) gives the same stretches to the bit.
            fixed = priced(0)
            slope = priced(costs.DAYS_PER_MONTH, monitoring.Billable(0, 0, 0))
            curves.append(_Curve(label, peak_per_rpd, [], opt, slope, max_peak, fixed))
            continue
        cands, price = ctx.priced(mode, term, traffic.active_hours)
        kept = []
        for c in cands:
            if not c.ok:
                continue
            # monthly = count × unit + fixed: read both off the real line items
            one, two = costs.total(price(c, 1)), costs.total(price(c, 2))
            unit, fixed = two - one, 2 * one - two
            kept.append((unit, fixed, c.rps, c.instance.type, c))
        # drop candidates another one beats at every traffic (dearer per instance, slower, dearer fixed part)
        pruned = [k for k in kept if not any(o is not k and o[0] <= k[0] and o[1] <= k[1] and o[2] >= k[2]
                                             and (o[0], o[1], -o[2], o[3]) < (k[0], k[1], -k[2], k[3]) for o in kept)]
        if pruned:
            curves.append(_Curve(label, peak_per_rpd, [(unit, fixed, rps, t) for unit, fixed, rps, t, _ in pruned]))
    return curves


def _settled_after(curves: list[_Curve]) -> float:
    """Requests/day beyond which no two curves can swap places again.

    An instance-based option costs between slope·r + L and slope·r + U (slope: the lowest cost per request/day
    of its candidates; L: the smallest fixed part; U: one more instance of the slope's candidate plus its fixed
    part); serverless is exactly affine. Once the lower line's upper bound is under the steeper line's lower
    bound, their order is settled. Equal slopes never settle (infinity).
    """
    bounds, edge = [], 0.0
    for cv in curves:
        if cv.serverless is not None:
            bounds.append((cv.serverless_slope, cv.serverless_fixed - 0.01, cv.serverless_fixed + 0.01))
            edge = max(edge, cv.serverless_max_peak / cv.peak_per_rpd)
            continue
        rows = []
        for (unit, fixed, _, _), per_step in zip(cv.candidates, cv.per_step(), strict=True):
            rows.append((unit / per_step, fixed, unit + fixed))  # slope, fixed part, one more instance + fixed part
        slope, _, upper = min(rows)
        bounds.append((slope, min(r[1] for r in rows) - 0.01, upper + 0.01))
    for i, (s1, lo1, up1) in enumerate(bounds):
        for s2, lo2, up2 in bounds[i + 1:]:
            if s1 == s2:
                return math.inf
            (sa, upa), (sb, lob) = ((s1, up1), (s2, lo2)) if s1 < s2 else ((s2, up2), (s1, lo1))
            edge = max(edge, (upa - lob) / (sb - sa))
    return edge


def _intervals(curves: list[_Curve], low: float, high: float) -> tuple[list[Interval], float]:
    """The cheapest curve on every stretch of [low, high], merged where it stays the same, and how far that is exact.

    Exact: each stretch between consecutive count steps is checked at its middle (counts are constant inside),
    and serverless's crossing inside it is found by bisection on the same rounded-cents comparison the
    recommendation uses. Past ``_MAX_STEPS`` count steps (only for a model needing thousands of instances at
    the top of the range) the rest is checked on a fine grid instead, and the returned edge says where.
    """
    instance_curves = [cv for cv in curves if cv.serverless is None]
    serverless = next((cv for cv in curves if cv.serverless is not None), None)
    settled = min(high, max(low, _settled_after(curves)))  # past this the order is fixed: one more stretch covers it
    scan_to, exact_to = settled, high
    rate = sum(1 / p for cv in instance_curves for p in cv.per_step())  # count steps per request/day
    if rate * scan_to > _MAX_STEPS:
        scan_to = exact_to = max(low, _MAX_STEPS / rate)
    points = sorted({p for cv in curves for p in cv.steps(low, scan_to)})
    edges = [low, *points, scan_to]
    if exact_to < high:  # the step budget ran out before the order settled: a fine grid for the rest
        edges += [exact_to * (high / exact_to) ** (i / 2000) for i in range(1, 2001)]
    elif scan_to < high:
        edges.append(high)
    pieces: list[Interval] = []

    def add(lo: float, hi: float, label: str) -> None:
        if pieces and pieces[-1].option == label:
            pieces[-1] = Interval(pieces[-1].low, hi, label)
        else:
            pieces.append(Interval(lo, hi, label))

    for lo, hi in zip(edges, edges[1:], strict=False):
        if hi <= lo:
            continue
        mid = (lo + hi) / 2
        consts = [(cost, _rank(cv.label), cv.label) for cv in instance_curves if (cost := cv.cost(mid)) is not None]
        best = min(consts) if consts else None
        if serverless is None or serverless.cost(mid) is None:
            add(lo, hi, best[2] if best else "")
            continue
        if best is None:
            add(lo, hi, serverless.label)
            continue

        def wins(r: float, best: tuple = best) -> bool:
            return (serverless.cost(r), _rank(serverless.label)) < best[:2]

        if wins(hi):
            add(lo, hi, serverless.label)
        elif not wins(lo):
            add(lo, hi, best[2])
        else:  # serverless costs more with every request: it leads up to one point inside the stretch
            a, b = lo, hi
            for _ in range(80):
                m = (a + b) / 2
                a, b = (m, b) if wins(m) else (a, m)
            add(lo, a, serverless.label)
            add(a, hi, best[2])
    return pieces, exact_to


def _cheapest_intervals(ctx: _Context, traffic: Traffic, keys) -> tuple[list[Interval], float]:
    return _intervals(_curves(ctx, traffic, keys), *BREAK_EVEN_RANGE)


def _fmt(rpd: float) -> str:
    return f"{rpd:,.0f}"


TEXT_STRETCHES = 8  # stretches spelled out in text; --json always has all of them


def describe_intervals(intervals, label_of=lambda i: i.option, limit: int | None = None) -> list[str]:
    """'serverless up to 3,120', 'async 3,120–8,000', ..., 'reserved above 1,200,000' (requests/day)."""
    lines = []
    last = len(intervals) - 1
    for n, i in enumerate(intervals):
        if limit is not None and n == limit and last > limit:
            lines.append(f"... {last - n + 1} more; every stretch is in --json")
            break
        what = label_of(i) or "nothing can serve"
        if n == 0 and n == last:
            lines.append(f"{what} at every traffic from {_fmt(i.low)} to {_fmt(i.high)} requests/day")
        elif n == 0:
            lines.append(f"{what} up to {_fmt(i.high)}")
        elif n == last:
            lines.append(f"{what} above {_fmt(i.low)} (to {_fmt(i.high)})")
        else:
            lines.append(f"{what} {_fmt(i.low)}–{_fmt(i.high)}")
    return lines


def _break_even(ctx: _Context, traffic: Traffic, term: Term) -> list[BreakEven]:
    self_label = option_label(Mode.RESERVED, term)
    out = []
    for managed in (mode for mode in Mode if mode is not Mode.RESERVED):
        curves = _curves(ctx, traffic, [(Mode.RESERVED, term), (managed, None)])
        labels = {cv.label for cv in curves}
        if managed not in labels:
            out.append(BreakEven(managed, self_label, "requests_per_day", None,
                                 f"{managed} cannot host this model at any traffic in range"))
            continue
        if self_label not in labels:
            out.append(BreakEven(managed, self_label, "requests_per_day", None,
                                 f"{self_label} cannot host this model; {managed} is the only one of the two"))
            continue
        pieces, _ = _intervals(curves, *BREAK_EVEN_RANGE)
        crossings: tuple[float, ...] = tuple(round(p.low) for p in pieces[1:])
        cheaper = tuple((p.low, p.high) for p in pieces if p.option == managed)
        if not cheaper:
            note = f"{self_label} is cheaper at every traffic level; {managed} buys managed operations, not savings"
        elif len(pieces) == 1:
            note = f"{managed} is cheaper at every traffic level up to {_fmt(BREAK_EVEN_RANGE[1])} requests/day"
        else:
            stretches = "; ".join(describe_intervals(pieces, limit=TEXT_STRETCHES))
            note = f"{managed} vs {self_label}, cheaper by requests/day: {stretches}"
        out.append(BreakEven(managed, self_label, "requests_per_day", crossings[0] if crossings else None, note,
                             crossings, cheaper))
    # Async pays only for hours with traffic: its break-even is in hours a day (the same volume spread wider).
    def diff_hours(hours: int):
        t = replace(traffic, active_hours=hours)
        mine, theirs = ctx.option(Mode.ASYNC, None, t).monthly_usd, ctx.option(Mode.RESERVED, term, t).monthly_usd
        return None if mine is None or theirs is None else (mine, theirs)

    rows = {h: diff_hours(h) for h in range(1, 25)}
    if any(v is None for v in rows.values()):
        note = "async cannot host this model at every spread of the day" if any(rows.values()) else "async cannot host this model"
        out.append(BreakEven(Mode.ASYNC, self_label, "active_hours_per_day", None, note))
        return out
    cheaper_hours = [h for h, (mine, theirs) in rows.items() if (mine, _rank(Mode.ASYNC)) < (theirs, _rank(Mode.RESERVED))]
    spans = _spans(cheaper_hours)
    crossings = tuple(float(h) for h in range(2, 25) if (h in cheaper_hours) != (h - 1 in cheaper_hours))
    if not cheaper_hours:
        note = "async is never cheaper at this volume, however few hours a day traffic spans"
    elif len(cheaper_hours) == 24:
        note = "async is cheaper even with traffic all day"
    else:
        note = "async is cheaper when traffic spans " + ", ".join(
            f"{a}" if a == b else f"{a}–{b}" for a, b in spans) + " hours a day; reserved otherwise"
    out.append(BreakEven(Mode.ASYNC, self_label, "active_hours_per_day", crossings[0] if crossings else None, note, crossings,
                         tuple((float(a), float(b)) for a, b in spans)))
    return out


def _spans(values: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], v)
        else:
            spans.append((v, v))
    return spans


def monthly_costs_over_traffic(plan_: Plan, cat: Catalog, points: list[float]) -> dict[str, list[float | None]]:
    """Monthly cost of every option label at each requests/day in ``points`` (for charts), as the plan computed it."""
    cals = cal_mod.resolve(plan_.calibration_files, plan_.assumptions, cat=cat)
    ctx = _context(plan_.model, plan_.dtype, cat, plan_.region, plan_.traffic, loading=plan_.loading, buffer=None,
                   a=plan_.assumptions, cals=cals, only=plan_.instance_types)
    series: dict[str, list[float | None]] = {}
    for rpd in points:
        for o in ctx.options(plan_.traffic.scaled(rpd)):
            series.setdefault(o.label, []).append(o.monthly_usd)
    return series


def stack_config_for(plan_: Plan, *, owner: str = "unknown", cost_center: str = "unassigned") -> StackConfig:
    """The Pulumi stack settings that deploy exactly the plan's choice."""
    c = plan_.choice
    a = plan_.assumptions
    common = StackConfig(
        mode=c.mode, model=plan_.model.hf_id or plan_.model.name, model_revision=plan_.model.revision,
        region=plan_.region, dtype=plan_.dtype, owner=owner,
        cost_center=cost_center, term=plan_.term,
        usage_requests_per_month=math.ceil(plan_.traffic.requests_per_month),
        usage_active_hours_per_day=plan_.traffic.active_hours,
        usage_bytes_per_request=_bytes_per_request(plan_.traffic, a),
        # What the alarms hold the stack to: the latency target and each instance's planned capacity. Async was
        # chosen knowing a request may take longer than the target (it queues), so its bar is the plan's estimate.
        alarm_latency_ms=math.ceil(1000 * (max(plan_.traffic.latency_target_s, c.latency_s or 0)
                                                  if c.mode == Mode.ASYNC else plan_.traffic.latency_target_s)),
        usage_requests_per_hour_per_instance=round(3600 * c.requests_per_s_per_instance) if c.requests_per_s_per_instance else 0,
        # The rest of the traffic, so `llmdeploy deploy` can show this comparison again (llmdeploy.stackplan).
        usage_input_tokens=plan_.traffic.input_tokens, usage_output_tokens=plan_.traffic.output_tokens,
        usage_peak_requests_per_hour=0 if plan_.traffic.peak_rps is None else max(1, round(plan_.traffic.peak_rps * 3600)),
        usage_latency_target_ms=max(1, round(plan_.traffic.latency_target_s * 1000)),
        # What the model server runs (serving.properties): the batch each instance's capacity was sized with, and
        # caps that let a request of the planned size through (1 input, output_tokens new tokens).
        max_batch_size=c.known(c.batch_size, "batch size"),
        max_new_tokens=max(serving.DEFAULT_MAX_NEW_TOKENS, plan_.traffic.output_tokens),
        max_request_tokens=max(serving.DEFAULT_MAX_REQUEST_TOKENS, plan_.traffic.output_tokens),
    )
    if c.mode == Mode.SERVERLESS:
        return replace(
            common, instance_type="", instance_count=1, min_instances=1,
            serverless_memory_mb=c.known(c.serverless_memory_mb, "serverless memory size"),
            serverless_max_concurrency=c.known(c.serverless_max_concurrency, "serverless concurrency"),
            usage_ms_per_request=c.known(c.ms_per_request, "milliseconds per request"),
        )
    # A reserved fleet is paid for whether busy or not, so it stays at full size; async scales to zero.
    min_instances = {Mode.RESERVED: c.instance_count, Mode.REALTIME: 1, Mode.ASYNC: 0}[c.mode]
    # Async hands each instance as many concurrent invocations as its batch holds (SageMaker's default, 4, would
    # keep the batch from filling).
    hosted = replace(common, instance_type=c.known(c.instance_type, "instance type"), instance_count=c.instance_count,
                     min_instances=min_instances, tensor_parallel_degree=c.tensor_parallel)
    return replace(hosted, async_max_concurrent_invocations=common.max_batch_size) if c.mode == Mode.ASYNC else hosted
