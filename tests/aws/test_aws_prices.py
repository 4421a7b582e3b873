"""`llmdeploy prices refresh` end to end, all three catalog regions, against the Price List stand-in.

The stand-in (pricelist_api.py) serves real-shape items over HTTP to llmdeploy's own boto3 ``pricing``
client: genuine EC2 items of the 2026-09-10 offer files (which carry no Reserved terms, as copied),
SageMaker items assembled from quoted fields, and generated items for the rest of the catalog.
The issue's bar: every EC2, SageMaker hosting and serverless price (GB-second and data processed) is
refreshed in all three regions, and no known price is lost.
"""

from __future__ import annotations

import datetime as dt
import json

import pricelist_api as api
import pytest
from click.testing import CliRunner

from llmdeploy import catalog as c
from llmdeploy import prices as p
from llmdeploy.cli.main import cli

TODAY = dt.date.today()
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")


@pytest.fixture
def refreshed_env(tmp_path, monkeypatch):
    from llmdeploy.aws import clients

    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("LLMDEPLOY_AWS_MAX_ATTEMPTS", "1")):
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "LLMDEPLOY_BUNDLED_PRICES"):
        monkeypatch.delenv(var, raising=False)
    clients.reset()
    c.load_catalog.cache_clear()
    yield c.user_cache_dir()
    clients.reset()
    c.load_catalog.cache_clear()


def _serve(monkeypatch, corpus):
    server = api.PriceListServer(corpus, page_size=10)
    monkeypatch.setenv("LLMDEPLOY_AWS_ENDPOINT_URL", server.url)
    return server


def test_every_price_is_refreshed_in_all_three_regions_and_none_is_lost(refreshed_env, monkeypatch):
    bundled = c.load_catalog_from(c.BUNDLED_DIR)
    with _serve(monkeypatch, api.Corpus.for_catalog(bundled)) as server:
        result = CliRunner().invoke(cli, ["prices", "refresh", "--json"])
    assert result.exit_code == 0, result.output
    summary = {r["region"]: r for r in json.loads(result.stdout)["regions"]}
    cat = c.load_catalog_from(refreshed_env)
    ec2_key, sm_key = f"aws-price-list-ec2-{TODAY}", f"aws-price-list-sagemaker-{TODAY}"

    # EC2: every row priced again; every rate known before still known, each citing where it came from.
    for (region, itype), was in bundled.ec2.items():
        now = cat.ec2[(region, itype)]
        assert now.source.key == ec2_key, (region, itype)
        for term in ("on-demand", "1y", "3y"):
            if was.hourly(term) is not None:
                assert now.hourly(term) is not None, (region, itype, term)
                assert now.term_source(term).key in (ec2_key, was.term_source(term).key)
    # Hosting and serverless (GB-second and data processed) too, and serverless is added where it was missing.
    for key, was in bundled.hosting.items():
        assert cat.hosting[key].source.key == sm_key and cat.hosting[key].hourly == was.hourly, key
    for region in REGIONS:
        sv = cat.serverless[region]
        assert sv.source.key == sm_key and sv.usd_per_gb_second == pytest.approx(0.00002) and sv.usd_per_gb_processed == 0.016
    assert set(bundled.serverless) == {"us-east-1"}

    # The genuine items' prices are the ones in the catalog now; their missing Reserved terms were kept.
    assert cat.ec2[("us-west-2", "p4d.24xlarge")].on_demand == 21.95764
    assert cat.ec2[("eu-west-1", "p4d.24xlarge")].on_demand == 23.71569
    assert cat.ec2[("eu-west-1", "g5.2xlarge")].on_demand == 1.35296
    p4d = cat.ec2[("eu-west-1", "p4d.24xlarge")]
    assert p4d.ri_3y == bundled.ec2[("eu-west-1", "p4d.24xlarge")].ri_3y and p4d.term_source("3y").key == "vantage-ec2-ri3y"
    assert cat.hosting[("eu-west-1", "ml.g4dn.4xlarge")].hourly == 1.678  # the billed eu-west-1 rate

    for region in REGIONS:
        s = summary[region]
        known = {f"ec2 {t}" for r, t in bundled.ec2 if r == region} | {f"sagemaker {t}" for r, t in bundled.hosting if r == region}
        assert {r["row"] for r in s["refreshed"]} == known | ({"serverless"} if region == "us-east-1" else set())
        assert s["kept"] == [], region  # nothing known went unpriced
        assert ("serverless" in {r["row"] for r in s["added"]}) == (region != "us-east-1")
        assert all(t["why"].endswith("carried no Reserved terms") for t in s["kept_terms"])
    assert {(t["row"], t["term"]) for t in summary["eu-west-1"]["kept_terms"]} == {
        ("ec2 g5.2xlarge", "ri_1y"), ("ec2 g5.2xlarge", "ri_3y"), ("ec2 p4d.24xlarge", "ri_1y"), ("ec2 p4d.24xlarge", "ri_3y")}

    # What was asked: 41 EC2 queries + 3 SageMaker ones per region, each with only catalog-shaped filters,
    # so no Capacity Block, Windows, BYOL, SQL, dedicated or reservation product was ever returned.
    first_pages = [r for r in server.requests if "NextToken" not in r]
    assert len(first_pages) == 3 * (len(bundled.instances) + 3)
    never = {"5Q7AP3RH7KTVUNCJ", "HXGQ45BFM9J2FJ3F", "AWJMJ73C9RDQFD5N", "8AW2DYRV3M9N5RRZ", "EHFDZFP2EH9BD4DX",
             "AN9HBCS6XCP64Z83", "E9RWRGDUV5X76FUB"}
    assert not never & server.returned_skus()
    # The AsyncInf item (its component is not quoted; set to Hosting, the worst case) does come back, and the
    # parser keeps its USE1-AsyncInf: meter out of the hosting rows (its price equals the Host: one anyway).
    assert "RECONSTRUCTED-H2" in server.returned_skus()
    assert any(r.get("NextToken") for r in server.requests), "answers were paginated"


