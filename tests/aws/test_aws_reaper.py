"""`llmdeploy reap` against a real moto server: only expired, managed, unprotected things go."""

from __future__ import annotations

import json
import threading

import aws_scenario as sc
import pytest
from click.testing import CliRunner

from llmdeploy.cli.main import cli


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


@pytest.fixture
def world(aws, boto):
    """A mix of resources in two regions; returns what each one is and what must happen to it."""
    ec2, sm = boto("ec2"), boto("sagemaker")
    w = {
        "expired": sc.instance(ec2, sc.managed(), count=2) + sc.instance(ec2, sc.managed(), itype="p4d.24xlarge"),
        "live": sc.instance(ec2, sc.managed(sc.FUTURE)),
        "protected": sc.instance(ec2, sc.managed(protect=True)),
        "untagged": sc.instance(ec2, None) + sc.instance(ec2, {"expires-at": sc.PAST, "llmdeploy:stack": "dev"}),
        "foreign": sc.instance(ec2, {"managed-by": "terraform", "expires-at": sc.PAST}),
        "no_expiry": sc.instance(ec2, sc.managed(None)),
        "bad_expiry": sc.instance(ec2, sc.managed("next tuesday")),
    }
    west = boto("ec2", "us-west-2")
    w["west_expired"] = sc.instance(west, sc.managed())
    sc.endpoint(sm, "ep-expired", sc.managed())
    sc.endpoint(sm, "ep-expired-t2", sc.managed(), itype="ml.t2.medium", count=2)
    sc.endpoint(sm, "ep-live", sc.managed(sc.FUTURE), itype="ml.t2.medium")
    sc.endpoint(sm, "ep-protected", sc.managed(protect=True))
    sc.endpoint(sm, "ep-untagged", {"expires-at": sc.PAST})
    sc.endpoint(sm, "ep-shared-model", sc.managed(), model_tags={"team": "research"})  # model not ours: kept
    sc.endpoint(sm, "ep-model-protected", sc.managed(), model_tags=sc.managed(protect=True))
    w["ec2"], w["sm"], w["west"] = ec2, sm, west
    return w


EXPIRED_ENDPOINTS = {"ep-expired", "ep-expired-t2", "ep-shared-model", "ep-model-protected"}
KEPT_ENDPOINTS = {"ep-live", "ep-protected", "ep-untagged"}


def test_dry_run_lists_expired_and_deletes_nothing(world):
    before = (sc.live_instances(world["ec2"]), sc.endpoints(world["sm"]), sc.configs(world["sm"]), sc.models(world["sm"]))
    result = run_cli("reap", "--now", sc.NOW)
    assert result.exit_code == 1, "a dry run that finds expired resources exits 1"
    out = result.stdout
    for iid in world["expired"] + world["west_expired"]:
        assert iid in out, f"expired managed instance {iid} must be listed"
    for name in EXPIRED_ENDPOINTS:
        assert name in out
    for iid in world["live"] + world["untagged"] + world["foreign"] + world["no_expiry"]:
        assert iid not in out, f"{iid} is not expired or not managed: it must not even be listed"
    assert "ep-live" not in out and "ep-untagged" not in out
    assert "Would delete 8 expired resource(s)" in out
    # 2 x m5.large + p4d + west m5.large + ep m5 + ep 2 x t2 + 2 x ep m5
    hourly = 2 * 0.096 + 32.7726 + 0.096 + 0.115 + 2 * 0.056 + 2 * 0.115
    assert f"${hourly:,.2f}/hour" in out
    skipped = out.split("Skipped", 1)[1]
    assert world["protected"][0] in skipped and "ep-protected" in skipped, "protected resources are listed as skipped"
    assert world["bad_expiry"][0] in skipped and "does not parse" in skipped
    assert "Dry run: nothing deleted" in out
    after = (sc.live_instances(world["ec2"]), sc.endpoints(world["sm"]), sc.configs(world["sm"]), sc.models(world["sm"]))
    assert after == before, "a dry run must delete nothing"


