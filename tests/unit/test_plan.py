"""The cost model and recommendation, on the bundled catalog and on a three-row table."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from types import MappingProxyType

import pytest

from llmdeploy import catalog as c
from llmdeploy import costs
from llmdeploy.errors import InfeasibleError, UnknownChoiceError, UsageError
from llmdeploy.models import load_model_config
from llmdeploy.plan import Traffic, make_plan, planned_line_items, stack_config_for


@pytest.fixture(scope="module")
def cat():
    return c.load_catalog_from(c.BUNDLED_DIR)


def _option(plan, mode, term=None):
    return next(o for o in plan.options if o.mode == mode and o.term == term)


def test_reserved_one_year_ri_prices_instances_volumes_balancer_and_addresses_from_the_catalog(cat):
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="1y")
    choice = plan.choice
    # The handler's safetensors path needs one copy of XL's weights in RAM: g4dn.xlarge's 16 GiB is enough.
    assert (choice.mode, choice.term, choice.instance_type, choice.instance_count) == ("reserved", "1y", "g4dn.xlarge", 1)
    ri = c.ec2_price(cat, "us-east-1", "g4dn.xlarge").ri_1y
    items = {i.kind: i for i in choice.line_items}
    # The default fleet's load balancer is internal (issue 10): no public IPv4 addresses to pay for.
    assert set(items) == {"ec2-instance", "root-volume", "load-balancer", "cloudwatch-alarms", "cloudwatch-dashboard",
                          "cloudwatch-metrics"}, "instances, volumes, the ALB, and the stack's alarms, dashboard and GPU metrics"
    assert items["ec2-instance"].unit_usd == ri and items["ec2-instance"].monthly_usd * 12 == pytest.approx(ri * 8760)
    assert 2800 < items["ec2-instance"].monthly_usd * 12 < 3000, "a 1-year RI g4dn.xlarge is about $2.9K a year"
    other = c.other_prices(cat, "us-east-1")
    # 200 GB gp3 per instance at the catalog's gp3 price ($0.08/GB-month in us-east-1: $16/month).
    assert (items["root-volume"].quantity, items["root-volume"].unit_usd) == (200, other.ebs_gp3_gb_month)
    assert items["root-volume"].monthly_usd == pytest.approx(16.0)
    assert items["root-volume"].source == "ebs-gp3-pricing"
    assert choice.monthly_usd == pytest.approx(sum(i.monthly_usd for i in items.values()), abs=0.01)


def test_an_internet_facing_load_balancer_adds_its_public_ipv4_addresses(cat):
    """ingressCidr or certificateArn make the ALB internet-facing: one public IPv4 address per Availability Zone
    it spans (6 in us-east-1), every hour, at $0.005; the internal default has none."""
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="1y")
    internal = stack_config_for(plan)
    other = c.other_prices(cat, "us-east-1")
    for public in (replace(internal, ingress_cidr="203.0.113.0/24"),
                   replace(internal, certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789")):
        extra = [i for i in planned_line_items(public, cat) if i not in planned_line_items(internal, cat)]
        assert [i.kind for i in extra] == ["public-ipv4"]
        assert extra[0].quantity == 6 * 730 and extra[0].unit_usd == other.public_ipv4_hourly
        assert extra[0].monthly_usd == pytest.approx(21.9) and extra[0].source == "vpc-public-ipv4-pricing"
    assert costs.total(planned_line_items(internal, cat)) == pytest.approx(plan.choice.monthly_usd, abs=0.005)


def test_serverless_refuses_flan_t5_xl_and_accepts_flan_t5_small(cat):
    xl = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="auto")
    serverless = _option(xl, "serverless")
    assert not serverless.feasible and "6144 MB" in serverless.reason
    with pytest.raises(InfeasibleError, match="mode 'serverless' cannot host flan-t5-xl"):
        make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="serverless")
    small = make_plan(load_model_config("flan-t5-small"), cat=cat, mode="serverless")
    assert small.choice.feasible and small.choice.mode == "serverless"
    assert small.choice.serverless_memory_mb in cat.serverless_limits.memory_sizes_mb


def test_serverless_memory_is_sized_for_what_the_cpu_image_runs(cat):
    """fp32 weights (the handler's CPU precision) whatever the dtype asked, plus DJL's JVM heap."""
    from llmdeploy import sizing
    from llmdeploy.assumptions import load_assumptions
    from llmdeploy.lmi import load_lmi_table

    m = load_model_config("flan-t5-small")
    fp16 = make_plan(m, cat=cat, mode="serverless", dtype="fp16").choice
    fp32 = make_plan(m, cat=cat, mode="serverless", dtype="fp32").choice
    assert fp16.serverless_memory_mb == fp32.serverless_memory_mb
    weights = sizing.inference_memory(m, "fp32", batch=1, input_tokens=1, output_tokens=1, buffer=0).total
    floor = weights + (load_assumptions().host_overhead_gib + load_lmi_table().cpu_image.jvm_heap_gib) * sizing.GIB
    assert fp32.serverless_memory_mb * 1024**2 >= floor


def test_serverless_needs_a_gpu_when_cpu_latency_misses_the_target(cat):
    plan = make_plan(load_model_config("flan-t5-small"), cat=cat, traffic=Traffic(latency_target_s=0.5))
    option = _option(plan, "serverless")
    assert not option.feasible and "needs a GPU" in option.reason and "measured CPU speed" in option.reason
    assert option.speed_model == "cpu measured"


def test_serverless_sizes_fp32_because_the_handler_runs_fp32_on_cpu(cat):
    # An int8 or bf16 checkpoint is still run in fp32 on a CPU (handlers/precision.py): XL needs 16 GB there.
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, dtype="int8")
    option = _option(plan, "serverless")
    assert not option.feasible and "fp32 on CPU" in option.reason and "6144 MB" in option.reason


def test_serverless_cost_is_linear_in_requests(cat):
    m = load_model_config("flan-t5-small")
    def usage(rpd):  # what requests pay for; the monitoring (alarms, dashboard) is a fixed monthly amount on top
        items = make_plan(m, cat=cat, mode="serverless", traffic=Traffic(requests_per_day=rpd)).choice.line_items
        fixed = [i for i in items if i.kind.startswith("cloudwatch-")]
        assert fixed, "the serverless stack's alarms and dashboard are priced too"
        return costs.total([i for i in items if i not in fixed]), costs.total(fixed)

    (one, fixed_one), (ten, fixed_ten) = usage(1000), usage(10000)
    assert ten == pytest.approx(10 * one, rel=0.01)
    assert fixed_one == fixed_ten


def test_instances_scale_with_peak_traffic(cat):
    m = load_model_config("flan-t5-xl")
    low = make_plan(m, cat=cat, mode="realtime", traffic=Traffic(peak_rps=0.5)).choice
    high = make_plan(m, cat=cat, mode="realtime", traffic=Traffic(peak_rps=50)).choice
    assert low.instance_count == 1
    assert high.instance_count > 1
    assert high.instance_count * high.requests_per_s_per_instance >= 50 > (high.instance_count - 1) * high.requests_per_s_per_instance


def test_async_pays_only_for_active_hours_and_realtime_for_all(cat):
    m = load_model_config("flan-t5-xl")
    short = make_plan(m, cat=cat, traffic=Traffic(active_hours=6))
    full = make_plan(m, cat=cat, traffic=Traffic(active_hours=24))
    assert _option(short, "async").monthly_usd < _option(full, "async").monthly_usd
    assert _option(full, "realtime").line_items[0].quantity == pytest.approx(costs.HOURS_PER_MONTH)


def test_recommendation_is_the_cheapest_feasible_and_says_why(cat):
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="auto")
    comparable = [o for o in plan.options if o.feasible and (o.mode != "reserved" or o.term == "1y")]
    assert plan.recommended.monthly_usd == min(o.monthly_usd for o in comparable)
    assert plan.choice is plan.recommended
    assert any("serverless is not possible" in r for r in plan.reasons)


def test_break_even_between_serverless_and_self_hosting(cat):
    plan = make_plan(load_model_config("flan-t5-small"), cat=cat, mode="auto", traffic=Traffic(requests_per_day=1000))
    be = next(b for b in plan.break_even if b.managed == "serverless")
    assert be.value is not None
    below = make_plan(load_model_config("flan-t5-small"), cat=cat, traffic=Traffic(requests_per_day=be.value * 0.8))
    above = make_plan(load_model_config("flan-t5-small"), cat=cat, traffic=Traffic(requests_per_day=be.value * 1.25))
    assert _option(below, "serverless").monthly_usd < _option(below, "reserved", "1y").monthly_usd
    # Above the crossing, serverless is either dearer or no longer possible.
    s_above = _option(above, "serverless")
    assert not s_above.feasible or s_above.monthly_usd > _option(above, "reserved", "1y").monthly_usd


def _tiny_catalog():
    """Three rows: enough to see the cost model pick by price, independent of the bundled data."""
    src = c.Source("t", "https://example.com", dt.date(2026, 1, 1))
    t4 = c.Gpu("T4", 16, 320, 65, 0, 8.1, 130, "7.5", src)
    a10 = c.Gpu("A10G", 24, 600, 125, 125, 31, 250, "8.6", src)
    inst = {
        "g4dn.xlarge": c.Instance("g4dn.xlarge", t4, 1, 4, 16, False, src),
        "g4dn.2xlarge": c.Instance("g4dn.2xlarge", t4, 1, 8, 32, False, src),
        "g5.2xlarge": c.Instance("g5.2xlarge", a10, 1, 8, 32, False, src),
    }
    r = "us-east-1"
    ec2 = {(r, "g4dn.xlarge"): c.Ec2Price(r, "g4dn.xlarge", 0.5, 0.3, 0.2, src),
           (r, "g4dn.2xlarge"): c.Ec2Price(r, "g4dn.2xlarge", 0.75, 0.47, 0.32, src),
           (r, "g5.2xlarge"): c.Ec2Price(r, "g5.2xlarge", 1.2, 0.76, 0.52, src)}
    hosting = {(r, "ml.g4dn.2xlarge"): c.HostingPrice(r, "ml.g4dn.2xlarge", 0.94, src)}
    base = c.load_catalog_from(c.BUNDLED_DIR)
    return c.Catalog(1, "test", MappingProxyType({"t": src}), MappingProxyType({"T4": t4, "A10G": a10}), MappingProxyType(inst),
                     MappingProxyType(ec2), MappingProxyType(hosting), MappingProxyType({r: c.ServerlessPrice(r, 0.00002, 0.016, src)}),
                     MappingProxyType({r: c.OtherPrices(r, 0.0, 0.0, src, public_ipv4_hourly=0.0, public_ipv4_source=src,
                                                        ebs_gp3_gb_month=0.0, ebs_source=src, availability_zones=2,
                                                        availability_zones_source=src)}), base.serverless_limits,
                     base.async_limits, (r,))


def test_cost_model_on_a_three_row_table():
    cat = _tiny_catalog()
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="3y")
    assert plan.choice.instance_type == "g4dn.xlarge"  # the cheapest, and one copy of XL fits its 16 GiB of RAM
    assert plan.choice.monthly_usd == pytest.approx(0.2 * 730)  # volumes, balancer and addresses cost 0 in this table
    # Read from a .bin state dict (two copies in RAM) it cannot load XL: the next cheapest wins.
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="3y", loading="in-memory")
    assert plan.choice.instance_type == "g4dn.2xlarge"
    assert plan.choice.monthly_usd == pytest.approx(0.32 * 730)
    small = make_plan(load_model_config("flan-t5-small"), cat=cat, mode="reserved", term="3y")
    assert small.choice.instance_type == "g4dn.xlarge"


def test_bad_inputs_raise_usage_errors(cat):
    m = load_model_config("flan-t5-xl")
    with pytest.raises(UsageError, match="requests-per-day must be greater than 0, got 0"):
        make_plan(m, cat=cat, traffic=Traffic(requests_per_day=0))
    with pytest.raises(UsageError, match="got -5"):
        make_plan(m, cat=cat, traffic=Traffic(requests_per_day=-5))
    with pytest.raises(UsageError, match="active-hours must be at most 24, got 25"):
        make_plan(m, cat=cat, traffic=Traffic(active_hours=25))
    with pytest.raises(UnknownChoiceError, match="Did you mean 'us-west-2'"):
        make_plan(m, cat=cat, region="us-west-3")
    with pytest.raises(UnknownChoiceError, match="unknown mode"):
        make_plan(m, cat=cat, mode="spot")
    with pytest.raises(UnknownChoiceError, match="dtype"):
        make_plan(m, cat=cat, dtype="fp8")


def test_bf16_is_refused_on_gpus_without_it(cat):
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, dtype="bf16", mode="reserved")
    assert cat.instances[plan.choice.instance_type].gpu.supports_bf16, "a T4 has no bf16: the plan must not pick it"


def test_stack_config_deploys_exactly_the_choice(cat):
    for mode in ("reserved", "realtime", "async"):
        plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode=mode)
        cfg = stack_config_for(plan, owner="ml-platform")
        cfg.validate(cat)
        assert (cfg.mode, cfg.instance_type, cfg.instance_count) == (mode, plan.choice.instance_type, plan.choice.instance_count)
        assert cfg.owner == "ml-platform"
    asy = stack_config_for(make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="async"))
    assert asy.min_instances == 0, "async must be allowed to scale to zero"
    sl = stack_config_for(make_plan(load_model_config("flan-t5-small"), cat=cat, mode="serverless"))
    assert sl.mode == "serverless" and sl.serverless_memory_mb in cat.serverless_limits.memory_sizes_mb
    assert sl.usage_ms_per_request > 0 and sl.usage_requests_per_month > 0


def test_a_region_without_serverless_prices_marks_serverless_infeasible_not_an_error():
    import dataclasses

    cat = dataclasses.replace(_tiny_catalog(), serverless=MappingProxyType({}))
    plan = make_plan(load_model_config("flan-t5-small"), cat=cat, region="us-east-1")
    option = _option(plan, "serverless")
    assert not option.feasible and "no SageMaker serverless price for us-east-1" in option.reason


def test_a_total_does_not_depend_on_the_order_of_its_line_items(cat):
    """plan sums by mode, the offline preview by resource in registration order: the same items must give the same
    cents even on a half cent (the ALB's 730 h x $0.0225 = $16.425), or plan and preview would differ by one."""
    import itertools

    items = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="1y").choice.line_items
    totals = {costs.total(list(p)) for p in itertools.permutations(items)}
    assert len(totals) == 1  # a plain sum gives 279.755 one way and 279.7549... another: $279.76 vs $279.75


def test_a_t5_model_is_never_planned_split_over_gpus(cat):
    """The LMI handler loads one copy of a T5 model per GPU: an instance where it would need tensor parallelism is
    refused with that reason, and the plan lands on one whose single GPU holds it (stack tensorParallelDegree 1)."""
    xxl = load_model_config("flan-t5-xxl")  # 22 GB in bf16: more than one A10G or T4 holds
    with pytest.raises(InfeasibleError, match="g5.12xlarge: the LMI handler runs one copy of flan-t5-xxl per GPU; "
                                              "here it would need tensor parallel degree 2"):
        make_plan(xxl, cat=cat, mode="realtime", dtype="bf16", instance_types=("ml.g5.12xlarge",))
    plan = make_plan(xxl, cat=cat, mode="realtime", dtype="bf16")
    assert plan.choice.feasible and plan.choice.tensor_parallel == 1
    assert stack_config_for(plan).tensor_parallel_degree == 1


# -- the checks that narrow Optional fields (mypy) give one line, not an AttributeError -------------------------


def test_a_cpu_type_has_no_gpu_to_require(cat):
    # Every GPU-only path (estimate's fit table, plan's capacity, fine-tuning) reads the GPU through require_gpu.
    assert c.instance(cat, "g4dn.xlarge").require_gpu().name == "T4"
    with pytest.raises(UsageError, match=r"instance type 'c5\.xlarge' has no GPU"):
        c.instance(cat, "c5.xlarge").require_gpu()


def test_an_infeasible_option_names_its_reason_when_a_field_of_a_feasible_one_is_asked_for(cat):
    plan = make_plan(load_model_config("flan-t5-xl"), cat=cat, mode="reserved", term="1y")
    serverless = _option(plan, "serverless")  # XL does not fit serverless memory (test above)
    assert not serverless.feasible and serverless.monthly_usd is None
    with pytest.raises(InfeasibleError, match="serverless has no monthly cost: it cannot host the model") as err:
        serverless.monthly()
    assert serverless.reason in str(err.value) and "\n" not in str(err.value)
    assert plan.choice.monthly() == plan.choice.monthly_usd
    with pytest.raises(InfeasibleError, match="serverless has no batch size: it cannot host the model"):
        stack_config_for(replace(plan, choice=serverless))
