"""Second deploys of an autoscaled endpoint: what is replaced when, in an order AWS accepts.

AWS ("Update endpoints that use auto scaling",
https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html): UpdateEndpoint fails when it
changes the instance type of a variant that is a registered scalable target. Delete the scaling policies,
deregister the target, update the endpoint, then register the target and put the policies again. A change of
model alone is allowed with the target registered.

The mocks record what the engine plans with (dependencies, per-input dependencies, deleteBeforeReplace);
``planned_steps`` replays Pulumi's delete-before-replace rule on them, as the engine's step generator does and
as Pulumi's own integration test "dependent replace" states it: when a resource is replaced delete-first, every
resource with an input that depends on it, where that input forces replacement, is deleted before it (dependents
first) and created again when it registers.
"""

from __future__ import annotations

from graphlib import TopologicalSorter

from .mocks import of_type, one, run, stack_config

TARGET = "aws:appautoscaling/target:Target"
POLICY = "aws:appautoscaling/policy:Policy"
MARKER = "random:index/randomId:RandomId"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
MODEL = "aws:sagemaker/model:Model"
# Inputs the provider replaces the resource for (ForceNew in the Terraform provider pulumi-aws bridges:
# aws_appautoscaling_target and aws_appautoscaling_policy), and RandomId's keepers (pulumi-random: "when
# changed, will trigger recreation of resource").
REPLACE_ON_CHANGE = {
    TARGET: {"resourceId", "scalableDimension", "serviceNamespace"},
    POLICY: {"resourceId", "scalableDimension", "serviceNamespace", "name"},
    MARKER: {"keepers", "byteLength"},
}


def _by_urn(mocks):
    return {r.urn: r for r in mocks.resources if r.custom}


def planned_steps(old, new) -> list[tuple[str, str]]:
    """(action, type) in the order the engine runs them when ``old`` becomes ``new`` (same program, other inputs).

    Resources register in dependency order (a registration waits for the resources it depends on); each one
    is created, replaced (create-before-delete unless deleteBeforeReplace) or updated per its own diff.
    """
    before, after = _by_urn(old), _by_urn(new)
    graph = {urn: {d for d in r.dependencies if d in after} for urn, r in after.items()}
    steps: list[tuple[str, str]] = []
    deleted_early: set[str] = set()
    replaced: set[str] = set()  # a replacement gets a new auto-name (and id, arn): inputs built from them change
    for urn in TopologicalSorter(graph).static_order():
        res, prev = after[urn], before.get(urn)
        changed = {k for k in set(res.inputs) | set(prev.inputs) if res.inputs.get(k) != prev.inputs.get(k)} if prev else set()
        changed |= {k for k, deps in res.property_dependencies.items() if replaced & set(deps)}
        forces = changed & REPLACE_ON_CHANGE.get(res.type, set()) or (
            {"*"} if res.type in (MODEL, CONFIG) and changed - {"tags"} else set())  # SageMaker Model/config: all ForceNew
        if urn in deleted_early:
            steps.append(("create", res.type))
            replaced.add(urn)
        elif forces and res.delete_before_replace:
            # Dependents whose replace-on-change inputs depend on this resource (transitively) go first.
            doomed, frontier = [], {urn}
            while frontier:
                nxt = set()
                for d_urn, d in before.items():
                    if d_urn in doomed:
                        continue
                    keys = {k for k, deps in d.property_dependencies.items() if frontier & set(deps)}
                    if keys & REPLACE_ON_CHANGE.get(d.type, set()):
                        doomed.append(d_urn)
                        nxt.add(d_urn)
                frontier = nxt
            for d_urn in reversed(doomed):  # dependents of dependents first
                steps.append(("delete", before[d_urn].type))
                deleted_early.add(d_urn)
            steps += [("delete", res.type), ("create", res.type)]
            replaced.add(urn)
        elif forces:
            steps.append(("replace", res.type))  # create the new one; the old is deleted at the end
            replaced.add(urn)
        elif changed:
            steps.append(("update", res.type))
    return steps


def _realtime(instance_type: str, label: str, **overrides):
    # One stack name for every run: URNs must match between the "before" and "after" programs.
    return run(stack_config("realtime", instance_type=instance_type, **overrides), stack="scaling-updates")