def test_yes_deletes_exactly_the_expired_managed_ones(world):
    ec2, sm = world["ec2"], world["sm"]
    all_before = sc.live_instances(ec2)
    result = run_cli("reap", "--now", sc.NOW, "--yes")
    assert result.exit_code == 0, result.output
    assert "Done: 8 of 8 handled, 0 failed." in result.stdout
    remaining = sc.live_instances(ec2)
    assert remaining == all_before - set(world["expired"]), "exactly the expired managed instances are terminated"
    assert sc.live_instances(world["west"]) == set(), "every region in the catalog is swept"
    assert sc.endpoints(sm) == KEPT_ENDPOINTS
    assert sc.configs(sm) == {f"{n}-config" for n in KEPT_ENDPOINTS}, "configs of reaped endpoints go with them"
    assert sc.models(sm) == {f"{n}-model" for n in KEPT_ENDPOINTS} | {"ep-shared-model-model", "ep-model-protected-model"}, (
        "models go with their endpoint only when managed and unprotected"
    )
    assert "kept model ep-shared-model-model (not managed)" in result.stderr
    again = run_cli("reap", "--now", sc.NOW, "--yes")
    assert again.exit_code == 0 and "Nothing expired." in again.stdout, "a second run finds nothing expired"


def test_region_filter(world):
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-west-2", "--yes")
    assert result.exit_code == 0
    assert sc.live_instances(world["west"]) == set()
    assert set(world["expired"]) <= sc.live_instances(world["ec2"]), "other regions are not touched"


def test_json_output(world):
    result = run_cli("reap", "--now", sc.NOW, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True and doc["regions"] == ["us-east-1", "us-west-2"]
    kinds = {(i["kind"], i["id"]) for i in doc["expired"]}
    assert ("sagemaker-endpoint", "ep-expired") in kinds and ("ec2-instance", world["expired"][0]) in kinds
    assert {i["status"] for i in doc["skipped"]} == {"protected", "bad-expiry"}
    assert doc["results"] == []


def test_nothing_expired_exits_0(aws, boto):
    sc.instance(boto("ec2"), sc.managed(sc.FUTURE))
    result = run_cli("reap", "--now", sc.NOW)
    assert result.exit_code == 0 and "Nothing expired." in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--region", "us-east-l"], "unknown region 'us-east-l'. Did you mean 'us-east-1'?"),
        (["--now", "soon"], "--now 'soon' is not an ISO 8601 time"),
        (["--now", "2026-11-22T12:00:00"], "is not an ISO 8601 time with a zone"),
    ],
)
def test_bad_flags_are_one_line_exit_2(aws, args, needle):
    result = run_cli("reap", *args)
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_bad_concurrency_exit_2(aws):
    assert run_cli("reap", "--concurrency", "0").exit_code == 2


# -- failures injected on the client side (botocore before-send), mid-sweep ----------------------


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def _ec2_error(code: str, status: int):
    from botocore.awsrequest import AWSResponse

    body = f"<Response><Errors><Error><Code>{code}</Code><Message>injected {code}</Message></Error></Errors><RequestID>x</RequestID></Response>"
    return AWSResponse("http://injected", status, {}, _Raw(body.encode()))


def _json_error(code: str, status: int):
    from botocore.awsrequest import AWSResponse

    body = json.dumps({"__type": code, "message": f"injected {code}"})
    return AWSResponse("http://injected", status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body.encode()))


@pytest.fixture
def inject(monkeypatch):
    """Register before-send hooks on every session llmdeploy creates: ``inject(event, fn)``."""
    from llmdeploy.aws import clients

    hooks: list[tuple[str, object]] = []
    real = clients.new_session

    def new_session(region=None):
        session = real(region)
        for event, fn in hooks:
            session.events.register(event, fn)
        return session

    monkeypatch.setattr(clients, "new_session", new_session)
    clients.reset()

    def add(event, fn):
        hooks.append((event, fn))

    add.clear = hooks.clear  # the API "recovers": sessions made after this get no hooks
    return add