def test_a_query_without_marketoption_would_get_the_free_capacity_block_p5(refreshed_env, monkeypatch):
    """The stand-in answers like the API: drop marketoption and operation from the p5 query and the
    $0.00 Capacity Block product comes back with the on-demand one (the parser would still drop it)."""
    import boto3

    (query,) = [q for q in p.plan_queries(["us-east-1"], ["p5.48xlarge"]) if q.kind == "ec2"]
    loose = [f for f in query.params()["Filters"] if f["Field"] not in ("marketoption", "operation")]
    with _serve(monkeypatch, api.Corpus.genuine()) as server:
        client = boto3.client("pricing", region_name="us-east-1", endpoint_url=server.url)
        strict = [i for page in client.get_paginator("get_products").paginate(**query.params()) for i in page["PriceList"]]
        wide = [i for page in client.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=loose)
                for i in page["PriceList"]]
    assert [json.loads(i)["product"]["sku"] for i in strict] == ["3D4V8UAYEMB38GU2"]
    assert sorted(json.loads(i)["product"]["sku"] for i in wide) == ["3D4V8UAYEMB38GU2", "5Q7AP3RH7KTVUNCJ"]
    assert [o.on_demand for o in map(p.parse_ec2_product, wide) if o] == [55.04]


def test_an_empty_answer_keeps_every_known_price_and_says_why(refreshed_env, monkeypatch):
    bundled = c.load_catalog_from(c.BUNDLED_DIR)
    corpus = api.Corpus.for_catalog(bundled).without(lambda d: d["product"]["attributes"].get("regionCode") == "eu-west-1")
    with _serve(monkeypatch, corpus):
        result = CliRunner().invoke(cli, ["prices", "refresh", "--region", "eu-west-1"])
    assert result.exit_code == 0, result.output
    assert "eu-west-1: the API did not price these, so they keep their previous value:" in result.output
    assert "ec2 g4dn.12xlarge: GetProducts returned no product for it (kept from vantage-ec2-ri3y)" in result.output
    cat = c.load_catalog_from(refreshed_env)
    for key, was in bundled.ec2.items():
        assert (cat.ec2[key].on_demand, cat.ec2[key].ri_1y, cat.ec2[key].ri_3y, cat.ec2[key].source.key) == (
            was.on_demand, was.ri_1y, was.ri_3y, was.source.key)
    assert {k: v.hourly for k, v in cat.hosting.items()} == {k: v.hourly for k, v in bundled.hosting.items()}
    assert "eu-west-1" not in cat.serverless  # none known, none read: not invented
