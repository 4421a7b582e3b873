"""`llmdeploy prices` and llmdeploy.prices: Price List parsing, refresh into the user cache, show, clear.

Every parser test reads genuine Price List items (tests/aws/pricelist/*.json, each file with its source
and date; the SageMaker one lists which fields are quoted and which reconstructed). Every refresh runs
a real boto3 ``pricing`` client against the HTTP stand-in of tests/aws/pricelist_api.py, which serves
those items (and items generated from them for the rest of the catalog) with the real API's filter,
pagination and error behaviour. moto does not implement the pricing service.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdeploy import catalog as c
from llmdeploy import costs
from llmdeploy import prices as p
from llmdeploy.cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))
import pricelist_api as api  # noqa: E402

REGION = "us-east-1"
TODAY = dt.date.today()


def BUNDLED() -> c.Catalog:
    return c.load_catalog_from(c.BUNDLED_DIR)


def item(name: str, sku: str) -> str:
    """One fixture item as the API sends it: a JSON string."""
    return json.dumps(api.by_sku(name, sku))


EC2, RESERVED, SM = api.EC2_FILE, api.RESERVED_FILE, api.SAGEMAKER_FILE


# -- usage types -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parts", [
    ("BoxUsage:p5.48xlarge", ("", "BoxUsage", "p5.48xlarge")),  # EC2 us-east-1: no prefix
    ("USW2-BoxUsage:g5.2xlarge", ("USW2", "BoxUsage", "g5.2xlarge")),
    ("EU-BoxUsage:p4d.24xlarge", ("EU", "BoxUsage", "p4d.24xlarge")),  # eu-west-1: the legacy EU-, not EUW1-
    ("APN1-BoxUsage:t2.micro", ("APN1", "BoxUsage", "t2.micro")),
    ("DedicatedUsage:m5.xlarge", ("", "DedicatedUsage", "m5.xlarge")),
    ("UnusedBox:m5.xlarge", ("", "UnusedBox", "m5.xlarge")),
    ("USE1-Host:ml.g6e.2xlarge", ("USE1", "Host", "ml.g6e.2xlarge")),
    ("USE1-AsyncInf:ml.g6e.2xlarge", ("USE1", "AsyncInf", "ml.g6e.2xlarge")),
    ("USE1-Hst:Data-Bytes-In", ("USE1", "Hst", "Data-Bytes-In")),  # the form the old parser missed
    ("USW2-Hst:Data-Bytes-Out", ("USW2", "Hst", "Data-Bytes-Out")),
    ("USE1-ServerlessInf:Mem-2GB", ("USE1", "ServerlessInf", "Mem-2GB")),
])
def test_usage_types_parse_as_aws_writes_them(text, parts):
    usage = p.parse_usage_type(text)
    assert (usage.prefix, usage.kind, usage.detail) == parts and str(usage) == text


@pytest.mark.parametrize("text", ["", "EU-MI-AdvInstances-Hrs", "USE1-Data-Bytes-In", "Hst:"])
def test_strings_without_kind_and_detail_are_not_usage_types(text):
    # "USE1-Data-Bytes-In" is the shape the old tests invented; AWS writes USE1-Hst:Data-Bytes-In.
    assert p.parse_usage_type(text) is None


def test_every_fixture_usage_type_parses_and_its_prefix_is_the_documented_one():
    for name in (EC2, RESERVED, SM):
        for doc in api.items(name):
            a = doc["product"]["attributes"]
            usage = p.parse_usage_type(a["usagetype"])
            assert usage is not None and str(usage) == a["usagetype"], a["usagetype"]
            expected = p.USAGE_PREFIXES.get(doc["serviceCode"], {}).get(a.get("regionCode"))  # the 2018 item predates regionCode
            if expected is not None:
                assert usage.prefix == expected, (a["regionCode"], a["usagetype"])


# -- parsing genuine items -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sku, expected", [
    ("7TVXMFHQR6U7W5CV", ("us-east-1", "g4dn.xlarge", 0.526)),
    ("3D4V8UAYEMB38GU2", ("us-east-1", "p5.48xlarge", 55.04)),
    ("5G4TA8Z4MUKE6MJB", ("us-east-1", "m5.xlarge", 0.192)),
    ("GY47PZ4E422T8DWN", ("us-west-2", "g5.2xlarge", 1.212)),
    ("DHAMWQPURBTZBUA6", ("us-west-2", "p4d.24xlarge", 21.95764)),
    ("CQ3RZ8A8BQKVHSKT", ("eu-west-1", "p4d.24xlarge", 23.71569)),
    ("P2KE3JYU9KQ2RD7B", ("eu-west-1", "g5.2xlarge", 1.35296)),
    ("5Q7AP3RH7KTVUNCJ", None),  # Capacity Block: marketoption CapacityBlock, RunInstances:CB, $0.00
    ("HXGQ45BFM9J2FJ3F", None),  # Windows
    ("AWJMJ73C9RDQFD5N", None),  # Windows without licenses, at the Linux rate
    ("8AW2DYRV3M9N5RRZ", None),  # Windows BYOL, at the Linux rate
    ("EHFDZFP2EH9BD4DX", None),  # Linux with SQL Std
    ("AN9HBCS6XCP64Z83", None),  # dedicated tenancy
    ("E9RWRGDUV5X76FUB", None),  # unused capacity reservation, at the Linux rate
])
def test_ec2_parser_on_the_genuine_offer_items(sku, expected):
    offer = p.parse_ec2_product(item(EC2, sku))
    if expected is None:
        assert offer is None
    else:
        assert (offer.region, offer.instance_type, offer.on_demand) == expected
        assert offer.sku == sku and offer.reserved_terms == 0 and offer.ri_1y is None  # that corpus has no Reserved terms


def test_ec2_parser_without_any_filter_attribute_it_relies_on():
    # A filter the API ignored must not let a wrong product through: each attribute is checked again.
    nominal = api.by_sku(EC2, "7TVXMFHQR6U7W5CV")
    for key in p.EC2_REQUIRED:
        doc = copy.deepcopy(nominal)
        doc["product"]["attributes"][key] = "something else"
        assert p.parse_ec2_product(doc) is None, key
    doc = copy.deepcopy(nominal)
    doc["product"]["attributes"]["usagetype"] = "BoxUsage:g5.xlarge"  # usage type of another type
    assert p.parse_ec2_product(doc) is None


def test_reserved_terms_of_the_genuine_item_pick_exactly_standard_no_upfront():
    doc = api.by_sku(RESERVED, "9NSP3EV3G593P35X")  # t2.micro, all 12 Reserved terms
    assert p.reserved_effective_hourly(doc, "1yr") == 0.0103
    assert p.reserved_effective_hourly(doc, "3yr") == 0.0075
    # The other options are there and price differently: upfront fee (Quantity) / term hours + hourly.
    assert p.reserved_effective_hourly(doc, "1yr", purchase_option="Partial Upfront") == round(43 / 8760 + 0.0049, 6)
    assert p.reserved_effective_hourly(doc, "3yr", purchase_option="All Upfront") == round(172 / 26280, 6)
    assert p.reserved_effective_hourly(doc, "1yr", offering_class="convertible") == 0.0118
    assert p.reserved_effective_hourly(doc, "3yr", offering_class="convertible", purchase_option="Partial Upfront") == round(
        105 / 26280 + 0.004, 6)
    # That recording's OnDemand price reads "v000000": not a price, so the item gives no offer at all.
    assert p.on_demand_hourly(doc) is None and p.parse_ec2_product(doc) is None
    # With a numeric price, and the regionCode attribute that AWS added after 2018 (today's items carry it;
    # the parser needs it, a location name is not a region code), it is a t2.micro offer with both RI rates.
    fixed = copy.deepcopy(doc)
    assert "regionCode" not in fixed["product"]["attributes"] and p.parse_ec2_product(fixed) is None
    fixed["product"]["attributes"]["regionCode"] = "ap-northeast-1"
    next(iter(next(iter(fixed["terms"]["OnDemand"].values()))["priceDimensions"].values()))["pricePerUnit"]["USD"] = "0.0152"
    offer = p.parse_ec2_product(fixed)
    assert (offer.instance_type, offer.on_demand, offer.ri_1y, offer.ri_3y, offer.reserved_terms) == (
        "t2.micro", 0.0152, 0.0103, 0.0075, 12)


def test_sagemaker_parsers_on_the_quoted_items():
    hosting = {s: p.parse_hosting_product(item(SM, s)) for s in ("RECONSTRUCTED-H1", "RECONSTRUCTED-H2",
                                                                  "RECONSTRUCTED-H3", "RECONSTRUCTED-H4")}
    assert (hosting["RECONSTRUCTED-H1"].region, hosting["RECONSTRUCTED-H1"].instance_type, hosting["RECONSTRUCTED-H1"].hourly) == (
        "us-east-1", "ml.g6e.2xlarge", 2.8026)
    assert hosting["RECONSTRUCTED-H2"] is None  # USE1-AsyncInf: is not a real-time hosting meter
    assert (hosting["RECONSTRUCTED-H3"].region, hosting["RECONSTRUCTED-H3"].hourly) == ("eu-west-1", 1.678)
    assert hosting["RECONSTRUCTED-H4"].instance_type == "ml.g5.12xlarge"
    sv = {s: p.parse_serverless_product(item(SM, s)) for s in ("RECONSTRUCTED-S1", "RECONSTRUCTED-S2", "RECONSTRUCTED-D1",
                                                               "RECONSTRUCTED-D2", "RECONSTRUCTED-D3", "RECONSTRUCTED-D4")}
    assert [(o.kind, o.usd) for o in sv.values()] == [
        ("compute", pytest.approx(0.00002)), ("compute", pytest.approx(0.00002)),  # Mem-2GB $0.00004/s / 2, Mem-1GB
        ("data-in", 0.016), ("data-out", 0.016), ("data-in", 0.016), ("data-out", 0.016)]
    assert [o.region for o in sv.values()][-2:] == ["eu-west-1", "us-west-2"]
    # Each parser reads only its own meters.
    assert p.parse_serverless_product(item(SM, "RECONSTRUCTED-H1")) is None
    assert p.parse_hosting_product(item(SM, "RECONSTRUCTED-S1")) is None
    assert p.parse_ec2_product(item(SM, "RECONSTRUCTED-H1")) is None
    assert p.parse_hosting_product(item(EC2, "7TVXMFHQR6U7W5CV")) is None


def test_serverless_zero_priced_range_and_non_memory_sizes_are_skipped():
    doc = api.by_sku(SM, "RECONSTRUCTED-S1")
    dims = next(iter(doc["terms"]["OnDemand"].values()))["priceDimensions"]
    (dim,) = dims.values()
    dims["FREE"] = dict(dim, pricePerUnit={"USD": "0.0000000000"}, endRange="150000")  # a free-tier range, if listed so
    assert p.parse_serverless_product(doc).usd == pytest.approx(0.00002)
    for detail in ("PC-Mem-2GB", "Mem-2GB-Provisioned", "Mem-GB"):
        doc["product"]["attributes"]["usagetype"] = f"USE1-ServerlessInf:{detail}"
        assert p.parse_serverless_product(doc) is None, detail


# -- the queries ---------------------------------------------------------------------------------------------


def _pricing_model():
    import botocore

    path = Path(botocore.__file__).parent / "data" / "pricing" / "2017-10-15" / "service-2.json.gz"
    with gzip.open(path) as fh:
        return json.load(fh)


def test_queries_are_valid_get_products_requests_per_botocores_model():
    from botocore.model import ServiceModel
    from botocore.validate import ParamValidator

    model = ServiceModel(_pricing_model())
    shape = model.operation_model("GetProducts").input_shape
    qs = p.plan_queries(["us-east-1", "us-west-2", "eu-west-1"], sorted(BUNDLED().instances))
    for q in qs:
        report = ParamValidator().validate(q.params(), shape)
        assert not report.has_errors(), report.generate_report()
        assert len(q.params()["Filters"]) <= shape.members["Filters"].metadata["max"]


def test_queries_ask_only_for_what_the_catalog_holds():
    qs = p.plan_queries(["eu-west-1"], ["g5.xlarge"])
    assert [q.kind for q in qs] == ["ec2", "hosting", "serverless", "data"]
    ec2 = {f["Field"]: f["Value"] for f in qs[0].params()["Filters"]}
    assert ec2 == {"regionCode": "eu-west-1", "instanceType": "g5.xlarge", "operatingSystem": "Linux", "tenancy": "Shared",
                   "preInstalledSw": "NA", "capacitystatus": "Used", "licenseModel": "No License required",
                   "marketoption": "OnDemand", "operation": "RunInstances"}
    # Every field is an attribute the genuine items carry, with the value the nominal product carries...
    names = api.attribute_names()
    for q in qs:
        assert {f["Field"] for f in q.params()["Filters"]} <= names[q.service_code], q.kind
    nominal = api.by_sku(api.EC2_FILE, "7TVXMFHQR6U7W5CV")["product"]["attributes"]
    assert all(nominal[k] == v for k, v in ec2.items() if k not in ("regionCode", "instanceType"))
    # ...so the on-demand p5 matches and its Capacity Block twin (and Windows, dedicated, reservations) does not.
    us = {f["Field"]: f["Value"] for f in p.plan_queries([REGION], ["p5.48xlarge"])[0].params()["Filters"]}
    filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in us.items()]
    assert [d["product"]["sku"] for d in api.Corpus.genuine().query("AmazonEC2", filters)] == ["3D4V8UAYEMB38GU2"]
    m5 = [dict(f, Value="m5.xlarge") if f["Field"] == "instanceType" else f for f in filters]
    assert [d["product"]["sku"] for d in api.Corpus.genuine().query("AmazonEC2", m5)] == ["5G4TA8Z4MUKE6MJB"]
    sm = {q.kind: {f["Field"]: f["Value"] for f in q.params()["Filters"]} for q in qs[1:]}
    h1 = api.by_sku(SM, "RECONSTRUCTED-H1")
    assert h1["product"]["productFamily"] == sm["hosting"]["productFamily"]
    assert h1["product"]["attributes"]["component"] == sm["hosting"]["component"]
    assert api.by_sku(SM, "RECONSTRUCTED-S1")["product"]["productFamily"] == sm["serverless"]["productFamily"]
    assert api.by_sku(SM, "RECONSTRUCTED-D1")["product"]["attributes"]["operation"] == sm["data"]["operation"]


# -- merging offers into the catalog ------------------------------------------------------------------------


def _offer(region, itype, on_demand, ri_1y=None, ri_3y=None, reserved_terms=0):
    return p.Ec2Offer(region, itype, on_demand, ri_1y, ri_3y, "SKU1", f"BoxUsage:{itype}", reserved_terms)


def test_a_missing_reserved_term_keeps_the_known_rate_with_its_own_source(tmp_path):
    bundled = BUNDLED()
    was = bundled.ec2[(REGION, "p5.48xlarge")]  # no 1-year standard RI in the snapshot, a 3-year one
    assert was.ri_1y is None and was.ri_3y is not None
    offers = {f"ec2:{REGION}:p5.48xlarge": [_offer(REGION, "p5.48xlarge", 55.04, reserved_terms=4)]}
    sources, ec2, sm, (s,) = p.build_price_tables(c.BUNDLED_DIR, [REGION], offers, TODAY,
                                                  seen={f"ec2:{REGION}:p5.48xlarge": 1})
    row = ec2[REGION]["p5.48xlarge"]
    assert row["on_demand"] == 55.04 and row["source"] == f"aws-price-list-ec2-{TODAY}"
    assert row["ri_3y"] == was.ri_3y and row["ri_3y_source"] == was.source.key
    assert "ri_1y" not in row and "ri_1y_source" not in row  # nothing known, nothing kept
    (kept,) = s.kept_terms
    assert (kept.row, kept.term, kept.value, kept.source) == ("ec2 p5.48xlarge", "ri_3y", was.ri_3y, was.source.key)
    assert "none of the 4 Reserved terms of SKU1 is LeaseContractLength 3yr, OfferingClass standard" in kept.why
    # The written catalog loads, and a 3-year plan line cites the source the rate came from.
    p.write_catalog_dir(tmp_path / "cat", c.BUNDLED_DIR, sources, ec2, sm)
    cat = c.load_catalog_from(tmp_path / "cat")
    price = cat.ec2[(REGION, "p5.48xlarge")]
    assert price.term_source("3y").key == was.source.key and price.term_source("on-demand").key == row["source"]
    assert costs.ec2_instances(cat, REGION, "p5.48xlarge", 1, "3y").source == was.source.key
    assert costs.ec2_instances(cat, REGION, "p5.48xlarge", 1, "on-demand").source == row["source"]


@pytest.mark.parametrize("row, message", [
    ('{ on_demand = 1.0, ri_3y = 0.5, source = "vantage-ec2-2026-08", ri_3y_source = "no-such-source" }',
     "ec2.us-east-1.g5.xlarge.ri_3y names source 'no-such-source'"),
    ('{ on_demand = 1.0, source = "vantage-ec2-2026-08", ri_1y_source = "vantage-ec2-ri3y" }', "has ri_1y_source but no ri_1y"),
])
def test_a_kept_term_source_must_name_a_source_and_a_price(tmp_path, row, message):
    import shutil

    shutil.copytree(c.BUNDLED_DIR, tmp_path / "cat")
    path = tmp_path / "cat" / "ec2_prices.toml"
    text = path.read_text()
    start = text.index('"g5.xlarge" = {', text.index('[ec2."us-east-1"]'))
    path.write_text(text[:start] + f'"g5.xlarge" = {row}' + text[text.index("\n", start):])
    with pytest.raises(c.ConfigError, match=message):
        c.load_catalog_from(tmp_path / "cat")


def test_rows_the_api_does_not_price_are_kept_and_say_why():
    bundled = BUNDLED()
    offers = {"serverless:us-west-2": [p.ServerlessOffer("us-west-2", "compute", 0.00002)],
              "serverless:us-east-1": [p.ServerlessOffer(REGION, "data-in", 0.02)]}
    seen = {f"ec2:{REGION}:g5.xlarge": 0, f"ec2:{REGION}:g6.xlarge": 3, f"hosting:{REGION}": 7,
            "serverless:us-east-1": 1, "hosting:us-west-2": 0, "serverless:us-west-2": 1}
    _, ec2, sm, (east, west) = p.build_price_tables(c.BUNDLED_DIR, [REGION, "us-west-2"], offers, TODAY, seen=seen,
                                                    instance_types=["g5.xlarge", "g6.xlarge"])
    kept = {k.row: k for k in east.kept}
    assert kept["ec2 g5.xlarge"].why == "GetProducts returned no product for it"
    assert kept["ec2 g5.xlarge"].source == bundled.ec2[(REGION, "g5.xlarge")].source.key
    assert kept["ec2 g6.xlarge"].why.startswith("none of the 3 products GetProducts returned")
    assert "no Host:ml.g5.xlarge product among the 7" in kept["sagemaker ml.g5.xlarge"].why
    assert kept["ec2 p5.48xlarge"].why == "not queried in this refresh"
    # Serverless: a data rate without a compute rate keeps the whole known row; in us-west-2 there is none to keep.
    assert kept["serverless"].why.startswith("no ServerlessInf:Mem-<N>GB compute price among the 1 products")
    assert sm["serverless"][REGION] == {"usd_per_gb_second": 0.00002, "usd_per_gb_processed": 0.016,
                                        "source": "sagemaker-serverless-pricing"}
    assert "us-west-2" not in sm["serverless"]
    assert [(r.row, r.why.split(" among")[0]) for r in west.not_priced if r.row == "serverless"] == [
        ("serverless", "no Hst:Data-Bytes-In/Out data-processed price")]
    # Nothing known was dropped anywhere.
    assert {(r, t) for r, rows in ec2.items() for t in rows} == set(bundled.ec2)
    assert not east.refreshed and not east.added and not west.refreshed


# -- refresh through the CLI, against the HTTP stand-in --------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMDEPLOY_BUNDLED_PRICES", raising=False)
    for var in ("LLMDEPLOY_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "LLMDEPLOY_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    c.load_catalog.cache_clear()
    yield c.user_cache_dir()
    c.load_catalog.cache_clear()


NEW_G4DN_2X = dict(on_demand=0.8, ri_1y=0.5, ri_3y=0.34)  # distinct from the bundled prices


@pytest.fixture
def price_api(monkeypatch):
    """The stand-in Price List API serving the whole catalog (g4dn.2xlarge in us-east-1 at new prices),
    reached by llmdeploy's own pricing client through LLMDEPLOY_AWS_ENDPOINT_URL."""
    from llmdeploy.aws import clients

    extra = [api.ec2_item(REGION, "g4dn.2xlarge", **NEW_G4DN_2X)]
    with api.PriceListServer(api.Corpus.for_catalog(BUNDLED(), extra=extra), page_size=7) as server:
        monkeypatch.setenv("LLMDEPLOY_AWS_ENDPOINT_URL", server.url)
        for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                           ("LLMDEPLOY_AWS_MAX_ATTEMPTS", "1")):
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        clients.reset()
        yield server
        clients.reset()