def test_failures_mid_sweep_are_reported_and_a_second_run_finishes(world, inject, monkeypatch):
    from llmdeploy.aws import reaper

    monkeypatch.setattr(reaper, "BACKOFF_BASE_S", 0.05)
    ec2, sm = world["ec2"], world["sm"]
    throttled, broken = world["expired"][0], world["expired"][1]
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def on_terminate(request, **_):
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        with lock:
            key = throttled if throttled in body else broken if broken in body else None
            if key is None:
                return None
            counts[key] = counts.get(key, 0) + 1
            n = counts[key]
        if key == throttled and n <= 4:
            return _ec2_error("RequestLimitExceeded", 503)  # beyond botocore's 3 attempts: our own backoff retries
        if key == broken:
            return _ec2_error("UnauthorizedOperation", 403)  # never succeeds in this run
        return None

    def on_delete_endpoint(request, **_):
        if b'"ep-expired-t2"' in (request.body or b""):
            return _json_error("AccessDeniedException", 400)
        return None

    def on_list_tags(request, **_):
        with lock:
            counts["list_tags"] = counts.get("list_tags", 0) + 1
            n = counts["list_tags"]
        return _json_error("ThrottlingException", 400) if n % 3 == 0 else None  # sporadic throttling while scanning

    inject("before-send.ec2.TerminateInstances", on_terminate)
    inject("before-send.sagemaker.DeleteEndpoint", on_delete_endpoint)
    inject("before-send.sagemaker.ListTags", on_list_tags)

    result = run_cli("reap", "--now", sc.NOW, "--yes", "--concurrency", "4")
    assert result.exit_code == 1, "failures leave expired resources behind: exit 1"
    assert "Done: 6 of 8 handled, 2 failed." in result.stdout, result.output
    assert f"Failed: us-east-1 ec2-instance {broken}: UnauthorizedOperation" in result.stderr
    assert "Failed: us-east-1 sagemaker-endpoint ep-expired-t2: AccessDeniedException" in result.stderr
    assert counts[throttled] == 5, "throttling is retried by botocore, then by the reaper's own backoff"
    live = sc.live_instances(ec2)
    assert throttled not in live, "a throttled deletion eventually succeeds"
    assert broken in live and "ep-expired-t2" in sc.endpoints(sm), "a failed deletion leaves the resource"
    for iid in world["live"] + world["protected"] + world["untagged"] + world["foreign"] + world["no_expiry"] + world["bad_expiry"]:
        assert iid in live, f"{iid} must never be deleted, failures or not"
    assert {"ep-live", "ep-protected", "ep-untagged"} <= sc.endpoints(sm)
    assert "ep-expired-t2-config" in sc.configs(sm), "the config of an endpoint that failed to delete stays"

    inject.clear()  # the API recovers
    from llmdeploy.aws import clients

    clients.reset()
    second = run_cli("reap", "--now", sc.NOW, "--yes")
    assert second.exit_code == 0, second.output
    third = run_cli("reap", "--now", sc.NOW)
    assert third.exit_code == 0 and "Nothing expired." in third.stdout, "after the second run nothing expired remains"
    assert sc.endpoints(sm) == KEPT_ENDPOINTS


def test_listing_failure_is_reported_and_exits_1(world, inject):
    inject("before-send.ec2.DescribeInstances", lambda request, **_: _ec2_error("UnauthorizedOperation", 403))
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1")
    assert result.exit_code == 1
    assert "us-east-1 ec2-instance: listing failed: UnauthorizedOperation" in result.stderr
    assert "ep-expired" in result.stdout, "one failing listing does not hide the others"


# -- library-level rules ---------------------------------------------------------------------------


