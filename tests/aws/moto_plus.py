"""``python -m moto.server`` plus the two things `llmdeploy status` calls that moto 5.2 lacks.

The AWS tests start this file instead of ``moto.server`` (tests/aws/conftest.py); every other call is moto's own.

1. Percentile statistics (``p50``, ``p90``, ``p99.9``) in GetMetricData. moto computes Sum, Average, Minimum,
   Maximum and SampleCount and returns nothing for percentiles. CloudWatch computes a percentile over the raw
   values published in the period (values sent as StatisticValues sets carry no distribution, so CloudWatch
   gives no percentile for them either); here: nearest-rank over the raw values, ``None`` (no datapoint) for
   StatisticValues-only periods, as CloudWatch omits them.
2. Cost Explorer's ListCostAllocationTags and UpdateCostAllocationTagsStatus, shapes as in botocore's ``ce``
   model (CostAllocationTag: TagKey, Type, Status, LastUpdatedDate, LastUsedDate; Errors list). Deviation: in
   AWS a user-defined tag key is listed only once billing has seen it on a resource (up to 24 hours after
   tagging) and activating an unseen key fails; here UpdateCostAllocationTagsStatus makes any key known with
   the given status, which is how a test says "the key exists and is (in)active". A key never updated is
   absent, as an unseen key is in AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys

from moto.ce import models as ce_models
from moto.ce import responses as ce_responses
from moto.cloudwatch import models as cw_models

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")
_original_statistic = cw_models.Statistics.get_statistics_for_type


def _statistic(self, stat: str):
    match = _PERCENTILE.match(stat)
    if not match:
        return _original_statistic(self, stat)
    values = sorted(self.metric_single_values_list)
    if not values:
        return None
    rank = max(1, math.ceil(float(match.group(1)) / 100 * len(values)))  # nearest-rank percentile
    return values[rank - 1]


def _tags(backend) -> dict[str, dict]:
    if not hasattr(backend, "llmdeploy_cost_allocation_tags"):
        backend.llmdeploy_cost_allocation_tags = {}
    return backend.llmdeploy_cost_allocation_tags


def list_cost_allocation_tags(self) -> str:
    params = json.loads(self.body or "{}")
    rows = list(_tags(self.ce_backend).values())
    if params.get("TagKeys"):
        rows = [r for r in rows if r["TagKey"] in params["TagKeys"]]
    for key in ("Status", "Type"):
        if params.get(key):
            rows = [r for r in rows if r[key] == params[key]]
    return json.dumps({"CostAllocationTags": rows})


def update_cost_allocation_tags_status(self) -> str:
    params = json.loads(self.body or "{}")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    errors = []
    for item in params.get("CostAllocationTagsStatus", []):
        if item.get("Status") not in ("Active", "Inactive"):
            errors.append({"TagKey": item.get("TagKey"), "Code": "ValidationException", "Message": "bad Status"})
            continue
        _tags(self.ce_backend)[item["TagKey"]] = {"TagKey": item["TagKey"], "Type": "UserDefined", "Status": item["Status"],
                                                  "LastUpdatedDate": now, "LastUsedDate": now}
    return json.dumps({"Errors": errors})


def install() -> None:
    cw_models.Statistics.get_statistics_for_type = _statistic
    ce_responses.CostExplorerResponse.list_cost_allocation_tags = list_cost_allocation_tags
    ce_responses.CostExplorerResponse.update_cost_allocation_tags_status = update_cost_allocation_tags_status
    assert ce_models.CostExplorerBackend  # the backend the responses above keep their state on


if __name__ == "__main__":
    install()
    from moto.server import main

    main(sys.argv[1:])
