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

from llmdeploy import catalog as cat_mod
from llmdeploy import checks, costs, monitoring, sizing
from llmdeploy.assumptions import Assumptions, load_assumptions
from llmdeploy.catalog import Catalog, Instance
from llmdeploy.errors import InfeasibleError, UnknownChoiceError, UsageError
from llmdeploy.models import ModelConfig
from llmdeploy.stackconfig import MODES as stackconfig_MODES
from llmdeploy.stackconfig import StackConfig

MODES = stackconfig_MODES
PLAN_MODES = (*MODES, "auto")
TERMS = cat_mod.TERMS
TERM_LABEL = {"on-demand": "on-demand", "1y": "1-year RI", "3y": "3-year RI"}
BREAK_EVEN_RANGE = (1.0, 1e8)
OPTION_KEYS = (("reserved", "on-demand"), ("reserved", "1y"), ("reserved", "3y"), ("realtime", None), ("async", None), ("serverless", None))  # requests per day searched for a crossing


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float = 10_000
    input_tokens: int = 256
    output_tokens: int = 64
    active_hours: int = 12  # hours a day with traffic
    latency_target_s: float = 5.0
    peak_rps: float | None = None  # derived from the average when None

    def validate(self) -> "Traffic":
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

    def scaled(self, requests_per_day: float) -> "Traffic":
        """The same shape of traffic at another volume (the peak scales with it)."""
        factor = requests_per_day / self.requests_per_day
        peak = None if self.peak_rps is None else self.peak_rps * factor
        return replace(self, requests_per_day=requests_per_day, peak_rps=peak)


@dataclass(frozen=True)
class Option:
    mode: str
    term: str | None  # reserved only
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

    @property
    def monthly_usd(self) -> float | None:
        return round(costs.total(self.line_items), 2) if self.feasible else None

    @property
    def annual_usd(self) -> float | None:
        return None if self.monthly_usd is None else round(self.monthly_usd * 12, 2)

    @property
    def label(self) -> str:
        return f"{self.mode} ({TERM_LABEL[self.term]})" if self.term else self.mode

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
class BreakEven:
    managed: str  # option label
    versus: str
    variable: str  # "requests_per_day" or "active_hours_per_day"
    value: float | None
    note: str


@dataclass(frozen=True)
class Plan:
    model: ModelConfig
    dtype: str
    region: str
    traffic: Traffic
    mode: str
    term: str
    options: tuple[Option, ...]
    choice: Option
    recommended: Option
    reasons: tuple[str, ...]
    break_even: tuple[BreakEven, ...]
    catalog_origin: str
    catalog_date: str
    assumptions: Assumptions = field(repr=False, default=None)
    instance_types: tuple[str, ...] = ()  # the candidates the user restricted the plan to, if any


# -- per-instance serving capacity (traffic-independent) ----------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    instance: Instance
    fit: sizing.Fit
    ok: bool
    reason: str
    latency: sizing.Latency | None = None

    @property
    def rps(self) -> float:
        return self.fit.replicas * self.latency.requests_per_s if self.ok else 0.0


def _capacity(m: ModelConfig, dtype: str, inst: Instance, traffic: Traffic, *, loading: str, buffer: float | None,
              a: Assumptions, latency_target: float | None) -> _Candidate:
    mem1 = sizing.inference_memory(m, dtype, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens, buffer=buffer)
    host = sizing.host_ram_to_load(m, dtype, loading, a)
    fit = sizing.fit_on_instance(mem1, host, inst, a)
    if not fit.fits:
        return _Candidate(inst, fit, False, fit.reason)
    if dtype == "bf16" and not inst.gpu.supports_bf16:
        return _Candidate(inst, fit, False, f"{inst.gpu.name} has no bf16; use --dtype fp16 or fp32")
    best: sizing.Latency | None = None
    first: sizing.Latency | None = None
    batch = 1
    while batch <= a.max_batch_size:
        mem = sizing.inference_memory(m, dtype, batch=batch, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens, buffer=buffer)
        if mem.per_gpu(fit.tensor_parallel) > inst.gpu.memory_gib * sizing.GIB * a.gpu_usable_fraction:
            break
        lat = sizing.gpu_latency(m, dtype, inst.gpu, fit.tensor_parallel, batch=batch, input_tokens=traffic.input_tokens,
                                 output_tokens=traffic.output_tokens, a=a)
        first = first or lat
        if latency_target is not None and lat.total_s > latency_target:
            break
        if best is None or lat.requests_per_s > best.requests_per_s:
            best = lat
        batch *= 2
    if best is None:
        return _Candidate(inst, fit, False, f"~{first.total_s:.1f} s per request exceeds the {latency_target:g} s latency target")
    return _Candidate(inst, fit, True, fit.reason, best)