def test_recheck_before_delete_spares_newly_protected(world):
    from llmdeploy.aws import reaper
    from llmdeploy.finetune import parse_now

    now = parse_now(sc.NOW)
    found = reaper.scan(["us-east-1"], now=now, cat=world_cat(), concurrency=4)
    target = world["expired"][0]
    world["ec2"].create_tags(Resources=[target], Tags=[{"Key": "llmdeploy:protect", "Value": "true"}])
    world["sm"].add_tags(ResourceArn=world["sm"].describe_endpoint(EndpointName="ep-expired")["EndpointArn"],
                         Tags=[{"Key": "expires-at", "Value": sc.FUTURE}])
    outcomes = {o.item.id: o for o in reaper.reap(found.expired, now=now, concurrency=4)}
    assert outcomes[target].ok and "left alone" in outcomes[target].message
    assert target in sc.live_instances(world["ec2"]), "protected between scan and delete: spared"
    assert "left alone" in outcomes["ep-expired"].message and "ep-expired" in sc.endpoints(world["sm"])


def test_deleting_twice_is_fine(world):
    from llmdeploy.aws import reaper
    from llmdeploy.finetune import parse_now

    now = parse_now(sc.NOW)
    found = reaper.scan(["us-east-1"], now=now, cat=world_cat(), concurrency=1)
    first = reaper.reap(found.expired, now=now, concurrency=1)
    assert all(o.ok for o in first)
    second = reaper.reap(found.expired, now=now, concurrency=4)
    assert all(o.ok for o in second), [o.message for o in second if not o.ok]
    assert {o.message for o in second} == {"already gone"}, "already gone counts as done"


def world_cat():
    from llmdeploy.catalog import load_catalog

    return load_catalog()


# -- Pulumi stacks in the local file backend ---------------------------------------------------------


def _write_stack(state_dir, project: str, stack: str, config: dict, resources: list[dict]):
    path = state_dir / ".pulumi" / "stacks" / project / f"{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": 3, "checkpoint": {"stack": f"organization/{project}/{stack}", "config": config,
                                        "latest": {"resources": [{"type": "pulumi:pulumi:Stack", "urn": "x"}, *resources]}}}
    path.write_text(json.dumps(doc))


def test_expired_pulumi_stacks_are_listed_and_need_the_cli(aws, tmp_path, monkeypatch):
    state = tmp_path / "pulumi-state"
    node = {"type": "aws:ec2/instance:Instance", "outputs": {"instanceType": "p4d.24xlarge"}}
    _write_stack(state, "llmdeploy-finetune", "old", {"aws:region": "us-east-1", "llmdeploy:expires-at": sc.PAST}, [node, node])
    _write_stack(state, "llmdeploy-finetune", "new", {"aws:region": "us-east-1", "llmdeploy:expires-at": sc.FUTURE}, [node])
    _write_stack(state, "llmdeploy-finetune", "gone", {"aws:region": "us-east-1", "llmdeploy:expires-at": sc.PAST}, [])
    _write_stack(state, "other", "noexp", {"aws:region": "us-east-1"}, [node])
    dry = run_cli("reap", "--now", sc.NOW)
    assert dry.exit_code == 1
    line = [ln for ln in dry.stdout.splitlines() if "pulumi-stack" in ln]
    assert len(line) == 1 and " old " in line[0] and "65.545" in line[0], "expired stack listed with its EC2 cost"
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = run_cli("reap", "--now", sc.NOW, "--yes")
    assert result.exit_code == 1
    assert "pulumi-stack old: the Pulumi CLI is not installed" in result.stderr
    assert "curl -fsSL https://get.pulumi.com | sh" in result.stderr


def test_one_unreadable_endpoint_does_not_hide_the_others(world, inject):
    def deny(request, **_):
        return _json_error("AccessDeniedException", 400) if b"endpoint/ep-expired-t2" in (request.body or b"") else None

    inject("before-send.sagemaker.ListTags", deny)
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1", "--yes")
    assert result.exit_code == 1, "an endpoint that could not be checked may be expired: exit 1"
    assert "sagemaker-endpoint ep-expired-t2: could not read tags: AccessDeniedException" in result.stderr
    assert "ep-expired-t2" in sc.endpoints(world["sm"]), "what could not be checked is not touched"
    assert "ep-expired" not in sc.endpoints(world["sm"]), "the others are still reaped"


