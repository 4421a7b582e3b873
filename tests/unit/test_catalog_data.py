"""Checks on the bundled price / instance / limits catalog data (llmdeploy/data/catalog/*.toml).

These test the data itself, not the loader: every row is sourced and dated, prices are ordered
sensibly, instance hardware matches what AWS publishes, and a few anchor figures hold.
"""

from __future__ import annotations

import datetime as dt

import pytest

from llmdeploy import catalog as c

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
HOURS_PER_YEAR = 8760


@pytest.fixture(scope="module")
def cat() -> c.Catalog:
    return c.load_catalog_from(c.BUNDLED_DIR)


def _all_rows(cat: c.Catalog):
    yield from cat.gpus.values()
    yield from cat.instances.values()
    yield from cat.ec2.values()
    yield from cat.hosting.values()
    yield from cat.serverless.values()
    yield from cat.other.values()
    yield cat.serverless_limits
    yield cat.async_limits


# -- sources -------------------------------------------------------------------------------------


def test_every_source_has_url_date_and_note(cat):
    today = dt.date.today()
    assert cat.sources
    for key, src in cat.sources.items():
        assert src.url.startswith("https://"), key
        assert isinstance(src.retrieved, dt.date), key
        assert src.retrieved <= today, f"{key} is dated in the future: {src.retrieved}"
        assert src.retrieved >= dt.date(2018, 1, 1), key
        assert len(src.note) > 40, f"{key} needs a note saying what its numbers mean"
        assert "SEED" not in src.note, f"{key} still carries a seed placeholder"


def test_every_row_names_a_defined_source(cat):
    for row in _all_rows(cat):
        assert row.source.key in cat.sources
        assert cat.sources[row.source.key] is row.source


def test_every_source_is_used(cat):
    used = {row.source.key for row in _all_rows(cat)}
    for o in cat.other.values():
        used |= {s.key for s in (o.public_ipv4_source, o.ebs_source, o.availability_zones_source,
                                 o.cloudwatch.source if o.cloudwatch else None) if s is not None}
    used |= {g.memory_reported_source.key for g in cat.gpus.values() if g.memory_reported_source is not None}
    assert set(cat.sources) == used, f"unused sources: {set(cat.sources) - used}"


def test_estimated_sources_are_flagged_and_only_they_say_estimate(cat):
    flagged = {k for k, s in cat.sources.items() if s.estimated}
    assert flagged == {"sagemaker-hosting-derived"}
    for key in flagged:
        assert cat.sources[key].note.startswith("ESTIMATE"), key
    rows = c.price_rows(cat)
    assert rows and all({"source", "url", "date", "estimated"} <= set(r) for r in rows)
    assert {r["source"] for r in rows if r["estimated"]} == flagged


def test_headline_date_is_the_oldest_price_in_use(cat):
    dates = [s.retrieved for s in cat.price_sources()]
    assert cat.oldest_price_date() == min(dates) < cat.snapshot_date == max(dates)
    # eu-west-1 rests on a December 2023 AWS bill; us-east-1's oldest figure is the 3-year RI dump of 2025-11-30.
    assert cat.oldest_price_date("eu-west-1") == dt.date(2023, 12, 31)
    assert cat.oldest_price_date("us-east-1") == dt.date(2025, 11, 30)


def test_reserved_price_sources_state_the_payment_option(cat):
    for price in cat.ec2.values():
        if price.ri_1y is not None or price.ri_3y is not None:
            note = price.source.note.lower()
            assert "standard" in note and "no upfront" in note, price.source.key


# -- EC2 prices ----------------------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("itype", ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g5.12xlarge", "p4d.24xlarge"])
def test_core_types_priced_in_every_region(cat, region, itype):
    assert (region, itype) in cat.ec2


@pytest.mark.parametrize("itype", ["g6.xlarge", "g6e.xlarge", "p5.48xlarge", "p3.2xlarge"])
def test_newer_and_big_types_priced_in_us_east_1(cat, itype):
    assert ("us-east-1", itype) in cat.ec2


def test_every_family_has_prices_in_us_east_1(cat):
    families = {t.split(".")[0] for (r, t) in cat.ec2 if r == "us-east-1"}
    assert {"g4dn", "g5", "g6", "g6e", "p3", "p3dn", "p4d", "p5"} <= families


