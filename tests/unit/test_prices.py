"""`llmdeploy prices` and llmdeploy.prices: Price List parsing, refresh into the user cache, show, clear.

No network: a real botocore ``pricing`` client with ``Stubber`` answers ``GetProducts`` with
PriceList items built in the shape the API returns them (JSON strings with ``product.attributes``
and ``terms.OnDemand`` / ``terms.Reserved``). moto does not implement the pricing service.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from llmdeploy import catalog as c
from llmdeploy import prices as p
from llmdeploy.cli.main import cli

REGION = "us-east-1"
TODAY = dt.date.today()

# Real offer-term and rate codes of the EC2 price list (OnDemand JRTCKXETXF; hourly 6YS6EN2CT7; upfront 2TG2D8R56U).
RESERVED_CODES = {
    ("1yr", "standard", "No Upfront"): "4NA7Y494T4",
    ("1yr", "standard", "Partial Upfront"): "HU7G6KETJZ",
    ("1yr", "standard", "All Upfront"): "6QCMYABX3D",
    ("3yr", "standard", "No Upfront"): "BPH4J8HBKS",
    ("3yr", "standard", "Partial Upfront"): "38NPMPTW36",
    ("3yr", "standard", "All Upfront"): "NQ3QZPMQV9",
    ("1yr", "convertible", "No Upfront"): "7NE97W5U4E",
    ("3yr", "convertible", "No Upfront"): "Z2E3P23VKM",
}


def _dim(sku, term, rate, unit, usd, description, begin="0", end="Inf"):
    return {
        "unit": unit, "endRange": end, "description": description, "appliesTo": [],
        "rateCode": f"{sku}.{term}.{rate}", "beginRange": begin, "pricePerUnit": {"USD": f"{usd:.10f}"},
    }


def _on_demand(sku, usd, description, unit="Hrs"):
    return {f"{sku}.JRTCKXETXF": {
        "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": _dim(sku, "JRTCKXETXF", "6YS6EN2CT7", unit, usd, description)},
        "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF", "termAttributes": {},
    }}


def _reserved(sku, itype, offers):
    """offers: {(lease, class, option): (hourly, upfront)}."""
    out = {}
    for (lease, klass, option), (hourly, upfront) in offers.items():
        code = RESERVED_CODES[(lease, klass, option)]
        dims = {f"{sku}.{code}.6YS6EN2CT7": _dim(sku, code, "6YS6EN2CT7", "Hrs", hourly,
                                                  f"Linux/UNIX (Amazon VPC), {itype} reserved instance applied")}
        if upfront:
            dims[f"{sku}.{code}.2TG2D8R56U"] = _dim(sku, code, "2TG2D8R56U", "Quantity", upfront, "Upfront Fee")
        out[f"{sku}.{code}"] = {
            "priceDimensions": dims, "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": code,
            "termAttributes": {"LeaseContractLength": lease, "OfferingClass": klass, "PurchaseOption": option},
        }
    return out


def ec2_item(itype, on_demand, *, ri_1y=None, ri_3y=None, region=REGION, os_="Linux", tenancy="Shared",
             license_="No License required", pre_sw="NA", capacity="Used", operation="RunInstances", full_reserved=True):
    sku = f"SKU{abs(hash((itype, region, os_, tenancy, license_, pre_sw, capacity, operation))) % 10**10:010d}"
    prefix = "" if region == "us-east-1" else {"us-west-2": "USW2-", "eu-west-1": "EU-"}[region]
    usage = {"Shared": "BoxUsage", "Dedicated": "DedicatedUsage", "Host": "HostBoxUsage"}[tenancy]
    reserved = {}
    if ri_1y is not None:
        reserved[("1yr", "standard", "No Upfront")] = (ri_1y, 0)
        if full_reserved:  # the other payment options and the convertible class, which must NOT be picked
            reserved[("1yr", "standard", "Partial Upfront")] = (round(ri_1y * 0.48, 4), round(ri_1y * 0.48 * 8760, 0))
            reserved[("1yr", "standard", "All Upfront")] = (0.0, round(ri_1y * 0.94 * 8760, 0))
            reserved[("1yr", "convertible", "No Upfront")] = (round(ri_1y * 1.15, 4), 0)
    if ri_3y is not None:
        reserved[("3yr", "standard", "No Upfront")] = (ri_3y, 0)
        if full_reserved:
            reserved[("3yr", "standard", "Partial Upfront")] = (round(ri_3y * 0.45, 4), round(ri_3y * 0.45 * 26280, 0))
            reserved[("3yr", "standard", "All Upfront")] = (0.0, round(ri_3y * 0.9 * 26280, 0))
            reserved[("3yr", "convertible", "No Upfront")] = (round(ri_3y * 1.3, 4), 0)
    doc = {
        "product": {
            "productFamily": "Compute Instance (bare metal)" if itype.endswith(".metal") else "Compute Instance",
            "attributes": {
                "enhancedNetworkingSupported": "Yes", "memory": "16 GiB", "vcpu": "4", "capacitystatus": capacity,
                "locationType": "AWS Region", "storage": "1 x 125 NVMe SSD", "instanceFamily": "GPU instance",
                "operatingSystem": os_, "regionCode": region, "physicalProcessor": "Intel Xeon Family",
                "clockSpeed": "2.5 GHz", "ecu": "NA", "networkPerformance": "Up to 25 Gigabit",
                "servicename": "Amazon Elastic Compute Cloud", "gpuMemory": "16 GiB", "instanceType": itype,
                "tenancy": tenancy, "usagetype": f"{prefix}{usage}:{itype}", "normalizationSizeFactor": "8",
                "servicecode": "AmazonEC2", "licenseModel": license_, "currentGeneration": "Yes", "preInstalledSw": pre_sw,
                "location": "US East (N. Virginia)", "processorArchitecture": "64-bit", "marketoption": "OnDemand",
                "operation": operation, "availabilityzone": "NA", "gpu": "1",
            },
            "sku": sku,
        },
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": _on_demand(sku, on_demand, f"${on_demand} per On Demand {os_} {itype} Instance Hour")},
        "version": "20261120153512",
        "publicationDate": "2026-11-20T15:35:12Z",
    }
    if reserved:
        doc["terms"]["Reserved"] = _reserved(sku, itype, reserved)
    return json.dumps(doc)


def sagemaker_item(usagetype, *, family, attributes, price, unit="Hrs", region=REGION, free_tier=None):
    sku = f"SM{abs(hash((usagetype, region))) % 10**10:010d}"
    dims = {}
    if free_tier:  # a zero-priced first range, then the paid rate
        dims[f"{sku}.JRTCKXETXF.FREE"] = _dim(sku, "JRTCKXETXF", "FREE", unit, 0.0, "free tier", end=str(free_tier))
        dims[f"{sku}.JRTCKXETXF.6YS6EN2CT7"] = _dim(sku, "JRTCKXETXF", "6YS6EN2CT7", unit, price, "paid", begin=str(free_tier))
    else:
        dims[f"{sku}.JRTCKXETXF.6YS6EN2CT7"] = _dim(sku, "JRTCKXETXF", "6YS6EN2CT7", unit, price, f"${price} per {usagetype}")
    doc = {
        "product": {"productFamily": family, "attributes": {
            "regionCode": region, "servicecode": "AmazonSageMaker", "usagetype": usagetype, "locationType": "AWS Region",
            "location": "US East (N. Virginia)", "servicename": "Amazon SageMaker", **attributes}, "sku": sku},
        "serviceCode": "AmazonSageMaker",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {"priceDimensions": dims, "sku": sku, "offerTermCode": "JRTCKXETXF",
                                                      "effectiveDate": "2026-11-01T00:00:00Z", "termAttributes": {}}}},
        "version": "20261120153512", "publicationDate": "2026-11-20T15:35:12Z",
    }
    return json.dumps(doc)


def hosting_item(ml_type, price, *, component="Hosting", usage_kind="Host", region=REGION):
    prefix = {"us-east-1": "USE1", "us-west-2": "USW2", "eu-west-1": "EU"}[region]
    return sagemaker_item(f"{prefix}-{usage_kind}:{ml_type}", family="ML Instance", region=region, price=price, attributes={
        "instanceName": ml_type, "instanceType": ml_type, "component": component, "operation": "RunInstance",
        "vCpu": "8", "memory": "32 GiB", "gpu": "1", "gpuMemory": "24"})


def serverless_items(region=REGION, per_gb_second=0.000021, per_gb=0.017):
    prefix = {"us-east-1": "USE1", "us-west-2": "USW2", "eu-west-1": "EU"}[region]
    compute = [sagemaker_item(f"{prefix}-ServerlessInf:Mem-{gb}GB", family="ML Serverless", region=region, unit="Second",
                              price=round(per_gb_second * gb, 10), free_tier=150000,
                              attributes={"operation": "ServerlessInference", "memory": f"{gb} GB"})
               for gb in (1, 2, 4, 6)]
    provisioned = sagemaker_item(f"{prefix}-ServerlessInf:PC-Mem-2GB", family="ML Serverless", region=region, unit="Second",
                                 price=0.0000095, attributes={"operation": "ServerlessInference"})
    return compute + [provisioned]


def data_items(region=REGION, per_gb=0.017):
    prefix = {"us-east-1": "USE1", "us-west-2": "USW2", "eu-west-1": "EU"}[region]
    return [sagemaker_item(f"{prefix}-Data-Bytes-{d}", family="Data Transfer", region=region, unit="GB", price=per_gb,
                           attributes={"operation": "Invoke-Endpoint", "group": f"Hosting:{d.upper()}"})
            for d in ("In", "Out")]


# -- the API answers for one refresh -----------------------------------------------------------------

def BUNDLED() -> c.Catalog:
    return c.load_catalog_from(c.BUNDLED_DIR)


NEW_G4DN_2X = dict(on_demand=0.8, ri_1y=0.5, ri_3y=0.34)  # distinct from the bundled prices


def price_list(query: p.Query) -> list[str]:
    """What the (recorded-shape) API returns for one of refresh's queries."""
    if query.kind == "ec2":
        t, r = query.instance_type, query.region
        if t == "g4dn.2xlarge":
            noise = [ec2_item(t, 1.14, ri_1y=0.9, os_="Windows", operation="RunInstances:0002", region=r),
                     ec2_item(t, 0.9, ri_1y=0.6, os_="Windows", license_="Bring your own license", operation="RunInstances:0800",
                              region=r),
                     ec2_item(t, 0.83, ri_1y=0.52, tenancy="Dedicated", region=r),
                     ec2_item(t, 0.0, capacity="UnusedCapacityReservation", region=r)]
            return noise + [ec2_item(t, region=r, **NEW_G4DN_2X)]
        if t == "g4dn.xlarge":
            return [ec2_item(t, 0.526, ri_1y=0.331, ri_3y=0.227, region=r)]
        if t == "p5.48xlarge":
            return [ec2_item(t, 55.04, region=r)]  # no reserved terms returned
        return []  # every other type: the API returned nothing -> kept from the snapshot
    if query.kind == "hosting":
        r = query.region
        return [hosting_item("ml.g4dn.2xlarge", 0.99, region=r), hosting_item("ml.g5.xlarge", 1.4084, region=r),
                hosting_item("ml.g4dn.2xlarge", 0.99, component="Training", usage_kind="Train", region=r),
                hosting_item("ml.g4dn.2xlarge", 0.99, component="AsyncInf", usage_kind="AsyncInf", region=r),
                hosting_item("ml.zz9.unknown", 3.0, region=r)]  # not a catalog type: ignored
    if query.kind == "serverless":
        return serverless_items(query.region)
    return data_items(query.region)