def _candidates(m, dtype, cat: Catalog, region: str, traffic: Traffic, instance_types, *, loading, buffer, a, latency_target):
    return [
        _capacity(m, dtype, cat_mod.instance(cat, t), traffic, loading=loading, buffer=buffer, a=a, latency_target=latency_target)
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


def _instance_option(mode: str, term: str | None, cands, traffic, a, price) -> Option:
    picked = _cheapest(cands, traffic, a, price)
    if picked is None:
        where = {"reserved": "EC2", "realtime": "SageMaker real-time", "async": "SageMaker async"}[mode]
        return Option(mode, term, None, 0, False, _why_none(cands, where))
    c, count, items = picked
    return Option(
        mode, term, _name_for(mode, c.instance.type), count, True,
        f"{c.reason}; {c.latency.requests_per_s * c.fit.replicas:.2f} req/s per instance at batch {c.latency.batch}",
        tuple(items), c.latency.total_s, c.latency.batch, c.rps, c.fit.tensor_parallel,
    )


def _name_for(mode: str, instance_type: str) -> str:
    return instance_type if mode == "reserved" else cat_mod.SAGEMAKER_PREFIX + instance_type


def _serverless_option(m: ModelConfig, dtype: str, cat: Catalog, region: str, traffic: Traffic, *, buffer, a: Assumptions) -> Option:
    limits = cat.serverless_limits
    if region not in cat.serverless:
        return Option("serverless", None, None, 0, False,
                      f"the catalog has no SageMaker serverless price for {region} (run 'llmdeploy prices refresh')")
    # The endpoint runs the handler in the LMI CPU image: weights in fp32 whatever the stack's dtype
    # (handlers/precision.py: fp32 on CPU) beside DJL's Java front end (its heap, llmdeploy/data/lmi.toml).
    from llmdeploy.lmi import load_lmi_table

    dtype = "fp32"
    mem = sizing.inference_memory(m, dtype, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens, buffer=buffer)
    needed = mem.total + int((a.host_overhead_gib + load_lmi_table().cpu_image.jvm_heap_gib) * sizing.GIB)
    sizes = [s for s in limits.memory_sizes_mb if s * 1024**2 >= needed]
    if not sizes:
        return Option("serverless", None, None, 0, False,
                      f"needs {needed / 1e9:.1f} GB of memory; SageMaker serverless allows at most {max(limits.memory_sizes_mb)} MB")
    lat = sizing.cpu_latency(m, dtype, a, batch=1, input_tokens=traffic.input_tokens, output_tokens=traffic.output_tokens)
    if lat.total_s > min(traffic.latency_target_s, limits.timeout_s):
        bound = "the latency target" if traffic.latency_target_s <= limits.timeout_s else "the serverless timeout"
        limit = min(traffic.latency_target_s, limits.timeout_s)
        return Option("serverless", None, None, 0, False,
                      f"needs a GPU: ~{lat.total_s:.1f} s per request on serverless CPUs exceeds {bound} of {limit:g} s "
                      "(SageMaker serverless has no GPUs)", latency_s=lat.total_s)
    concurrency = max(1, math.ceil(traffic.peak(a) * lat.total_s))
    if concurrency > limits.max_concurrency:
        return Option("serverless", None, None, 0, False,
                      f"peak needs {concurrency} concurrent invocations; serverless allows {limits.max_concurrency} per endpoint",
                      latency_s=lat.total_s)
    memory_mb = sizes[0]
    ms = math.ceil(lat.total_s * 1000)
    items = hosting_items(cat, region, "serverless", serverless_memory_mb=memory_mb, requests_per_month=traffic.requests_per_month,
                          ms_per_request=ms, bytes_per_request=_bytes_per_request(traffic, a))
    return Option("serverless", None, None, 0, True,
                  f"{memory_mb} MB, ~{lat.total_s:.2f} s per request on CPU, concurrency {concurrency}",
                  tuple(items), lat.total_s, 1, None, 1, memory_mb, concurrency, ms)


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

    def options(self, traffic: Traffic) -> list[Option]:
        return [self.option(mode, term, traffic) for mode, term in OPTION_KEYS]

    def option(self, mode: str, term: str | None, traffic: Traffic) -> Option:
        cat, region, a = self.cat, self.region, self.a
        def price(c, n):
            return hosting_items(cat, region, mode, instance_type=c.instance.type, count=n, gpus=c.instance.gpu_count,
                                 term=term, active_hours=traffic.active_hours)
        if mode == "reserved":
            # A type without a published price for this term is not a candidate for it.
            ec2 = [c for c in self.ec2 if cat.ec2[(region, c.instance.type)].hourly(term) is not None]
            return _instance_option("reserved", term, ec2, traffic, a, price)
        if mode == "realtime":
            return _instance_option("realtime", None, self.hosting, traffic, a, price)
        if mode == "async":
            return _instance_option("async", None, self.hosting_async, traffic, a, price)
        return _serverless_option(self.m, self.dtype, cat, region, traffic, buffer=self.buffer, a=a)


def hosting_items(cat: Catalog, region: str, mode: str, *, instance_type: str = "", count: int = 0, gpus: int = 0,
                  term: str | None = "1y", active_hours: float = 24, serverless_memory_mb: int = 0,
                  requests_per_month: float = 0, ms_per_request: float = 0, bytes_per_request: float = 0,
                  monitored: "monitoring.Billable | None" = None) -> list[costs.LineItem]:
    """The monthly line items of one way of hosting: the one pricing rule plan, status and the tests share.

    ``monitored`` is what the stack's monitoring bills (alarms, dashboard, agent metrics); by default the full
    set the Pulumi program creates for this mode (llmdeploy.monitoring).
    """
    if mode == "reserved":
        items = [costs.ec2_instances(cat, region, instance_type, count, term), costs.load_balancer(cat, region)]
    elif mode == "realtime":
        items = [costs.sagemaker_instances(cat, region, instance_type, count, 24)]
    elif mode == "async":
        # Scales to zero: instance-hours only while traffic lasts.
        items = [costs.sagemaker_instances(cat, region, instance_type, count, active_hours), costs.kms_key(cat, region)]
    else:
        items = costs.serverless(cat, region, serverless_memory_mb, requests_per_month, ms_per_request, bytes_per_request)
    b = monitored or monitoring.billable(mode, instance_count=count, gpus_per_instance=gpus)
    return items + costs.monitoring(cat, region, alarm_metrics=b.alarm_metrics, dashboards=b.dashboards,
                                    custom_metrics=b.custom_metrics)


def planned_line_items(config: StackConfig, cat: Catalog) -> list[costs.LineItem]:
    """What a stack config costs per month, priced as ``plan`` priced it (``llmdeploy status`` compares the bill)."""
    return hosting_items(
        cat, config.region, config.mode, instance_type=config.instance_type, count=config.instance_count,
        term=config.term, active_hours=config.usage_active_hours_per_day, serverless_memory_mb=config.serverless_memory_mb,
        requests_per_month=config.usage_requests_per_month, ms_per_request=config.usage_ms_per_request,
        bytes_per_request=config.usage_bytes_per_request, monitored=monitoring.billable_for(config, cat))


def _context(m, dtype, cat, region, traffic, *, loading, buffer, a, only: tuple[str, ...] = ()) -> _Context:
    ec2_types = [t for (r, t) in cat.ec2 if r == region and t in cat.instances and cat.instances[t].gpu]
    hosted = [t.removeprefix(cat_mod.SAGEMAKER_PREFIX) for (r, t) in cat.hosting if r == region]
    hosted = [t for t in hosted if t in cat.instances and cat.instances[t].gpu]
    if only:
        ec2_types = [t for t in ec2_types if t in only]
        hosted = [t for t in hosted if t in only]
    kw = dict(loading=loading, buffer=buffer, a=a)
    # Async requests queue instead of waiting on a socket: no latency target, only the service's processing limit.
    return _Context(
        m, dtype, cat, region, a, buffer,
        _candidates(m, dtype, cat, region, traffic, sorted(ec2_types), latency_target=traffic.latency_target_s, **kw),
        _candidates(m, dtype, cat, region, traffic, sorted(hosted), latency_target=traffic.latency_target_s, **kw),
        _candidates(m, dtype, cat, region, traffic, sorted(hosted), latency_target=cat.async_limits.max_processing_s, **kw),
    )


# -- the plan ------------------------------------------------------------------------------------------


def make_plan(
    m: ModelConfig,
    *,
    cat: Catalog,
    region: str = "us-east-1",
    mode: str = "auto",
    term: str = "1y",
    dtype: str | None = None,
    traffic: Traffic = Traffic(),
    loading: str = "in-memory",
    buffer: float | None = None,
    assumptions: Assumptions | None = None,
    instance_types: tuple[str, ...] = (),
) -> Plan:
    if mode not in PLAN_MODES:
        raise UnknownChoiceError("mode", mode, PLAN_MODES, fix="Pass --mode with one of these.")
    if term not in TERMS:
        raise UnknownChoiceError("term", term, TERMS, fix="Pass --term with one of these.")
    if loading not in sizing.LOADING_STRATEGIES:
        raise UnknownChoiceError("loading strategy", loading, sizing.LOADING_STRATEGIES)
    dtype = dtype or m.native_dtype
    sizing.dtype_bytes(dtype)
    cat_mod.check_region(cat, region)
    traffic.validate()
    only = cat_mod.resolve_gpu_types(cat, instance_types)
    a = assumptions or load_assumptions()
    ctx = _context(m, dtype, cat, region, traffic, loading=loading, buffer=buffer, a=a, only=only)
    options = ctx.options(traffic)
    comparable = [o for o in options if o.feasible and (o.mode != "reserved" or o.term == term)]
    if not comparable:
        raise InfeasibleError(
            f"no hosting mode in {region} can serve {m.name} in {dtype}: "
            + "; ".join(f"{o.label}: {o.reason}" for o in options if o.term in (None, term)),
            hint="Try --loading streaming, a smaller --dtype (int8), a longer --latency-target, other --instance-type, or another --region.",
        )
    recommended = min(comparable, key=lambda o: (o.monthly_usd, MODES.index(o.mode)))
    if mode == "auto":
        choice = recommended
    else:
        choice = next(o for o in options if o.mode == mode and (mode != "reserved" or o.term == term))
        if not choice.feasible:
            feasible = ", ".join(sorted({o.mode for o in comparable}))
            raise InfeasibleError(
                f"mode {mode!r} cannot host {m.name} ({dtype}) in {region}: {choice.reason}.",
                hint=f"Feasible modes: {feasible}; or --mode auto.",
            )
    return Plan(
        model=m, dtype=dtype, region=region, traffic=traffic, mode=mode, term=term, options=tuple(options), choice=choice,
        recommended=recommended, reasons=tuple(_reasons(recommended, options, term)),
        break_even=tuple(_break_even(ctx, traffic, term)), catalog_origin=cat.origin,
        catalog_date=cat.snapshot_date.isoformat(), assumptions=a, instance_types=only,
    )



def _reasons(rec: Option, options: list[Option], term: str) -> list[str]:
    reasons = [f"{rec.label} is the cheapest feasible option at ${rec.monthly_usd:,.2f}/month"]
    for o in options:
        if o is rec or (o.mode == "reserved" and o.term != term):
            continue
        if o.feasible:
            reasons.append(f"{o.label} costs ${o.monthly_usd - rec.monthly_usd:,.2f}/month more")
        else:
            reasons.append(f"{o.label} is not possible: {o.reason}")
    longer = next((o for o in options if o.mode == "reserved" and o.term == "3y" and o.feasible), None)
    if term != "3y" and longer and rec.feasible and longer.monthly_usd < rec.monthly_usd:
        reasons.append(f"a 3-year commitment would cost ${longer.monthly_usd:,.2f}/month")
    if rec.mode == "async":
        reasons.append("async answers through S3 and scales to zero: a request after an idle spell waits minutes for an instance")
    return reasons


def _monthly_of(ctx: _Context, traffic: Traffic, mode: str, term: str | None = None) -> float | None:
    return ctx.option(mode, term, traffic).monthly_usd


def _crossing(f: Callable[[float], float | None], lo: float, hi: float, steps: int = 48) -> float | None:
    """Smallest x in [lo, hi] (geometric scan, then bisection) where f changes sign; None if it never does."""
    xs = [lo * (hi / lo) ** (i / steps) for i in range(steps + 1)]
    prev_x, prev = xs[0], f(xs[0])
    for x in xs[1:]:
        val = f(x)
        if prev is not None and val is not None and (prev < 0) != (val < 0):
            a, b = prev_x, x
            for _ in range(40):
                mid = math.sqrt(a * b)
                fm = f(mid)
                if fm is None or (fm < 0) == (prev < 0):
                    a = mid
                else:
                    b = mid
            return b
        prev_x, prev = x, val
    return None


def _break_even(ctx: _Context, traffic: Traffic, term: str) -> list[BreakEven]:
    self_label = f"reserved ({TERM_LABEL[term]})"
    out = []
    for managed in ("realtime", "async", "serverless"):
        def diff(rpd: float, managed=managed):
            t = traffic.scaled(rpd)
            mine, theirs = _monthly_of(ctx, t, managed), _monthly_of(ctx, t, "reserved", term)
            return None if mine is None or theirs is None else mine - theirs
        x = _crossing(diff, *BREAK_EVEN_RANGE)
        low = diff(BREAK_EVEN_RANGE[0])
        if x is not None:
            cheaper_below = low is not None and low < 0
            note = (f"{managed} is cheaper below {x:,.0f} requests/day, {self_label} above" if cheaper_below
                    else f"{self_label} is cheaper below {x:,.0f} requests/day, {managed} above")
        elif low is None:
            note = f"{managed} cannot host this model at any traffic in range"
        else:
            note = (f"{managed} is cheaper at every traffic level up to {BREAK_EVEN_RANGE[1]:,.0f} requests/day" if low < 0
                    else f"{self_label} is cheaper at every traffic level; {managed} buys managed operations, not savings")
        out.append(BreakEven(managed, self_label, "requests_per_day", None if x is None else round(x), note))
    # Async pays only for hours with traffic: its break-even is in hours a day.
    def diff_hours(hours: float):
        t = replace(traffic, active_hours=max(1, min(24, round(hours))))
        mine, theirs = _monthly_of(ctx, t, "async"), _monthly_of(ctx, t, "reserved", term)
        return None if mine is None or theirs is None else mine - theirs
    hours = next((h for h in range(1, 25) if (d := diff_hours(h)) is not None and d >= 0), None)
    note = (f"async is cheaper while traffic spans fewer than {hours} hours a day" if hours and hours > 1
            else "async is never cheaper at this volume" if hours == 1 else
            "async is cheaper even with traffic all day" if diff_hours(24) is not None else "async cannot host this model")
    out.append(BreakEven("async", self_label, "active_hours_per_day", hours, note))
    return out


def monthly_costs_over_traffic(plan_: Plan, cat: Catalog, points: list[float], *, loading: str = "in-memory",
                               buffer: float | None = None) -> dict[str, list[float | None]]:
    """Monthly cost of every option label at each requests/day in ``points`` (for charts)."""
    ctx = _context(plan_.model, plan_.dtype, cat, plan_.region, plan_.traffic, loading=loading, buffer=buffer, a=plan_.assumptions,
                   only=plan_.instance_types)
    series: dict[str, list[float | None]] = {}
    for rpd in points:
        for o in ctx.options(plan_.traffic.scaled(rpd)):
            series.setdefault(o.label, []).append(o.monthly_usd)
    return series


def stack_config_for(plan_: Plan, *, owner: str = "unknown", cost_center: str = "unassigned") -> StackConfig:
    """The Pulumi stack settings that deploy exactly the plan's choice."""
    c = plan_.choice
    a = plan_.assumptions or load_assumptions()
    common = dict(
        mode=c.mode, model=plan_.model.hf_id or plan_.model.name, model_revision=plan_.model.revision, region=plan_.region, dtype=plan_.dtype, owner=owner,
        cost_center=cost_center, term=plan_.term,
        usage_requests_per_month=math.ceil(plan_.traffic.requests_per_month),
        usage_active_hours_per_day=plan_.traffic.active_hours,
        usage_bytes_per_request=_bytes_per_request(plan_.traffic, a),
        # What the alarms hold the stack to: the latency target and each instance's planned capacity. Async was
        # chosen knowing a request may take longer than the target (it queues), so its bar is the plan's estimate.
        alarm_latency_ms=math.ceil(1000 * (max(plan_.traffic.latency_target_s, c.latency_s or 0)
                                                  if c.mode == "async" else plan_.traffic.latency_target_s)),
        usage_requests_per_hour_per_instance=round(3600 * c.requests_per_s_per_instance) if c.requests_per_s_per_instance else 0,
        # The rest of the traffic, so `llmdeploy deploy` can show this comparison again (llmdeploy.stackplan).
        usage_input_tokens=plan_.traffic.input_tokens, usage_output_tokens=plan_.traffic.output_tokens,
        usage_peak_requests_per_hour=0 if plan_.traffic.peak_rps is None else max(1, round(plan_.traffic.peak_rps * 3600)),
        usage_latency_target_ms=max(1, round(plan_.traffic.latency_target_s * 1000)),
    )
    if c.mode == "serverless":
        return StackConfig(
            **common, instance_type="", instance_count=1, min_instances=1,
            serverless_memory_mb=c.serverless_memory_mb, serverless_max_concurrency=c.serverless_max_concurrency,
            usage_ms_per_request=c.ms_per_request,
        )
    # A reserved fleet is paid for whether busy or not, so it stays at full size; async scales to zero.
    min_instances = {"reserved": c.instance_count, "realtime": 1, "async": 0}[c.mode]
    return StackConfig(
        **common, instance_type=c.instance_type, instance_count=c.instance_count, min_instances=min_instances,
        tensor_parallel_degree=c.tensor_parallel,
    )