# -- SageMaker endpoint configs and models that no endpoint uses (orphans) ---------------------------


@pytest.fixture
def orphans(aws, boto):
    """Leftovers of half-finished deploys next to things that are still in use."""
    sm = boto("sagemaker")
    sc.leftovers(sm, "gone", sc.managed())  # endpoint deleted by hand: config + model left
    sc.leftovers(sm, "half", sc.managed(), config=False)  # failed before its config: model left
    sc.leftovers(sm, "theirs", {"expires-at": sc.PAST})  # not ours
    sc.leftovers(sm, "kept", sc.managed(protect=True))
    sc.leftovers(sm, "later", sc.managed(sc.FUTURE))
    sc.leftovers(sm, "garbled", sc.managed("soon-ish"), config=False)
    # a live endpoint whose (expired) config and model must stay while it runs
    sc.endpoint(sm, "ep-running", sc.managed(sc.FUTURE), config_tags=sc.managed(), model_tags=sc.managed())
    # an expired endpoint whose model a live endpoint's config also names
    sc.endpoint(sm, "ep-old", sc.managed())
    sc.endpoint(sm, "ep-new", sc.managed(sc.FUTURE), model="ep-old-model")
    return sm


ORPHANS = {("sagemaker-endpoint-config", "gone-config"), ("sagemaker-model", "gone-model"), ("sagemaker-model", "half-model")}


def _state(sm):
    return sc.endpoints(sm), sc.configs(sm), sc.models(sm)


def test_orphans_are_listed_in_a_dry_run(orphans):
    before = _state(orphans)
    result = run_cli("reap", "--now", sc.NOW, "--json")
    assert result.exit_code == 1, "expired orphans remain: exit 1"
    doc = json.loads(result.stdout)
    expired = {(i["kind"], i["id"]): i for i in doc["expired"]}
    assert set(expired) == ORPHANS | {("sagemaker-endpoint", "ep-old")}
    assert all(expired[k]["usd_per_hour"] == 0.0 for k in ORPHANS), "orphans cost nothing per hour"
    skipped = {(i["kind"], i["id"]): i for i in doc["skipped"]}
    assert skipped[("sagemaker-endpoint-config", "ep-running-config")]["status"] == "in-use"
    assert "in use by endpoint ep-running" in skipped[("sagemaker-endpoint-config", "ep-running-config")]["detail"]
    assert "in use by endpoint config ep-running-config" in skipped[("sagemaker-model", "ep-running-model")]["detail"]
    assert skipped[("sagemaker-endpoint-config", "kept-config")]["status"] == "protected"
    assert ("sagemaker-model", "kept-model") not in skipped, "in use by the protected config: not an orphan"
    assert skipped[("sagemaker-model", "garbled-model")]["status"] == "bad-expiry"
    shared = skipped[("sagemaker-model", "ep-old-model")]
    assert shared["status"] == "in-use" and "in use by endpoint config ep-new-config" in shared["detail"], (
        "a model an expired endpoint shares with a live endpoint's config stays, and the listing says why"
    )
    ids = {i["id"] for i in doc["expired"] + doc["skipped"]}
    for name in ("theirs-config", "theirs-model", "later-config", "later-model", "ep-new", "ep-new-config", "ep-old-config"):
        assert name not in ids, f"{name}: not ours, not expired, or goes with its endpoint: not listed on its own"
    assert _state(orphans) == before, "a dry run deletes nothing"

    table = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1").stdout
    line = next(ln for ln in table.splitlines() if "gone-config" in ln)
    assert "sagemaker-endpoint-config" in line and " 0.000 " in line
    assert "Would delete 4 expired resource(s), $0.12/hour" in table