def run(*args, code=0):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def snapshot(directory):
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir())}


def test_refresh_writes_a_cache_that_plan_then_uses(cache, price_api):
    out = run("prices", "refresh", "--region", REGION).output
    assert "rows refreshed" in out and "RI terms kept" in out
    old = BUNDLED().ec2[(REGION, "g4dn.2xlarge")].on_demand
    assert f"g4dn.2xlarge on-demand {old:g} -> 0.8 ({(0.8 / old - 1) * 100:+.1f}%)" in out
    # g4dn.xlarge is priced by the genuine 2026-09-10 item, which carries no Reserved terms: kept, and said so.
    assert "ec2 g4dn.xlarge 1-year RI kept at 0.331 (vantage-ec2-ri3y): the product (7TVXMFHQR6U7W5CV) carried no Reserved terms" in out
    assert (cache / "sources.toml").is_file() and not list(cache.parent.glob(".catalog.*"))
    assert "5Q7AP3RH7KTVUNCJ" not in price_api.returned_skus(), "the Capacity Block product is never asked for"

    c.load_catalog.cache_clear()
    cat = c.load_catalog()
    assert cat.origin == f"refreshed cache {cache}"
    row = cat.ec2[(REGION, "g4dn.2xlarge")]
    assert (row.on_demand, row.ri_1y, row.ri_3y) == (0.8, 0.5, 0.34)  # not Partial/All Upfront, not convertible
    assert row.source.url == p.SOURCE_URL and row.source.retrieved == TODAY
    assert "No Upfront" in row.source.note and "standard" in row.source.note.lower()
    assert cat.ec2[(REGION, "m5.xlarge")].on_demand == 0.192  # added from the genuine item
    assert cat.ec2[(REGION, "p5.48xlarge")].on_demand == 55.04
    bundled = BUNDLED()
    assert cat.ec2[("eu-west-1", "g5.xlarge")].source.key == bundled.ec2[("eu-west-1", "g5.xlarge")].source.key
    assert cat.hosting[(REGION, "ml.g6e.2xlarge")].hourly == 2.8026
    sv = cat.serverless[REGION]
    assert (sv.usd_per_gb_second, sv.usd_per_gb_processed) == (pytest.approx(0.00002), 0.016)
    assert sv.source.key == f"aws-price-list-sagemaker-{TODAY}"
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
    assert us["rows_from_price_list_api"] == us["ec2_rows"] + us["sagemaker_hosting_rows"] + 1
    keys = {s["key"] for s in shown["sources"]}
    assert f"aws-price-list-ec2-{TODAY}" in keys and "vantage-ec2-ri3y" in keys  # a kept term's source is listed
    assert f"refreshed cache ({cache}); the oldest price dates from" in run("prices", "show").output

    assert "Removed" in run("prices", "clear").output
    assert not cache.exists()
    c.load_catalog.cache_clear()
    data = json.loads(run("plan", "--mode", "reserved", "--term", "on-demand", "--instance-type", "g4dn.2xlarge", "--json").output)
    assert data["catalog"]["origin"] == "bundled snapshot"
    assert [li for li in data["choice"]["line_items"] if li["kind"] == "ec2-instance"][0]["unit_usd"] == old
    assert "already using the bundled snapshot" in run("prices", "clear").output