def test_prices_are_positive_and_ordered(cat):
    for (region, itype), p in cat.ec2.items():
        assert p.on_demand > 0, (region, itype)
        if p.ri_1y is not None:
            assert 0 < p.ri_1y < p.on_demand, (region, itype)
        if p.ri_3y is not None:
            assert 0 < p.ri_3y < p.on_demand, (region, itype)
            if p.ri_1y is not None:
                assert p.ri_3y < p.ri_1y, (region, itype)


def test_every_ec2_priced_type_has_a_gpu_instance_row(cat):
    for _, itype in cat.ec2:
        inst = cat.instances[itype]
        assert inst.gpu is not None and inst.gpu_count >= 1, itype


def test_g4dn_2xlarge_anchor_prices(cat):
    p = cat.ec2[("us-east-1", "g4dn.2xlarge")]
    assert p.on_demand == pytest.approx(0.752)
    annual_1y = p.ri_1y * HOURS_PER_YEAR
    assert 3900 <= annual_1y <= 4300, annual_1y


def test_sizes_within_a_family_cost_more_when_bigger(cat):
    # same GPU count, more vCPUs/RAM: never cheaper (single-GPU sizes of g4dn/g5/g6/g6e)
    for family in ("g4dn", "g5", "g6", "g6e"):
        sizes = ["xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge"]
        prices = [cat.ec2[("us-east-1", f"{family}.{s}")].on_demand for s in sizes]
        assert prices == sorted(prices), family


def test_2025_gpu_price_cut_is_reflected(cat):
    # AWS cut P4d/P5 On-Demand prices in June 2025 (p4d.24xlarge was $32.7726/h, p5.48xlarge $98.32/h).
    assert cat.ec2[("us-east-1", "p4d.24xlarge")].on_demand < 25
    assert cat.ec2[("us-east-1", "p5.48xlarge")].on_demand < 70


def test_us_east_1_is_not_dearer_than_eu_west_1(cat):
    for (region, itype), p in cat.ec2.items():
        if region == "eu-west-1" and ("us-east-1", itype) in cat.ec2:
            assert cat.ec2[("us-east-1", itype)].on_demand <= p.on_demand, itype


def test_three_year_reserved_prices(cat):
    # 3-year Standard RI, No Upfront (vantage-ec2-ri3y): present where read, cheaper than 1-year, sane discount.
    with_3y = {key: p for key, p in cat.ec2.items() if p.ri_3y is not None}
    assert len(with_3y) >= 60
    for (region, itype), p in with_3y.items():
        if p.ri_1y is None:  # only p5.48xlarge: the dump lists 3-year but no 1-year Standard term for it
            assert itype == "p5.48xlarge", (region, itype)
            assert p.on_demand > p.ri_3y > 0, (region, itype)
        else:
            assert p.on_demand > p.ri_1y > p.ri_3y > 0, (region, itype)
        assert 0.25 < p.ri_3y / p.on_demand < 0.75, (region, itype)
        assert p.source.key == "vantage-ec2-ri3y", (region, itype)
        assert "3-year" in p.source.note and "no upfront" in p.source.note.lower()
    for region in ("us-east-1", "us-west-2"):
        for (r, itype), p in cat.ec2.items():
            if r == region and itype.split(".")[0] in ("g5", "g6", "g6e", "p4d"):
                assert p.ri_3y is not None, (region, itype)
    # anchor figures read from the dump
    assert cat.ec2[("us-east-1", "p4d.24xlarge")].ri_3y == pytest.approx(9.374219)
    assert cat.ec2[("us-east-1", "g5.xlarge")].ri_3y == pytest.approx(0.43459)
    assert cat.ec2[("eu-west-1", "g5.12xlarge")].ri_3y == pytest.approx(2.73528)
    assert cat.ec2[("us-east-1", "g4dn.12xlarge")].ri_3y == pytest.approx(1.69)
    assert cat.ec2[("eu-west-1", "g4dn.metal")].ri_3y == pytest.approx(3.769)
    assert cat.ec2[("us-east-1", "p5.48xlarge")].ri_3y == pytest.approx(23.77728)


