"""A stand-in for the AWS Price List Query API (``GetProducts``), served over real HTTP on 127.0.0.1.

moto does not implement the pricing service, so ``llmdeploy prices refresh`` is tested against this: a
real boto3 ``pricing`` client (LLMDEPLOY_AWS_ENDPOINT_URL pointed here) sends real requests, botocore
validates their parameters against its ``pricing`` service model and parses the answers.

What it mirrors, and what it was checked against:
- the wire protocol of botocore's model ``pricing/2017-10-15/service-2.json`` (protocol json 1.1,
  targetPrefix AWSPriceListService): ``POST /`` with ``X-Amz-Target: AWSPriceListService.GetProducts`` and a
  body ``{ServiceCode, Filters, FormatVersion?, NextToken?, MaxResults?}``; the answer
  ``{FormatVersion: "aws_v1", PriceList: [...], NextToken?}`` where every PriceList element is a JSON
  document *encoded as a string*, as the real API sends it; errors as ``{"__type", "message"}`` + HTTP 400.
- the filter semantics the model documents: "only products that match all filters are returned";
  TERM_MATCH / EQUALS match when the product has the attribute (or ``productFamily`` / ``ServiceCode``)
  with exactly that value. A product without the attribute never matches (so a filter on a misspelt
  attribute returns nothing, as the real API does). CONTAINS / ANY_OF / NONE_OF are refused: nothing here
  uses them.
- pagination: ``MaxResults`` (1..100 in the model) or the server's ``page_size``, an opaque NextToken.

The products it serves are a :class:`Corpus`: the genuine items in ``pricelist/*.json`` (each file says
where it was copied from and what, if anything, was reconstructed) plus, for every catalog row those do
not cover, an item generated from one of them (same attributes, term codes and dimension shapes; the
instance type, region, usage type prefix, SKU and price changed). The generated prices are the bundled
catalog's own, so a refresh against the full corpus changes only what the genuine items price differently.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "pricelist"
TARGET = "AWSPriceListService.GetProducts"
LOCATIONS = {"us-east-1": "US East (N. Virginia)", "us-west-2": "US West (Oregon)", "eu-west-1": "EU (Ireland)"}


def fixture(name: str) -> dict:
    """One fixture file: {source, copied_from, retrieved, reconstructed, items: [{note, item}]}."""
    return json.loads((FIXTURES / name).read_text())


def items(name: str) -> list[dict]:
    return [copy.deepcopy(e["item"]) for e in fixture(name)["items"]]


def by_sku(name: str, sku: str) -> dict:
    (found,) = [i for i in items(name) if i["product"]["sku"] == sku]
    return found


EC2_FILE = "ec2-offer-2026-09-10.json"
RESERVED_FILE = "ec2-reserved-t2-micro-2018.json"
SAGEMAKER_FILE = "sagemaker-quoted-fields.json"


def attribute_names(*names: str) -> dict[str, set[str]]:
    """{service code: every attribute name (plus productFamily) the fixture items carry}."""
    out: dict[str, set[str]] = {}
    for name in names or (EC2_FILE, RESERVED_FILE, SAGEMAKER_FILE):
        for it in items(name):
            got = out.setdefault(it["serviceCode"], set())
            got |= set(it["product"]["attributes"])
            if "productFamily" in it["product"]:
                got.add("productFamily")
    return out


def _matches(doc: Mapping, filters: Iterable[Mapping]) -> bool:
    product = doc["product"]
    for f in filters:
        field, value = f["Field"], f["Value"]
        if field == "ServiceCode":
            have = doc.get("serviceCode")
        elif field == "productFamily":
            have = product.get("productFamily")
        else:
            have = product.get("attributes", {}).get(field)
        if have != value:
            return False
    return True


class Corpus:
    """The products the stand-in serves, as documents (dicts); served as JSON strings."""

    def __init__(self, docs: Iterable[dict] = ()):
        self.docs: list[dict] = [copy.deepcopy(d) for d in docs]

    def add(self, *docs: dict) -> Corpus:
        self.docs += [copy.deepcopy(d) for d in docs]
        return self

    def without(self, predicate) -> Corpus:
        return Corpus(d for d in self.docs if not predicate(d))

    def query(self, service_code: str, filters: list[Mapping]) -> list[dict]:
        return [d for d in self.docs if d["serviceCode"] == service_code and _matches(d, filters)]

    # -- building one from the genuine items -----------------------------------------------------------

    @classmethod
    def genuine(cls) -> Corpus:
        return cls([*items(EC2_FILE), *items(RESERVED_FILE), *items(SAGEMAKER_FILE)])

    @classmethod
    def for_catalog(cls, cat, regions: Iterable[str] | None = None, *, extra: Iterable[dict] = ()) -> Corpus:
        """The genuine items plus one generated item for every catalog price row they do not cover:
        EC2 (with Reserved terms), SageMaker hosting, serverless compute for 1-6 GB and data IN/OUT, in
        ``regions`` (default: every catalog region; serverless too where the catalog has no row yet)."""
        corpus = cls.genuine().add(*extra)
        regions = list(regions or cat.regions)
        covered = {(d["product"]["attributes"].get("regionCode"), d["product"]["attributes"].get("usagetype"))
                   for d in corpus.docs}
        us_east_sv = cat.serverless.get("us-east-1")
        for (region, itype), row in sorted(cat.ec2.items()):
            if region in regions and (region, _usage("AmazonEC2", region, "BoxUsage", itype)) not in covered:
                corpus.add(ec2_item(region, itype, row.on_demand, ri_1y=row.ri_1y, ri_3y=row.ri_3y))
        for (region, ml), row in sorted(cat.hosting.items()):
            if region in regions and (region, _usage("AmazonSageMaker", region, "Host", ml)) not in covered:
                corpus.add(hosting_item(region, ml, row.hourly))
        for region in regions:
            sv = cat.serverless.get(region) or us_east_sv  # a region without a row yet: the us-east-1 rates
            for gb in range(1, 7):
                if (region, _usage("AmazonSageMaker", region, "ServerlessInf", f"Mem-{gb}GB")) not in covered:
                    corpus.add(serverless_item(region, gb, round(sv.usd_per_gb_second * gb, 10)))
            for direction in ("In", "Out"):
                if (region, _usage("AmazonSageMaker", region, "Hst", f"Data-Bytes-{direction}")) not in covered:
                    corpus.add(data_item(region, direction, sv.usd_per_gb_processed))
        return corpus


def _usage(service: str, region: str, kind: str, detail: str) -> str:
    from llmdeploy.prices import USAGE_PREFIXES

    prefix = USAGE_PREFIXES[service][region]
    return f"{prefix + '-' if prefix else ''}{kind}:{detail}"


def _sku(*parts: str) -> str:
    """A generated SKU: 16 upper-case characters like AWS's, but starting GEN so it cannot pass for a real one."""
    return "GEN" + hashlib.sha256("|".join(parts).encode()).hexdigest().upper()[:13]