def test_yes_deletes_orphans_and_keeps_what_is_in_use(orphans):
    sm = orphans
    result = run_cli("reap", "--now", sc.NOW, "--yes")
    assert result.exit_code == 0, result.output
    assert "Done: 4 of 4 handled, 0 failed." in result.stdout
    assert sc.endpoints(sm) == {"ep-running", "ep-new"}
    assert sc.configs(sm) == {"theirs-config", "kept-config", "later-config", "ep-running-config", "ep-new-config"}
    assert sc.models(sm) == {
        "theirs-model", "kept-model", "later-model", "garbled-model", "ep-running-model", "ep-old-model"
    }, "orphans go; unmanaged, protected, unexpired, unparseable and in-use ones stay"
    assert "kept model ep-old-model (in use by endpoint config ep-new-config)" in result.stderr
    before = _state(sm)
    again = run_cli("reap", "--now", sc.NOW, "--yes")
    assert again.exit_code == 0 and "Nothing expired." in again.stdout, again.output
    assert _state(sm) == before, "a second run is a no-op"


def test_orphans_are_rechecked_right_before_deleting(orphans):
    from llmdeploy.aws import reaper
    from llmdeploy.finetune import parse_now

    now = parse_now(sc.NOW)
    found = reaper.scan(["us-east-1"], now=now, cat=world_cat(), concurrency=4)
    orphans.create_endpoint(EndpointName="ep-late", EndpointConfigName="gone-config", Tags=[])  # gone-config in use again
    orphans.add_tags(ResourceArn=orphans.describe_model(ModelName="half-model")["ModelArn"],
                     Tags=[{"Key": "llmdeploy:protect", "Value": "true"}])
    outcomes = {o.item.id: o for o in reaper.reap(found.expired, now=now, concurrency=4)}
    assert outcomes["gone-config"].message == "left alone: in use by endpoint ep-late"
    assert outcomes["gone-model"].message == "left alone: in use by endpoint config gone-config"
    assert outcomes["half-model"].message.startswith("left alone: tagged llmdeploy:protect")
    assert all(o.ok for o in outcomes.values())
    assert {"gone-config"} <= sc.configs(orphans) and {"gone-model", "half-model"} <= sc.models(orphans)
    again = reaper.reap(found.expired, now=now, concurrency=1)
    assert {o.message for o in again if o.item.kind == "sagemaker-endpoint"} == {"already gone"}


def test_orphan_listing_failure_is_reported(orphans, inject):
    inject("before-send.sagemaker.ListModels", lambda request, **_: _json_error("AccessDeniedException", 400))
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1", "--yes")
    assert result.exit_code == 1
    assert "us-east-1 sagemaker-endpoint: listing failed: AccessDeniedException" in result.stderr
    assert "half-model" in sc.models(orphans), "nothing unchecked is deleted"


# -- Elastic IPs (billed while allocated; on-instance autodown leaves them behind) ---------------------


@pytest.fixture
def eips(aws, boto):
    """Elastic IPs next to the instances they may be attached to; returns name -> allocation id (and the clients)."""
    ec2, west = boto("ec2"), boto("ec2", "us-west-2")
    (node,) = sc.instance(ec2, sc.managed(), itype="p4d.24xlarge")  # an expired fine-tune node, still running
    (live_node,) = sc.instance(ec2, sc.managed(sc.FUTURE))
    (protected_node,) = sc.instance(ec2, sc.managed(protect=True))
    (foreign_node,) = sc.instance(ec2, {"team": "research"})
    e = {
        "idle": sc.address(ec2, sc.managed()),  # its node was terminated by autodown: nothing attached
        "attached": sc.address(ec2, sc.managed(), instance=node),
        "live": sc.address(ec2, sc.managed(sc.FUTURE)),
        "protected": sc.address(ec2, sc.managed(protect=True)),
        "unmanaged": sc.address(ec2, {"expires-at": sc.PAST, "llmdeploy:stack": "dev"}),
        "foreign": sc.address(ec2, {"managed-by": "terraform", "expires-at": sc.PAST}),
        "untagged": sc.address(ec2, None),
        "on_live_node": sc.address(ec2, sc.managed(), instance=live_node),
        "on_protected_node": sc.address(ec2, sc.managed(), instance=protected_node),
        "on_foreign_node": sc.address(ec2, sc.managed(), instance=foreign_node),
        "west": sc.address(west, sc.managed()),
    }
    return {"ids": e, "ec2": ec2, "west": west, "node": node, "live_node": live_node,
            "protected_node": protected_node, "foreign_node": foreign_node}