@pytest.mark.parametrize("region", REGIONS)
def test_every_g4dn_row_has_all_three_terms(cat, region):
    # every g4dn size was read from the 3-year dump in every region (vantage-ec2-ri3y)
    g4dn = {t: p for (r, t), p in cat.ec2.items() if r == region and t.startswith("g4dn.")}
    assert set(g4dn) == {f"g4dn.{s}" for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal")}
    for itype, p in g4dn.items():
        assert p.ri_1y is not None and p.ri_3y is not None, itype
        assert p.on_demand > p.ri_1y > p.ri_3y > 0, itype
        assert p.source.key == "vantage-ec2-ri3y", itype


def test_p3_rows_have_no_reserved_prices(cat):
    # the dump's p3.* linux.reserved is empty in every catalog region: no RI term to read
    for (region, itype), p in cat.ec2.items():
        if itype.startswith("p3."):
            assert p.ri_1y is None and p.ri_3y is None, (region, itype)


# -- instances and GPUs --------------------------------------------------------------------------


def test_bf16_support_flags(cat):
    for name in ("T4", "V100", "V100-32GB"):
        assert not cat.gpus[name].supports_bf16, name
    for name in ("A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100", "H200"):
        assert cat.gpus[name].supports_bf16, name


def test_gpu_figures_are_dense_and_consistent(cat):
    for name, g in cat.gpus.items():
        assert g.memory_gib > 0 and g.bandwidth_gbs > 0 and g.fp32_tflops > 0, name
        assert g.fp16_tflops > g.fp32_tflops, f"{name}: tensor fp16 should beat plain fp32"
        if g.supports_bf16:
            assert g.bf16_tflops == g.fp16_tflops, name
        major, minor = g.compute_capability.split(".")
        assert major.isdigit() and minor.isdigit(), name
    # dense, not the 2:4-sparsity figures NVIDIA prints first
    assert cat.gpus["H100"].bf16_tflops < 1000
    assert cat.gpus["A100-40GB"].bf16_tflops == pytest.approx(312)
    assert cat.gpus["L4"].bf16_tflops < 200


def test_compute_capabilities(cat):
    expected = {"T4": "7.5", "V100": "7.0", "A10G": "8.6", "L4": "8.9", "L40S": "8.9", "A100-40GB": "8.0", "H100": "9.0", "H200": "9.0"}
    for name, cc in expected.items():
        assert cat.gpus[name].compute_capability == cc, name


def test_p4d_24xlarge(cat):
    i = cat.instances["p4d.24xlarge"]
    assert i.gpu.name == "A100-40GB" and i.gpu_count == 8
    assert i.total_gpu_memory_gib == 320
    assert i.efa
    assert i.vcpus == 96 and i.ram_gib == 1152


def test_p5_and_p3dn(cat):
    p5 = cat.instances["p5.48xlarge"]
    assert p5.gpu.name == "H100" and p5.gpu_count == 8 and p5.efa and p5.ram_gib == 2048
    p3dn = cat.instances["p3dn.24xlarge"]
    assert p3dn.gpu.name == "V100-32GB" and p3dn.gpu_count == 8 and p3dn.efa


def test_g4dn_sizes(cat):
    g = cat.instances["g4dn.2xlarge"]
    assert (g.gpu.name, g.gpu_count, g.gpu_memory_gib, g.ram_gib, g.vcpus) == ("T4", 1, 16, 32, 8)
    assert cat.instances["g4dn.xlarge"].ram_gib == 16
    assert cat.instances["g4dn.12xlarge"].gpu_count == 4
    assert not cat.instances["g4dn.2xlarge"].efa


def test_gpu_per_family(cat):
    expected = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S", "p3": "V100", "p4d": "A100-40GB", "p5": "H100"}
    for itype, inst in cat.instances.items():
        if inst.family in expected:
            assert inst.gpu.name == expected[inst.family], itype


def test_multi_gpu_sizes(cat):
    for family in ("g5", "g6", "g6e"):
        assert cat.instances[f"{family}.12xlarge"].gpu_count == 4
        assert cat.instances[f"{family}.24xlarge"].gpu_count == 4
        assert cat.instances[f"{family}.48xlarge"].gpu_count == 8


def test_cpu_types_have_no_gpu(cat):
    for itype in ("c5.xlarge", "c5.2xlarge", "m5.xlarge", "m5.2xlarge"):
        inst = cat.instances[itype]
        assert inst.gpu is None and inst.gpu_count == 0 and inst.total_gpu_memory_gib == 0
    assert c.instance(cat, "ml.c5.xlarge").vcpus == 4


# -- SageMaker -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ml", ["ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge", "ml.g6.xlarge", "ml.g6e.xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge"]
)
def test_core_hosting_types_in_us_east_1(cat, ml):
    assert ("us-east-1", ml) in cat.hosting