def _rekey(doc: dict, sku: str, usd: str) -> dict:
    """Give a template document a new SKU (product, term keys, rate codes) and a new OnDemand price."""
    old = doc["product"]["sku"]
    doc["product"]["sku"] = sku
    for term_type, terms in list(doc["terms"].items()):
        new_terms = {}
        for key, term in terms.items():
            term["sku"] = sku
            term["priceDimensions"] = {k.replace(old, sku, 1): {**d, "rateCode": d["rateCode"].replace(old, sku, 1)}
                                       for k, d in term["priceDimensions"].items()}
            new_terms[key.replace(old, sku, 1)] = term
        doc["terms"][term_type] = new_terms
    for dim in next(iter(doc["terms"]["OnDemand"].values()))["priceDimensions"].values():
        dim["pricePerUnit"] = {"USD": usd}
    return doc


def _reserved_terms(sku: str, itype: str, ri: Mapping[str, float | None]) -> dict:
    """Reserved terms shaped exactly like the genuine t2.micro item's (codes, dimension fields), for ``sku``.
    A lease with a standard No Upfront rate gets all six of its terms (the other payment options and the
    convertible class derived from it, which refresh must NOT pick); a lease without one gets only its
    convertible terms - the shape of a type AWS sells no standard RI for."""
    genuine = by_sku(RESERVED_FILE, "9NSP3EV3G593P35X")["terms"]["Reserved"]
    out = {}
    for term in genuine.values():
        ta = term["termAttributes"]
        lease = {"1yr": "ri_1y", "3yr": "ri_3y"}[ta["LeaseContractLength"]]
        base = ri.get(lease)
        if ta["OfferingClass"] == "standard" and base is None:
            continue
        base = base if base is not None else ri.get("on_demand", 1.0) * 0.7
        hours = 8760 if lease == "ri_1y" else 26280
        factor = 1.0 if ta["OfferingClass"] == "standard" else 1.15
        hourly, upfront = {"No Upfront": (base * factor, None), "Partial Upfront": (base * factor * 0.48, base * factor * 0.5 * hours),
                           "All Upfront": (0.0, base * factor * 0.95 * hours)}[ta["PurchaseOption"]]
        code = term["offerTermCode"]
        dims = {}
        for dkey, dim in term["priceDimensions"].items():
            new = dict(dim, rateCode=dim["rateCode"].replace("9NSP3EV3G593P35X", sku))
            if dim["unit"] == "Quantity":
                if upfront is None:
                    continue
                new["pricePerUnit"] = {"USD": f"{round(upfront):d}"}
            else:
                new["pricePerUnit"] = {"USD": f"{hourly:.10f}"}
                new["description"] = dim["description"].replace("t2.micro", itype)
            dims[dkey.replace("9NSP3EV3G593P35X", sku)] = new
        out[f"{sku}.{code}"] = dict(term, sku=sku, priceDimensions=dims)
    return out