def stubbed_client(queries, *, fail_at=None, error=None, page_size=2):
    """A real pricing client whose GetProducts answers come from price_list(), paginated, in call order."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(client)
    for i, q in enumerate(queries):
        if fail_at is not None and i == fail_at:
            stub.add_client_error("get_products", **(error or {"service_error_code": "ThrottlingException",
                                                              "service_message": "Rate exceeded", "http_status_code": 400}))
            break
        items = price_list(q)
        pages = [items[k:k + page_size] for k in range(0, len(items), page_size)] or [[]]
        for n, page in enumerate(pages):
            expected = q.params() | ({"NextToken": f"tok-{i}-{n}"} if n else {})
            response = {"FormatVersion": "aws_v1", "PriceList": page}
            if n + 1 < len(pages):
                response["NextToken"] = f"tok-{i}-{n + 1}"
            stub.add_response("get_products", response, expected)
    stub.activate()
    return client, stub


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMDEPLOY_BUNDLED_PRICES", raising=False)
    for var in ("LLMDEPLOY_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "LLMDEPLOY_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    c.load_catalog.cache_clear()
    yield c.user_cache_dir()
    c.load_catalog.cache_clear()


def run(*args, code=0):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def use_stub(monkeypatch, regions=(REGION,), **kw):
    types = sorted(c.load_catalog_from(c.BUNDLED_DIR).instances)
    client, stub = stubbed_client(p.plan_queries(list(regions), types), **kw)
    monkeypatch.setattr(p, "pricing_client", lambda: client)
    return stub


def snapshot(directory):
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir())}


# -- parsing -----------------------------------------------------------------------------------------


def test_ec2_parser_picks_exactly_standard_no_upfront():
    offer = p.parse_ec2_product(ec2_item("g5.xlarge", 1.006, ri_1y=0.63378, ri_3y=0.4327))
    assert offer == p.Ec2Offer(REGION, "g5.xlarge", 1.006, 0.63378, 0.4327, offer.sku)
    doc = json.loads(ec2_item("g5.xlarge", 1.006, ri_1y=0.63378, ri_3y=0.4327))
    # The other payment options exist in the item and give different effective rates.
    partial = p.reserved_effective_hourly(doc, "1yr", purchase_option="Partial Upfront")
    assert partial == pytest.approx(round(0.63378 * 0.48, 4) + round(0.63378 * 0.48 * 8760, 0) / 8760, abs=1e-6)
    assert p.reserved_effective_hourly(doc, "1yr", offering_class="convertible") == pytest.approx(round(0.63378 * 1.15, 4))
    assert p.reserved_effective_hourly(doc, "3yr", purchase_option="All Upfront") == pytest.approx(
        round(0.4327 * 0.9 * 26280, 0) / 26280, abs=1e-6)


def test_ec2_parser_without_reserved_terms_or_with_only_other_options():
    assert p.parse_ec2_product(ec2_item("p5.48xlarge", 55.04)).ri_1y is None
    only_partial = json.loads(ec2_item("g5.xlarge", 1.006, ri_1y=0.6, full_reserved=True))
    only_partial["terms"]["Reserved"] = {k: v for k, v in only_partial["terms"]["Reserved"].items()
                                         if v["termAttributes"]["PurchaseOption"] != "No Upfront"}
    offer = p.parse_ec2_product(only_partial)
    assert offer.on_demand == 1.006 and offer.ri_1y is None and offer.ri_3y is None


@pytest.mark.parametrize("kw", [
    dict(os_="Windows", operation="RunInstances:0002"),
    dict(os_="Windows", license_="Bring your own license", operation="RunInstances:0800"),
    dict(license_="Bring your own license"),
    dict(tenancy="Dedicated"),
    dict(tenancy="Host"),
    dict(pre_sw="SQL Std", operation="RunInstances:0004"),
    dict(operation="RunInstances:0010"),  # RHEL-style operation under a Linux label
    dict(capacity="UnusedCapacityReservation"),
    dict(capacity="AllocatedCapacityReservation"),
])
def test_ec2_parser_skips_everything_but_plain_linux_shared(kw):
    assert p.parse_ec2_product(ec2_item("g4dn.xlarge", 0.526, ri_1y=0.331, **kw)) is None


def test_sagemaker_parsers():
    assert p.parse_hosting_product(hosting_item("ml.g5.2xlarge", 1.515)) == p.HostingOffer(
        REGION, "ml.g5.2xlarge", 1.515, json.loads(hosting_item("ml.g5.2xlarge", 1.515))["product"]["sku"])
    assert p.parse_hosting_product(hosting_item("ml.g5.2xlarge", 1.515, component="Training", usage_kind="Train")) is None
    assert p.parse_hosting_product(hosting_item("ml.g5.2xlarge", 1.515, component="Hosting", usage_kind="AsyncInf")) is None
    compute = [p.parse_serverless_product(i) for i in serverless_items(per_gb_second=0.00002)]
    assert [o.usd for o in compute[:4]] == pytest.approx([0.00002] * 4)  # Mem-NGB price / N, free tier skipped
    assert all(o.kind == "compute" for o in compute[:4]) and compute[4] is None  # provisioned concurrency not read
    data = [p.parse_serverless_product(i) for i in data_items(per_gb=0.016)]
    assert [(o.kind, o.usd) for o in data] == [("data-in", 0.016), ("data-out", 0.016)]
    assert p.parse_serverless_product(hosting_item("ml.g5.2xlarge", 1.5)) is None
    assert p.parse_hosting_product(ec2_item("g5.xlarge", 1.0)) is None


def test_queries_use_the_documented_filters():
    qs = p.plan_queries(["eu-west-1"], ["g5.xlarge"])
    assert [q.kind for q in qs] == ["ec2", "hosting", "serverless", "data"]
    ec2 = qs[0].params()
    assert ec2["ServiceCode"] == "AmazonEC2"
    fields = {f["Field"]: f["Value"] for f in ec2["Filters"]}
    assert fields == {"regionCode": "eu-west-1", "instanceType": "g5.xlarge", "operatingSystem": "Linux",
                      "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                      "licenseModel": "No License required"}
    assert all(f["Type"] == "TERM_MATCH" for q in qs for f in q.params()["Filters"])
    assert {f["Field"]: f["Value"] for f in qs[1].params()["Filters"]} == {
        "regionCode": "eu-west-1", "productFamily": "ML Instance", "component": "Hosting"}


# -- refresh through the CLI ----------------------------------------------------------------------------


def test_refresh_writes_a_cache_that_plan_then_uses(cache, monkeypatch):
    stub = use_stub(monkeypatch)
    out = run("prices", "refresh", "--region", REGION).output
    stub.assert_no_pending_responses()
    assert "rows refreshed" in out and "rows kept from snapshot" in out
    old = BUNDLED().ec2[(REGION, "g4dn.2xlarge")].on_demand
    assert f"g4dn.2xlarge on-demand {old:g} -> 0.8 ({(0.8 / old - 1) * 100:+.1f}%)" in out
    assert "not returned by the API, kept as before" in out and "ec2 g5.xlarge" in out
    assert (cache / "sources.toml").is_file() and not list(cache.parent.glob(".catalog.*"))

    c.load_catalog.cache_clear()
    cat = c.load_catalog()
    assert cat.origin == f"refreshed cache {cache}"
    row = cat.ec2[(REGION, "g4dn.2xlarge")]
    assert (row.on_demand, row.ri_1y, row.ri_3y) == (0.8, 0.5, 0.34)  # not Windows, BYOL, dedicated, convertible
    assert row.source.url == p.SOURCE_URL and row.source.retrieved == TODAY
    assert "No Upfront" in row.source.note and "standard" in row.source.note.lower()
    assert cat.ec2[(REGION, "p5.48xlarge")].ri_1y is None
    bundled = BUNDLED()
    kept, was = cat.ec2[(REGION, "g5.xlarge")], bundled.ec2[(REGION, "g5.xlarge")]
    assert (kept.source.key, kept.on_demand, kept.ri_1y) == (was.source.key, was.on_demand, was.ri_1y)
    assert cat.ec2[("eu-west-1", "g5.xlarge")].source.key == bundled.ec2[("eu-west-1", "g5.xlarge")].source.key
    assert cat.hosting[(REGION, "ml.g4dn.2xlarge")].hourly == 0.99
    assert (REGION, "ml.zz9.unknown") not in cat.hosting
    assert cat.hosting[(REGION, "ml.p4d.24xlarge")].source.key == bundled.hosting[(REGION, "ml.p4d.24xlarge")].source.key
    sv = cat.serverless[REGION]
    assert (sv.usd_per_gb_second, sv.usd_per_gb_processed) == (pytest.approx(0.000021), 0.017)
    assert cat.snapshot_date == TODAY

    c.load_catalog.cache_clear()
    data = json.loads(run("plan", "--mode", "reserved", "--term", "on-demand", "--instance-type", "g4dn.2xlarge", "--json").output)
    assert data["catalog"]["origin"].startswith("refreshed cache")
    items = [li for li in data["choice"]["line_items"] if li["kind"] == "ec2-instance"]
    assert data["choice"]["instance_type"] == "g4dn.2xlarge"
    assert items[0]["unit_usd"] == 0.8 and items[0]["source"].startswith("aws-price-list-ec2")

    shown = json.loads(run("prices", "show", "--json").output)
    assert shown["in_use"] == "refreshed cache" and shown["cache_dir"] == str(cache)
    us = next(r for r in shown["regions"] if r["region"] == REGION)
    assert us["rows_from_price_list_api"] == 3 + 2 + 1
    assert any(s["key"].startswith("aws-price-list-ec2") for s in shown["sources"])
    assert f"refreshed cache ({cache}); the oldest price dates from" in run("prices", "show").output

    assert "Removed" in run("prices", "clear").output
    assert not cache.exists()
    c.load_catalog.cache_clear()
    data = json.loads(run("plan", "--mode", "reserved", "--term", "on-demand", "--instance-type", "g4dn.2xlarge", "--json").output)
    assert data["catalog"]["origin"] == "bundled snapshot"
    assert [li for li in data["choice"]["line_items"] if li["kind"] == "ec2-instance"][0]["unit_usd"] == old
    assert "already using the bundled snapshot" in run("prices", "clear").output


def test_refresh_json_summary_and_plain_progress(cache, monkeypatch):
    use_stub(monkeypatch)
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", REGION, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (region,) = data["regions"]
    assert region["region"] == REGION
    assert region["rows_refreshed"] == 3 + 2 + 1 and region["rows_added"] == 0
    assert region["rows_kept_from_snapshot"] == len(region["kept"]) > 30
    changes = region["biggest_changes"]
    assert 0 < len(changes) <= 3
    assert [abs(x["change_pct"]) for x in changes] == sorted((abs(x["change_pct"]) for x in changes), reverse=True)
    old = BUNDLED().ec2[(REGION, "g4dn.2xlarge")].on_demand
    on_demand = {"item": "g4dn.2xlarge on-demand", "old": old, "new": 0.8, "change_pct": round((0.8 / old - 1) * 100, 2)}
    assert on_demand in changes or abs(on_demand["change_pct"]) <= abs(changes[-1]["change_pct"])
    assert data["source_url"] == p.SOURCE_URL and data["retrieved"] == TODAY.isoformat()
    assert "read us-east-1: EC2 prices (41 instance types) (41/44 queries)" in result.stderr  # not a TTY: plain lines on stderr


def test_no_credentials_is_one_line_exit_1_and_writes_nothing(cache, monkeypatch, tmp_path):
    from llmdeploy.aws import clients

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clients.reset()
    try:
        result = CliRunner().invoke(cli, ["prices", "refresh"])
    finally:
        clients.reset()
    assert result.exit_code == 1, result.output
    bundled = c.load_catalog_from(c.BUNDLED_DIR)
    assert result.stderr.strip() == (
        "Error: cannot read the AWS Price List API: no AWS credentials found. Configure credentials "
        f"(aws configure / AWS_PROFILE) or keep using the bundled snapshot of {bundled.snapshot_date}.")
    assert "Traceback" not in result.output
    assert not cache.parent.exists() or not list(cache.parent.iterdir())
    c.load_catalog.cache_clear()
    assert run("plan", "--mode", "reserved").exit_code == 0
    assert c.load_catalog().origin == "bundled snapshot"


@pytest.mark.parametrize("code, text", [
    ("AccessDeniedException", "access denied"),
    ("UnrecognizedClientException", "credentials were rejected"),
])
def test_rejected_credentials_are_one_line(cache, monkeypatch, code, text):
    use_stub(monkeypatch, fail_at=0, error={"service_error_code": code, "service_message": "nope", "http_status_code": 400})
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", REGION])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr and "bundled snapshot of" in result.stderr
    assert not cache.exists()


def test_endpoint_unreachable_is_one_line(cache, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    class Down:
        def get_paginator(self, name):
            raise EndpointConnectionError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com/")

    monkeypatch.setattr(p, "pricing_client", lambda: Down())
    result = CliRunner().invoke(cli, ["prices", "refresh"])
    assert result.exit_code == 1 and "cannot reach" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_interrupted_refresh_keeps_the_previous_cache(cache, monkeypatch):
    use_stub(monkeypatch)
    run("prices", "refresh", "--region", REGION)
    before = snapshot(cache)

    # 1. The API fails half-way (throttled after retries): nothing is touched.
    use_stub(monkeypatch, fail_at=20)
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", REGION])
    assert result.exit_code == 1 and "ThrottlingException" in result.stderr
    assert snapshot(cache) == before

    # 2. The process dies while the new catalog is being written: the old one stays, no debris.
    use_stub(monkeypatch)
    real = p._dump_sagemaker

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(p, "_dump_sagemaker", boom)
    with pytest.raises(KeyboardInterrupt):
        p.refresh([REGION])
    assert snapshot(cache) == before
    assert [x.name for x in cache.parent.iterdir()] == ["catalog"]

    # 3. The swap itself fails: the previous catalog is put back.
    monkeypatch.setattr(p, "_dump_sagemaker", real)
    use_stub(monkeypatch)
    real_rename = p.os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(p.os, "rename", flaky_rename)
    with pytest.raises(OSError):
        p.refresh([REGION])
    monkeypatch.setattr(p.os, "rename", real_rename)
    assert snapshot(cache) == before
    c.load_catalog.cache_clear()
    assert c.load_catalog().ec2[(REGION, "g4dn.2xlarge")].on_demand == 0.8


def test_a_later_refresh_of_one_region_keeps_an_earlier_refresh_of_another(cache, monkeypatch):
    use_stub(monkeypatch, regions=("us-west-2",))
    p.refresh(["us-west-2"])
    use_stub(monkeypatch)
    p.refresh([REGION])
    cat = c.load_catalog_from(cache)
    assert cat.serverless["us-west-2"].source.key.startswith("aws-price-list-sagemaker")
    assert cat.serverless[REGION].source.key.startswith("aws-price-list-sagemaker")
    assert cat.ec2[("us-west-2", "g4dn.2xlarge")].on_demand == 0.8
    assert ("us-west-2", "p5.48xlarge") in cat.ec2  # a type the snapshot lacked there was added


def test_unknown_region_is_a_usage_error(cache, monkeypatch):
    monkeypatch.setattr(p, "pricing_client", lambda: pytest.fail("no API call for a bad region"))
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", "us-east-9"])
    assert result.exit_code == 2 and "Did you mean 'us-east-1'" in result.output


def test_show_on_the_bundled_snapshot(cache):
    out = run("prices", "show").output
    bundled = BUNDLED()
    # The headline is the OLDEST price in use (how stale the worst figure may be), the newest beside it.
    assert f"the oldest price dates from {bundled.oldest_price_date()}, the newest from {bundled.snapshot_date}" in out
    assert bundled.ec2[(REGION, "g5.xlarge")].source.key in out and "eu-west-1" in out
    data = json.loads(run("prices", "show", "--json").output)
    assert data["in_use"] == "bundled snapshot" and not data["cache_present"]
    assert data["date"] == bundled.oldest_price_date().isoformat() and data["newest_date"] == bundled.snapshot_date.isoformat()
    assert all(r["rows_from_price_list_api"] == 0 for r in data["regions"])
    # Every price row carries its source, date and whether it is estimated.
    rows = data["rows"]
    assert len(rows) == len(c.price_rows(bundled)) and all(r["source"] and r["date"] and "estimated" in r for r in rows)
    p4d = next(r for r in rows if r["region"] == REGION and r["item"] == "ml.p4d.24xlarge")
    assert (p4d["value"], p4d["source"], p4d["estimated"]) == (25.25, "sagemaker-hosting-p4d-p5-2026-06", False)
    derived = next(r for r in rows if r["region"] == "us-west-2" and r["item"] == "ml.g5.xlarge")
    assert derived["estimated"] and derived["source"] == "sagemaker-hosting-derived"
    assert {s["key"] for s in data["sources"] if s["estimated"]} == {"sagemaker-hosting-derived"}
    listed = run("prices", "show", "--rows", "--region", "us-west-2").output.split("\nPrices:\n", 1)[1]
    assert "ml.g5.xlarge" in listed and "1.4084*" in listed and "eu-west-1" not in listed


def test_plan_never_imports_boto3():
    import subprocess
    import sys

    code = ("import sys; from llmdeploy.cli.main import main\n"
            "try:\n    main(['plan', '--mode', 'reserved'])\nexcept SystemExit:\n    pass\n"
            "import llmdeploy.prices\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bundled_prices_env_ignores_the_cache(cache, monkeypatch):
    use_stub(monkeypatch)
    p.refresh([REGION])
    monkeypatch.setenv("LLMDEPLOY_BUNDLED_PRICES", "1")
    out = run("prices", "show").output
    assert "bundled snapshot; the oldest price" in out and "LLMDEPLOY_BUNDLED_PRICES=1 ignores it" in out
    c.load_catalog.cache_clear()
    assert c.load_catalog().origin == "bundled snapshot"