@pytest.mark.parametrize(("ml", "hourly"), [("ml.p4d.24xlarge", 25.25), ("ml.p5.48xlarge", 63.29)])
def test_p4d_and_p5_hosting_rows_are_post_june_2025_prices(cat, ml, hourly):
    h = cat.hosting[("us-east-1", ml)]
    assert h.hourly == hourly and h.source.key == "sagemaker-hosting-p4d-p5-2026-06" and not h.source.estimated
    assert f"${hourly}" in h.source.note or f"{hourly}" in h.source.note
    # EC2's post-cut on-demand price × 1.15, cut to the cent: the premium AWS bills other SageMaker components of these types.
    ec2 = cat.ec2[("us-east-1", ml.removeprefix("ml."))].on_demand
    assert int(ec2 * 1.15 * 100) / 100 == hourly


def test_p5_has_no_uncited_one_year_rate(cat):
    # No citable copy of a 1-year Standard rate for p5.48xlarge was found: left out rather than guessed.
    assert cat.ec2[("us-east-1", "p5.48xlarge")].ri_1y is None
    assert "34.6752" in cat.sources["vantage-ec2-ri3y"].note


def test_gpu_memory_as_the_driver_reports_it(cat):
    reported = {name: g.memory_reported_mib for name, g in cat.gpus.items()}
    assert reported == {"T4": 15360, "A10G": 23028, "L4": 23034, "L40S": 46068, "V100": 16160, "V100-32GB": 32510,
                        "A100-40GB": 40960, "A100-80GB": 81920, "H100": 81559, "H200": 143771}
    for g in cat.gpus.values():
        assert g.reported_bytes <= g.memory_gib * 1024**3, "the driver never reports more than the datasheet's GB as GiB"
        assert g.memory_reported_source.key == "nvidia-smi-reported-memory"
        assert str(g.memory_reported_mib) in g.memory_reported_source.note or f"{g.memory_reported_mib:,}" in g.memory_reported_source.note


def test_root_volume_and_availability_zone_figures(cat):
    assert {r: (o.ebs_gp3_gb_month, o.availability_zones) for r, o in cat.other.items()} == {
        "us-east-1": (0.08, 6), "us-west-2": (0.08, 4), "eu-west-1": (0.088, 3)}


def test_every_hosting_type_resolves_to_hardware(cat):
    for _, ml in cat.hosting:
        assert ml.startswith("ml.")
        c.instance(cat, ml)  # raises if instances.toml lacks the bare type


def test_sagemaker_premium_over_ec2(cat):
    for (region, ml), h in cat.hosting.items():
        bare = ml.removeprefix("ml.")
        if (region, bare) in cat.ec2:
            assert h.hourly > cat.ec2[(region, bare)].on_demand, (region, ml)
    assert cat.hosting[("us-east-1", "ml.g4dn.2xlarge")].hourly > cat.ec2[("us-east-1", "g4dn.2xlarge")].on_demand


def test_estimated_hosting_rows_say_so(cat):
    for h in cat.hosting.values():
        if h.source.key.endswith("derived"):
            assert "ESTIMATE" in h.source.note


def test_billed_hosting_rows_match_the_derived_ratio(cat):
    # eu-west-1 rows taken from an AWS bill agree with EC2 on-demand x 1.25 to within 0.5%.
    billed = {k: h for k, h in cat.hosting.items() if h.source.key == "sagemaker-hosting-euw1-bill-2023-12"}
    assert set(billed) == {("eu-west-1", "ml.g4dn.4xlarge"), ("eu-west-1", "ml.g4dn.12xlarge"), ("eu-west-1", "ml.g5.12xlarge")}
    for (region, ml), h in billed.items():
        ec2 = cat.ec2[(region, ml.removeprefix("ml."))].on_demand
        assert h.hourly == pytest.approx(ec2 * 1.25, rel=0.005), ml