def ec2_item(region: str, itype: str, on_demand: float, *, ri_1y: float | None = None, ri_3y: float | None = None) -> dict:
    """A plain Linux on-demand AmazonEC2 item for any type and region, from the genuine g4dn.xlarge one
    (2026-09-10), with Reserved terms shaped like the genuine t2.micro item's."""
    doc = by_sku(EC2_FILE, "7TVXMFHQR6U7W5CV")
    sku = _sku("ec2", region, itype)
    _rekey(doc, sku, f"{on_demand:.10f}")
    a = doc["product"]["attributes"]
    a.update(instanceType=itype, regionCode=region, location=LOCATIONS[region],
             usagetype=_usage("AmazonEC2", region, "BoxUsage", itype))
    if itype.endswith(".metal"):
        doc["product"]["productFamily"] = "Compute Instance (bare metal)"
    dim = next(iter(next(iter(doc["terms"]["OnDemand"].values()))["priceDimensions"].values()))
    dim["description"] = f"${on_demand:g} per On Demand Linux {itype} Instance Hour"
    reserved = _reserved_terms(sku, itype, {"ri_1y": ri_1y, "ri_3y": ri_3y, "on_demand": on_demand})
    if reserved:
        doc["terms"]["Reserved"] = reserved
    return doc


def _sagemaker_item(template_sku: str, region: str, usagetype: str, sku: str, usd: float, description: str, **attrs) -> dict:
    doc = by_sku(SAGEMAKER_FILE, template_sku)
    _rekey(doc, sku, f"{usd:.10f}")
    a = doc["product"]["attributes"]
    a.update(regionCode=region, location=LOCATIONS[region], usagetype=usagetype, **attrs)
    next(iter(next(iter(doc["terms"]["OnDemand"].values()))["priceDimensions"].values()))["description"] = description
    return doc


def hosting_item(region: str, ml: str, hourly: float, *, kind: str = "Host", component: str = "Hosting") -> dict:
    """A SageMaker real-time hosting item (from the quoted-fields ml.g6e.2xlarge one); ``kind``/``component``
    give the other meters of the same instance (AsyncInf, Train / Training)."""
    return _sagemaker_item("RECONSTRUCTED-H1", region, _usage("AmazonSageMaker", region, kind, ml),
                           _sku("sm", region, kind, ml), hourly,
                           f"${hourly:g} per {'Hosting' if kind == 'Host' else kind} {ml} hour in {LOCATIONS[region]}",
                           instanceName=ml, component=component)


def serverless_item(region: str, gb: int, per_second: float) -> dict:
    return _sagemaker_item("RECONSTRUCTED-S1", region, _usage("AmazonSageMaker", region, "ServerlessInf", f"Mem-{gb}GB"),
                           _sku("sv", region, str(gb)), per_second,
                           f"${per_second:g} per second of Serverless Inference with {gb} GB memory")


def data_item(region: str, direction: str, per_gb: float) -> dict:
    return _sagemaker_item(f"RECONSTRUCTED-D{1 if direction == 'In' else 2}", region,
                           _usage("AmazonSageMaker", region, "Hst", f"Data-Bytes-{direction}"),
                           _sku("data", region, direction), per_gb, f"${per_gb:g} per GB for Endpoint Data {direction.upper()}",
                           group=f"Hosting:{direction.upper()}")


# -- the HTTP server ------------------------------------------------------------------------------------


class PriceListServer:
    """``with PriceListServer(corpus) as api:`` -> ``api.url``; ``api.requests`` lists every GetProducts body,
    ``api.returned`` the SKUs each answer carried. ``api.fail_at = (n, code, message)`` makes the n-th
    request (0-based) and every later one fail with that AWS error code (botocore retries, so a one-off
    failure would be retried away)."""

    def __init__(self, corpus: Corpus, *, page_size: int = 25):
        self.corpus = corpus
        self.page_size = page_size
        self.requests: list[dict] = []
        self.returned: list[list[str]] = []
        self.fail_at: tuple[int, str, str] | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, answer = server.answer(self.headers.get("X-Amz-Target", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> PriceListServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    @staticmethod
    def _error(code: str, message: str) -> tuple[int, dict]:
        return 400, {"__type": code, "message": message}

    def answer(self, target: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
        if target != TARGET:
            return self._error("UnknownOperationException", f"the stand-in serves {TARGET} only, not {target!r}")
        if self.fail_at and n >= self.fail_at[0]:
            return self._error(self.fail_at[1], self.fail_at[2])
        filters = body.get("Filters", [])
        if any(f.get("Type") not in ("TERM_MATCH", "EQUALS") for f in filters):
            return self._error("InvalidParameterException", "the stand-in implements TERM_MATCH and EQUALS only")
        if body.get("FormatVersion", "aws_v1") != "aws_v1":
            return self._error("InvalidParameterException", f"unknown FormatVersion {body['FormatVersion']!r}")
        found = self.corpus.query(body["ServiceCode"], filters)
        start = int(body.get("NextToken") or 0)
        size = int(body.get("MaxResults") or self.page_size)
        page = found[start:start + size]
        with self._lock:
            self.returned.append([d["product"]["sku"] for d in page])
        answer: dict = {"FormatVersion": "aws_v1", "PriceList": [json.dumps(d) for d in page]}
        if start + size < len(found):
            answer["NextToken"] = str(start + size)
        return 200, answer

    def returned_skus(self) -> set[str]:
        return {sku for page in self.returned for sku in page}
