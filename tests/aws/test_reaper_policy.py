"""The IAM policy examples/reaper-cron.yml publishes allows every AWS call `llmdeploy reap --yes` makes.

The calls are recorded against the moto server with a botocore event hook (``before-parameter-build``, which
sees each call's own parameters) on every session the reaper
opens (llmdeploy.aws.clients.new_session), together with the tags of the resource each deletion names, read
from moto just before the call goes out. Each call is then judged by the policy the way IAM would for it:
an Allow statement whose Action matches (IAM wildcards, case-insensitive), whose Resource matches the ARN of
the resource the call names, and whose Condition holds (``StringEquals`` on ``aws:ResourceTag/KEY``; any other
condition counts as not satisfied, so a new kind of condition fails this test until it is modelled), and no
Deny that matches. What moto cannot show (the network interface IAM also checks for DisassociateAddress) is
outside this test.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import threading
from pathlib import Path

import aws_scenario as sc
import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "reaper-cron.yml"
ACCOUNT = "123456789012"  # moto's default account


def example_policy() -> dict:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# BEGIN reaper IAM policy") + 1
    end = lines.index("# END reaper IAM policy")
    return json.loads("\n".join(line.removeprefix("#") for line in lines[start:end]))


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: dict | None, tags: dict[str, str]) -> bool:
    for operator, entries in (condition or {}).items():
        for key, expected in entries.items():
            if operator != "StringEquals" or not key.startswith("aws:ResourceTag/"):
                return False  # not modelled here: fail closed
            if tags.get(key.removeprefix("aws:ResourceTag/")) not in _as_list(expected):
                return False
    return True


def allowed(policy: dict, action: str, arn: str, tags: dict[str, str]) -> bool:
    def matches(st) -> bool:
        return (any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(st["Action"]))
                and any(fnmatch.fnmatchcase(arn, r) for r in _as_list(st["Resource"]))
                and _condition_holds(st.get("Condition"), tags))

    statements = _as_list(policy["Statement"])
    if any(st["Effect"] == "Deny" and matches(st) for st in statements):
        return False
    return any(st["Effect"] == "Allow" and matches(st) for st in statements)


class Recorder:
    """Every call the reaper's clients make: (IAM action, [(resource ARN, its tags)])."""

    def __init__(self, endpoint: str):
        import boto3

        self.calls: list[tuple[str, list[tuple[str, dict[str, str]]]]] = []
        self._lock = threading.Lock()
        # Plain clients for reading tags: not hooked, never recorded.
        self._ec2 = lambda region: boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        self._sm = lambda region: boto3.client("sagemaker", region_name=region, endpoint_url=endpoint)

    def hook(self, model, params, region, **_):
        service = model.service_model.signing_name
        resources = self._resources(service, model.name, params, region)
        with self._lock:
            self.calls.append((f"{service}:{model.name}", resources))

    def _resources(self, service: str, operation: str, params: dict, region: str):
        if service == "ec2" and operation == "TerminateInstances":
            out = []
            for r in self._ec2(region).describe_instances(InstanceIds=params["InstanceIds"])["Reservations"]:
                for i in r["Instances"]:
                    out.append((f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{i['InstanceId']}", _tags(i.get("Tags"))))
            return out
        if service == "ec2" and operation in ("ReleaseAddress", "DisassociateAddress"):
            key, value = next((k, v) for k, v in params.items() if k in ("AllocationId", "AssociationId"))
            (addr,) = [a for a in self._ec2(region).describe_addresses()["Addresses"] if a.get(key) == value]
            return [(f"arn:aws:ec2:{region}:{ACCOUNT}:elastic-ip/{addr['AllocationId']}", _tags(addr.get("Tags")))]
        if service == "sagemaker" and operation.startswith("Delete"):
            kind = {"DeleteEndpoint": "endpoint", "DeleteEndpointConfig": "endpoint-config", "DeleteModel": "model"}[operation]
            name = next(v for k, v in params.items() if k.endswith("Name"))
            arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"
            return [(arn, _tags(self._sm(region).list_tags(ResourceArn=arn).get("Tags")))]
        return [("*", {})]  # list / describe calls: judged on Resource "*"


def _tags(tags) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in tags or []}


@pytest.fixture
def recorder(aws, moto_server, monkeypatch):
    from llmdeploy.aws import clients

    rec = Recorder(moto_server)
    original = clients.new_session

    def hooked(region=None):
        session = original(region)
        # before-parameter-build: the call's own parameters, before they are serialized and sent.
        session.events.register("before-parameter-build", functools.partial(rec.hook, region=region or "us-east-1"))
        return session

    monkeypatch.setattr(clients, "new_session", hooked)
    clients.reset()
    return rec


def test_the_example_policy_allows_every_call_reap_makes(recorder, boto):
    ec2, sm = boto("ec2"), boto("sagemaker")
    node = sc.instance(ec2, sc.managed())[0]
    sc.address(ec2, sc.managed(), instance=node)  # attached to an expired node: disassociated, then released
    sc.address(ec2, sc.managed())  # left behind by autodown: released
    sc.instance(ec2, sc.managed(sc.FUTURE))  # live: listed, untouched
    sc.endpoint(sm, "ep-expired", sc.managed())  # endpoint, its config and model
    sc.leftovers(sm, "orphan", sc.managed())  # a config and a model no endpoint uses
    sc.leftovers(sm, "lonely", sc.managed(), config=False)  # a model alone

    result = CliRunner().invoke(cli, ["reap", "--yes", "--region", "us-east-1", "--now", sc.NOW],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert node not in sc.live_instances(ec2) and sc.addresses(ec2) == {}, "the expired node and its addresses are gone"

    actions = {action for action, _ in recorder.calls}
    # The sweep did what it exists for (so the recording covers deleting paths, not only listing).
    for needed in ("ec2:TerminateInstances", "ec2:DisassociateAddress", "ec2:ReleaseAddress", "sagemaker:DeleteEndpoint",
                   "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel", "sagemaker:ListModels"):
        assert needed in actions, f"the scenario must exercise {needed}; recorded: {sorted(actions)}"

    policy = example_policy()
    refused = sorted({(action, arn) for action, resources in recorder.calls for arn, tags in resources
                      if not allowed(policy, action, arn, tags)})
    assert not refused, f"examples/reaper-cron.yml's policy does not allow these calls `reap` makes: {refused}"


def test_the_policy_judge_is_not_vacuous():
    policy = example_policy()
    managed, foreign = {"managed-by": "llmdeploy"}, {"managed-by": "terraform"}
    arn = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-1"
    assert allowed(policy, "ec2:TerminateInstances", arn, managed)
    assert not allowed(policy, "ec2:TerminateInstances", arn, foreign), "only managed resources may be deleted"
    assert not allowed(policy, "ec2:RunInstances", arn, managed), "nothing beyond what reap needs"
    assert not allowed(policy, "sagemaker:CreateEndpoint", "*", {})
    assert allowed(policy, "sagemaker:listmodels", "*", {}), "IAM action names are case-insensitive"