@pytest.mark.parametrize(
    ("ml", "hourly"), [("ml.g6.xlarge", 1.1267), ("ml.g6e.2xlarge", 2.8026), ("ml.g6e.12xlarge", 13.1158)]
)
def test_published_price_list_hosting_rows(cat, ml, hourly):
    # us-east-1 USE1-Host rows of AWS's SageMaker price list (version 20261005212151), not estimates.
    h = cat.hosting[("us-east-1", ml)]
    assert h.source.key == "sagemaker-hosting-pricelist-2026-10"
    assert h.hourly == pytest.approx(hourly, abs=1e-9)
    # They confirm the premium the derived estimates assume: x 1.40 for *.xlarge, x 1.25 otherwise.
    ratio = 1.40 if ml.split(".")[2] == "xlarge" else 1.25
    assert h.hourly == pytest.approx(cat.ec2[("us-east-1", ml.removeprefix("ml."))].on_demand * ratio, rel=0.001)


def test_every_serverless_region_is_complete(cat):
    assert "us-east-1" in cat.serverless
    for region, s in cat.serverless.items():
        assert region in REGIONS
        assert 0 < s.usd_per_gb_second < 0.001, region
        assert 0 < s.usd_per_gb_processed < 1, region


def test_serverless_and_other_prices(cat):
    s = cat.serverless["us-east-1"]
    assert 0 < s.usd_per_gb_second < 0.001
    assert 0 < s.usd_per_gb_processed < 1
    # a 6 GB endpoint busy for a full month stays within sane bounds
    assert 100 < s.usd_per_gb_second * 6 * 3600 * 730 < 1000
    for region in REGIONS:
        o = cat.other[region]
        assert 0.01 < o.alb_hourly < 0.05
        assert o.kms_key_monthly == pytest.approx(1.0)


def test_public_ipv4_hourly_is_half_a_cent_everywhere_with_a_source(cat):
    """Elastic IPs / public IPv4: $0.005 per address-hour in every region since 2024-02-01 (VPC pricing)."""
    for region in REGIONS:
        o = cat.other[region]
        assert o.public_ipv4_hourly == pytest.approx(0.005), region
        assert o.public_ipv4_source is not None, f"{region}: public_ipv4_hourly must name its source"
        assert cat.sources[o.public_ipv4_source.key] is o.public_ipv4_source
        assert o.public_ipv4_source.url == "https://aws.amazon.com/vpc/pricing/"
        assert "0.005" in o.public_ipv4_source.note and "2024-02-01" in o.public_ipv4_source.note


def test_public_ipv4_price_is_optional_and_needs_a_source(tmp_path):
    import shutil

    for name in ("sources.toml", "gpus.toml", "instances.toml", "ec2_prices.toml", "sagemaker_prices.toml", "limits.toml"):
        shutil.copyfile(c.BUNDLED_DIR / name, tmp_path / name)
    sm = tmp_path / "sagemaker_prices.toml"
    text = sm.read_text()
    sm.write_text(text.replace('public_ipv4_hourly = 0.005\npublic_ipv4_source = "vpc-public-ipv4-pricing"\n', "", 1))
    loaded = c.load_catalog_from(tmp_path)
    assert loaded.other["us-east-1"].public_ipv4_hourly is None, "a row without it states no price (none guessed)"
    assert loaded.other["us-east-1"].public_ipv4_source is None
    assert loaded.other["us-west-2"].public_ipv4_hourly == pytest.approx(0.005)
    sm.write_text(text.replace('public_ipv4_source = "vpc-public-ipv4-pricing"\n', "", 1))
    with pytest.raises(c.ConfigError, match="public_ipv4_source"):
        c.load_catalog_from(tmp_path)


# -- limits --------------------------------------------------------------------------------------


def test_serverless_limits(cat):
    sl = cat.serverless_limits
    assert sl.memory_sizes_mb == (1024, 2048, 3072, 4096, 5120, 6144)
    assert max(sl.memory_sizes_mb) == 6144
    assert not sl.gpu
    assert sl.max_concurrency == 200
    assert 1 <= sl.max_provisioned_concurrency <= sl.max_concurrency
    assert sl.max_payload_mb == 4 and sl.timeout_s == 60 and sl.max_image_gb == 10


def test_async_limits(cat):
    al = cat.async_limits
    assert al.max_payload_gb == 1
    assert al.max_processing_s == 3600
    assert al.max_concurrent_invocations_per_instance == 1000


def test_regions(cat):
    assert set(REGIONS) <= set(cat.regions)
    assert cat.snapshot_date <= dt.date.today()