def test_refresh_json_summary_lists_every_row_and_why(cache, price_api):
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", REGION, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (region,) = data["regions"]
    bundled = BUNDLED()
    known = {f"ec2 {t}" for r, t in bundled.ec2 if r == REGION} | {f"sagemaker {t}" for r, t in bundled.hosting if r == REGION}
    known.add("serverless")
    assert {r["row"] for r in region["refreshed"]} == known  # every known price was priced again
    assert [r["row"] for r in region["added"]] == ["ec2 m5.xlarge"]
    assert region["added"][0]["why"].startswith("SKU 5G4TA8Z4MUKE6MJB (BoxUsage:m5.xlarge)")
    assert region["kept"] == [] and region["rows_kept"] == 0
    assert (region["rows_refreshed"], region["rows_added"], region["terms_kept"]) == (len(known), 1, len(region["kept_terms"]))
    assert {(t["row"], t["term"]) for t in region["kept_terms"]} == {
        ("ec2 g4dn.xlarge", "ri_1y"), ("ec2 g4dn.xlarge", "ri_3y"), ("ec2 p5.48xlarge", "ri_3y")}
    assert all(t["source"] == "vantage-ec2-ri3y" and "carried no Reserved terms" in t["why"] for t in region["kept_terms"])
    by_row = {r["row"]: r for r in region["refreshed"]}
    assert by_row["ec2 p5.48xlarge"]["why"] == "SKU 3D4V8UAYEMB38GU2 (BoxUsage:p5.48xlarge)"
    assert by_row["sagemaker ml.g6e.2xlarge"]["why"] == "SKU RECONSTRUCTED-H1 (USE1-Host:ml.g6e.2xlarge)"
    assert {r["row"] for r in region["not_priced"]} >= {"ec2 c5.xlarge", "sagemaker ml.p3.8xlarge"}
    old = bundled.ec2[(REGION, "g4dn.2xlarge")].on_demand
    on_demand = {"item": "g4dn.2xlarge on-demand", "old": old, "new": 0.8, "change_pct": round((0.8 / old - 1) * 100, 2)}
    assert on_demand in region["biggest_changes"]
    assert data["source_url"] == p.SOURCE_URL and data["retrieved"] == TODAY.isoformat()
    assert data["queries"] == len(price_api.requests) - sum(1 for r in price_api.requests if r.get("NextToken"))
    assert "read us-east-1: EC2 prices (41 instance types) (41/44 queries)" in result.stderr  # not a TTY: plain lines


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
def test_rejected_credentials_are_one_line(cache, price_api, code, text):
    price_api.fail_at = (0, code, "nope")
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