def test_instance_type_change_deregisters_scaling_before_the_endpoint_update_and_registers_it_after():
    old, new = _realtime("ml.g4dn.xlarge", "a"), _realtime("ml.g5.xlarge", "b")
    steps = planned_steps(old, new)
    at = {step: i for i, step in enumerate(steps)}
    assert at[("delete", POLICY)] < at[("delete", TARGET)] < at[("update", ENDPOINT)], (
        f"AWS rejects UpdateEndpoint while the variant whose instance type changes is a scalable target: "
        f"policies, then the target, must go first; steps: {steps}")
    assert at[("update", ENDPOINT)] < at[("create", TARGET)] < at[("create", POLICY)], (
        f"the target and its policy are registered again once the endpoint runs the new config; steps: {steps}")
    assert at[("replace", CONFIG)] < at[("update", ENDPOINT)], "the new endpoint config exists before the update"


def test_without_delete_before_replace_the_update_would_come_first():
    """The check is not vacuous: a plain replacement (create-before-delete) of the marker, which is what a
    target keyed on the config name alone would get, leaves the target registered through the update."""
    old, new = _realtime("ml.g4dn.xlarge", "a"), _realtime("ml.g5.xlarge", "b")
    for mocks in (old, new):
        one(mocks, MARKER).delete_before_replace = False
    steps = planned_steps(old, new)
    assert ("delete", TARGET) not in steps and steps.index(("update", ENDPOINT)) < steps.index(("replace", TARGET)), steps


def test_the_order_comes_from_the_dependencies_the_program_declares():
    mocks = _realtime("ml.g4dn.xlarge", "deps")
    marker = one(mocks, MARKER)
    assert marker.delete_before_replace, "the scaling generation must be replaced delete-first"
    assert marker.inputs["keepers"]["instance_type"] == "ml.g4dn.xlarge"
    target, endpoint = one(mocks, TARGET), one(mocks, ENDPOINT)
    assert marker.urn in target.property_dependencies["resourceId"], \
        "the target's resourceId (replace-on-change) must depend on the scaling generation"
    assert endpoint.urn in target.dependencies, "the target is registered after the endpoint (its variant must exist)"
    assert marker.urn in endpoint.dependencies, "the endpoint update must wait for the old target to be deregistered"
    for policy in of_type(mocks, POLICY):
        assert target.urn in policy.property_dependencies["resourceId"], "policies go (and come back) with their target"


def test_a_model_change_keeps_the_scalable_target_registered():
    old, new = _realtime("ml.g4dn.xlarge", "fp16", dtype="fp16"), _realtime("ml.g4dn.xlarge", "bf16", dtype="bf16")
    steps = planned_steps(old, new)
    assert ("replace", MODEL) in steps and ("replace", CONFIG) in steps and ("update", ENDPOINT) in steps, (
        f"a new artifact must reach the endpoint through a new Model and config (blue/green update); steps: {steps}")
    assert not [s for s in steps if s[1] in (TARGET, POLICY, MARKER)], (
        f"AWS allows a model change with the target registered: scaling must not be touched; steps: {steps}")


def test_async_honours_min_instances():
    one_up = run(stack_config("async", min_instances=1), stack="async-min1")
    target = one(one_up, TARGET)
    assert target.inputs["minCapacity"] == 1, "async with minInstances 1 keeps one instance (min capacity 1)"
    assert [p.inputs["policyType"] for p in of_type(one_up, POLICY)] == ["TargetTrackingScaling"], \
        "no scale-from-zero step policy when the floor is above zero"
    assert not _scale_from_zero_alarms(one_up), "no HasBacklogWithoutCapacity alarm when an instance always runs"
    zero = run(stack_config("async", min_instances=0), stack="async-min0")
    assert one(zero, TARGET).inputs["minCapacity"] == 0, "only minInstances 0 scales to zero"
    assert sorted(p.inputs["policyType"] for p in of_type(zero, POLICY)) == ["StepScaling", "TargetTrackingScaling"]
    (alarm,) = _scale_from_zero_alarms(zero)
    step = next(p for p in of_type(zero, POLICY) if p.inputs["policyType"] == "StepScaling")
    assert alarm.inputs["alarmActions"] == [step.outputs["arn"]], "the alarm adds the first instance (step policy)"


def _scale_from_zero_alarms(mocks) -> list:
    """The scaling alarm (AWS/SageMaker HasBacklogWithoutCapacity); the monitoring component's alarms only notify."""
    return [a for a in of_type(mocks, "aws:cloudwatch/metricAlarm:MetricAlarm")
            if a.inputs.get("metricName") == "HasBacklogWithoutCapacity"]