EIP_RELEASED = {"idle", "attached", "west"}
EIP_UNTOUCHED = {"live", "protected", "unmanaged", "foreign", "untagged", "on_live_node", "on_protected_node", "on_foreign_node"}


def test_expired_elastic_ips_are_listed_with_their_hourly_price(eips):
    ids, ec2 = eips["ids"], eips["ec2"]
    before = (sc.addresses(ec2), sc.addresses(eips["west"]))
    result = run_cli("reap", "--now", sc.NOW, "--json")
    assert result.exit_code == 1, "expired Elastic IPs remain: exit 1"
    doc = json.loads(result.stdout)
    expired = {i["id"]: i for i in doc["expired"] if i["kind"] == "elastic-ip"}
    assert set(expired) == {ids[n] for n in EIP_RELEASED}
    assert expired[ids["idle"]]["usd_per_hour"] == pytest.approx(0.005), "the price comes from the catalog's public_ipv4_hourly"
    assert expired[ids["west"]]["usd_per_hour"] is None, "a region whose catalog row lacks the price: unknown, not guessed"
    assert f"attached to expired instance {eips['node']}" in expired[ids["attached"]]["detail"]
    skipped = {i["id"]: i for i in doc["skipped"] if i["kind"] == "elastic-ip"}
    assert skipped[ids["protected"]]["status"] == "protected"
    for name, why in (("on_live_node", "not expired"), ("on_protected_node", "protect"), ("on_foreign_node", "does not manage")):
        assert skipped[ids[name]]["status"] == "in-use", name
        assert why in skipped[ids[name]]["detail"], (name, skipped[ids[name]]["detail"])
    listed = {i["id"] for i in doc["expired"] + doc["skipped"]}
    for name in ("live", "unmanaged", "foreign", "untagged"):
        assert ids[name] not in listed, f"{name}: not expired or not managed: not even listed"

    table = run_cli("reap", "--now", sc.NOW).stdout
    idle = next(ln for ln in table.split("Skipped", 1)[0].splitlines() if ids["idle"] in ln)
    assert "elastic-ip" in idle and " 0.005 " in idle
    west = next(ln for ln in table.splitlines() if ids["west"] in ln)
    assert "elastic-ip" in west and " ? " in west
    assert (sc.addresses(ec2), sc.addresses(eips["west"])) == before, "a dry run releases nothing"


def test_yes_releases_expired_elastic_ips_after_their_instance(eips, inject):
    ids, ec2 = eips["ids"], eips["ec2"]
    calls: list[str] = []
    lock = threading.Lock()

    def record(name):
        def hook(request, **_):
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
            with lock:
                calls.append(f"{name} attached" if ids["attached"] in body else name)
        return hook

    inject("before-send.ec2.TerminateInstances", record("terminate"))
    inject("before-send.ec2.DisassociateAddress", record("disassociate"))
    inject("before-send.ec2.ReleaseAddress", record("release"))
    result = run_cli("reap", "--now", sc.NOW, "--yes", "--concurrency", "4")
    assert result.exit_code == 0, result.output
    assert "Done: 4 of 4 handled, 0 failed." in result.stdout, "the expired node and 3 Elastic IPs"
    assert eips["node"] not in sc.live_instances(ec2), "the expired node is terminated"
    left = sc.addresses(ec2)
    assert not {ids[n] for n in EIP_RELEASED} & set(left), "expired managed Elastic IPs are released, attached or not"
    assert sc.addresses(eips["west"]) == {}
    assert {ids[n] for n in EIP_UNTOUCHED} == set(left), "everything else stays allocated"
    assert left[ids["on_live_node"]] == eips["live_node"], "an address on a live instance stays associated"
    assert left[ids["on_protected_node"]] == eips["protected_node"]
    assert left[ids["on_foreign_node"]] == eips["foreign_node"]
    assert {eips["live_node"], eips["protected_node"], eips["foreign_node"]} <= sc.live_instances(ec2)
    assert f"ok: us-east-1 elastic-ip {ids['attached']}: released" in result.stderr
    assert calls.index("terminate") < calls.index("disassociate") < calls.index("release attached"), (
        "the node goes first, then its address is disassociated and released")
    assert calls.count("disassociate") == 1 and len([c for c in calls if c.startswith("release")]) == 3, calls

    again = run_cli("reap", "--now", sc.NOW, "--yes")
    assert again.exit_code == 0 and "Nothing expired." in again.stdout, again.output
    assert sc.addresses(ec2) == left, "a second run is a no-op"