def test_interrupted_refresh_keeps_the_previous_cache(cache, price_api, monkeypatch):
    run("prices", "refresh", "--region", REGION)
    before = snapshot(cache)

    # 1. The API fails half-way (throttled after retries): nothing is touched.
    price_api.fail_at = (len(price_api.requests) + 20, "ThrottlingException", "Rate exceeded")
    result = CliRunner().invoke(cli, ["prices", "refresh", "--region", REGION])
    assert result.exit_code == 1 and "ThrottlingException" in result.stderr
    assert snapshot(cache) == before
    price_api.fail_at = None

    # 2. The process dies while the new catalog is being written: the old one stays, no debris.
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


def test_a_later_refresh_keeps_what_an_earlier_one_read(cache, price_api):
    p.refresh(["us-west-2"])
    # Now the API prices nothing in us-east-1 but g4dn.2xlarge; the earlier us-west-2 rows stay, and a
    # us-east-1 row an earlier refresh read is the known price a later, emptier answer keeps.
    p.refresh([REGION])
    price_api.corpus = price_api.corpus.without(
        lambda d: d["product"]["attributes"].get("regionCode") == REGION and d["product"]["sku"] != api._sku("ec2", REGION, "g4dn.2xlarge"))
    result = p.refresh([REGION])
    cat = c.load_catalog_from(cache)
    assert cat.serverless["us-west-2"].source.key.startswith("aws-price-list-sagemaker")
    assert cat.ec2[("us-west-2", "g5.2xlarge")].on_demand == 1.212  # the genuine us-west-2 item
    assert cat.ec2[(REGION, "m5.xlarge")].on_demand == 0.192  # read by the second refresh, kept by the third
    assert cat.ec2[(REGION, "m5.xlarge")].source.key.startswith("aws-price-list-ec2")
    (s,) = result.regions
    assert [r.row for r in s.refreshed] == ["ec2 g4dn.2xlarge"]
    assert {r.row for r in s.kept} >= {"ec2 m5.xlarge", "ec2 p5.48xlarge", "serverless", "sagemaker ml.g6e.2xlarge"}
    assert all(r.why in ("GetProducts returned no product for it",) for r in s.kept if r.row.startswith("ec2 "))


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

    code = ("import sys; from llmdeploy.cli.main import main\n"
            "try:\n    main(['plan', '--mode', 'reserved'])\nexcept SystemExit:\n    pass\n"
            "import llmdeploy.prices\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bundled_prices_env_ignores_the_cache(cache, price_api, monkeypatch):
    p.refresh([REGION])
    monkeypatch.setenv("LLMDEPLOY_BUNDLED_PRICES", "1")
    out = run("prices", "show").output
    assert "bundled snapshot; the oldest price" in out and "LLMDEPLOY_BUNDLED_PRICES=1 ignores it" in out
    c.load_catalog.cache_clear()
    assert c.load_catalog().origin == "bundled snapshot"


# -- which AWS errors mean "fix your credentials" (llmdeploy.aws.clients, shared by every AWS command) ----------


@pytest.mark.parametrize("code", ["ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "AuthFailure",
                                  "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidSignatureException",
                                  "MissingAuthenticationToken", "IncompleteSignature", "RequestExpired", "InvalidAccessKeyId"])
def test_rejected_or_expired_credentials_get_the_credentials_hint_everywhere(code):
    from botocore.exceptions import ClientError

    from llmdeploy.aws import clients

    exc = ClientError({"Error": {"Code": code, "Message": "nope"}}, "DescribeInstances")
    assert clients.is_credentials_problem(exc)
    assert clients.cloud_error(exc, "listing instances").hint == "Check your AWS credentials (aws sts get-caller-identity)."
    assert "credentials were rejected" in str(p._cloud_error(exc, dt.date(2026, 1, 1)))


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException", "UnauthorizedOperation"])
def test_a_missing_permission_is_not_a_credentials_problem(code):
    from botocore.exceptions import ClientError

    from llmdeploy.aws import clients

    exc = ClientError({"Error": {"Code": code, "Message": "not authorized"}}, "GetProducts")
    assert not clients.is_credentials_problem(exc) and clients.cloud_error(exc, "reading prices").hint is None
    assert "access denied (the credentials need pricing:GetProducts)" in str(p._cloud_error(exc, dt.date(2026, 1, 1)))


def test_no_credentials_at_all_is_a_credentials_problem():
    from botocore.exceptions import NoCredentialsError

    from llmdeploy.aws import clients

    assert clients.is_credentials_problem(NoCredentialsError())