def test_elastic_ips_are_rechecked_right_before_release(eips):
    from llmdeploy.aws import reaper
    from llmdeploy.finetune import parse_now

    ids, ec2 = eips["ids"], eips["ec2"]
    now = parse_now(sc.NOW)
    found = reaper.scan(["us-east-1"], now=now, cat=world_cat(), concurrency=4)
    targets = [i for i in found.expired if i.kind == "elastic-ip"]
    assert {i.id for i in targets} == {ids["idle"], ids["attached"]}
    ec2.create_tags(Resources=[ids["idle"]], Tags=[{"Key": "llmdeploy:protect", "Value": "true"}])
    ec2.create_tags(Resources=[eips["node"]], Tags=[{"Key": "expires-at", "Value": sc.FUTURE}])  # the node was extended
    outcomes = {o.item.id: o for o in reaper.reap(targets, now=now, concurrency=4)}
    assert outcomes[ids["idle"]].ok and outcomes[ids["idle"]].message.startswith("left alone: tagged llmdeploy:protect")
    attached = outcomes[ids["attached"]]
    assert attached.ok and attached.message.startswith(f"left alone: attached to instance {eips['node']}"), attached.message
    assert sc.addresses(ec2)[ids["attached"]] == eips["node"], "still associated with the (now extended) node"
    assert ids["idle"] in sc.addresses(ec2)


def test_releasing_elastic_ips_twice_is_fine(eips):
    from llmdeploy.aws import reaper
    from llmdeploy.finetune import parse_now

    now = parse_now(sc.NOW)
    found = reaper.scan(["us-east-1"], now=now, cat=world_cat(), concurrency=1)
    first = {o.item.id: o for o in reaper.reap(found.expired, now=now, concurrency=1)}
    assert first[eips["ids"]["idle"]].message == "released" and all(o.ok for o in first.values())
    second = reaper.reap([i for i in found.expired if i.kind == "elastic-ip"], now=now, concurrency=4)
    assert {o.message for o in second} == {"already gone"}, "already released counts as done"


def test_elastic_ip_release_failure_is_reported_and_exits_1(eips, inject):
    inject("before-send.ec2.ReleaseAddress", lambda request, **_: _ec2_error("UnauthorizedOperation", 403))
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1", "--yes")
    assert result.exit_code == 1, "an expired address left allocated is still billed: exit 1"
    assert f"Failed: us-east-1 elastic-ip {eips['ids']['idle']}: UnauthorizedOperation" in result.stderr
    assert eips["ids"]["idle"] in sc.addresses(eips["ec2"])


def test_elastic_ip_listing_failure_is_reported(eips, inject):
    inject("before-send.ec2.DescribeAddresses", lambda request, **_: _ec2_error("UnauthorizedOperation", 403))
    result = run_cli("reap", "--now", sc.NOW, "--region", "us-east-1", "--yes")
    assert result.exit_code == 1, "a region whose addresses could not be listed may hold expired ones: exit 1"
    assert "us-east-1 elastic-ip: listing failed: UnauthorizedOperation" in result.stderr
    assert eips["node"] not in sc.live_instances(eips["ec2"]), "the other kinds are still reaped"
